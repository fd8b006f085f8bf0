"""The one backoff formula every retry loop uses (delivery, start-up, polling, the loops)."""

from __future__ import annotations

from sosekni.delivery.policy import DEFAULT_POLICY, Backoff, exponential


def test_waits_double_from_the_base_up_to_the_cap_and_start_again_after_a_success() -> None:
    backoff = Backoff(0.5, 10)
    assert [backoff.next() for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff.failures == 7
    backoff.reset()
    assert backoff.next() == 0.5


def test_jitter_spreads_a_quarter_either_way_and_never_passes_the_cap() -> None:
    assert exponential(3, 1, 300, jitter=0.0) == 3.0
    assert exponential(3, 1, 300, jitter=0.5) == 4.0
    assert exponential(3, 1, 300, jitter=0.999) < 5.0
    assert exponential(20, 1, 300, jitter=0.999) == 300


def test_telegram_calls_back_off_1_2_4_8_seconds_up_to_five_minutes() -> None:
    waits = [DEFAULT_POLICY.backoff(n, jitter=0.5) for n in (1, 2, 3, 4, 9, 10)]
    assert waits == [1, 2, 4, 8, 256, 300]
