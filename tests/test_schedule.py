"""The sender's pacing rules as plain functions on a fake clock: no server, no sleeping.

`simulate` plays the sender: at every tick it asks `plan` what may go and makes each call
take `call_s` seconds (the chat is busy meanwhile). The assertions read the resulting
timeline of sends.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import replace

import pytest

from sosekni.delivery.policy import DeliveryPolicy
from sosekni.delivery.schedule import CALLBACK, Item, Pacer, Unit, plan

POLICY = DeliveryPolicy()
T0 = 1_800_000_000.0
ADMIN_A, ADMIN_B, GROUP = 7001, 7002, -100123
_ids = itertools.count(1)


def item(chat: int | None, purpose: str = "reply", at: float = T0, **kw: object) -> Item:
    return Item(id=next(_ids), chat_id=chat, purpose=purpose, due=at, created=at, **kw)


def simulate(
    items: list[Item],
    *,
    until: float,
    policy: DeliveryPolicy = POLICY,
    tick: float = 0.01,
    call_s: float = 0.0,
    pacer: Pacer | None = None,
    start: float = T0,
) -> list[tuple[float, Unit]]:
    """Every call `plan` starts between `start` and `until`, with its start time."""
    pacer = pacer or Pacer(policy)
    queue = {i.id: i for i in items}
    flying: list[tuple[float, Unit]] = []  # calls in flight, with when they end
    timeline: list[tuple[float, Unit]] = []
    now = start
    while now < until and (queue or flying):
        for ends, unit in [f for f in flying if f[0] <= now]:
            flying.remove((ends, unit))
            pacer.answered(unit.ticket, ends)
        visible = [i for i in queue.values() if i.created <= now]
        busy = {u.chat_id for _, u in flying if u.chat_id is not None}
        for unit in plan(visible, busy, pacer, policy, now, 64).units:
            timeline.append((now, unit))
            for i in unit.items:
                del queue[i.id]
            flying.append((now + call_s, unit))
        now = round(now + tick, 6)
    return timeline


def most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(
        (sum(1 for t in times[i:] if t < s + window) for i, s in enumerate(times)), default=0
    )


def chat_messages(timeline: list[tuple[float, Unit]]) -> list[float]:
    return [t for t, u in timeline if u.chat_id is not None]


# ----------------------------------------------------------------------------- limits


def test_never_more_than_thirty_chat_messages_in_any_second_and_the_budget_is_used() -> None:
    items = [item(10_000 + n) for n in range(300)]  # 300 clients, one message each
    timeline = simulate(items, until=T0 + 20)
    sent = chat_messages(timeline)
    assert len(sent) == 300
    assert most_in_window(sent, 1.0) == 30
    # Draining a backlog uses the whole budget: 300 messages in just over 9 seconds.
    assert max(sent) - T0 < 10.0


@pytest.mark.parametrize("call_s", [0.05, 0.4, 0.9])
def test_slow_calls_still_reach_telegram_at_most_thirty_in_any_second(call_s: float) -> None:
    # Under load a call can reach Telegram up to its answer after it left: count it until then.
    items = [item(20_000 + n) for n in range(200)]
    timeline = simulate(items, until=T0 + 60, call_s=call_s)
    rng = random.Random(call_s)
    for arrival in (lambda: 0.0, lambda: call_s, lambda: rng.random() * call_s):
        # each call reaches Telegram as it leaves, just before its answer, or in between
        assert most_in_window([t + arrival() for t, _ in timeline], 1.0) <= 30
    assert max(t for t, _ in timeline) - T0 < 200 / 30 * (1 + call_s) + 1


def test_a_private_chat_gets_a_short_burst_then_one_a_second() -> None:
    items = [item(ADMIN_A) for _ in range(10)]
    sent = chat_messages(simulate(items, until=T0 + 30))
    assert len(sent) == 10
    assert sent[2] - T0 <= 0.03  # the burst: three in a row, each as soon as the last ended
    gaps = [b - a for a, b in itertools.pairwise(sent[2:])]
    assert all(g == pytest.approx(1.0, abs=0.03) for g in gaps)


def test_a_group_chat_gets_at_most_twenty_a_minute() -> None:
    items = [item(GROUP) for _ in range(30)]
    sent = chat_messages(simulate(items, until=T0 + 200, tick=0.05))
    assert len(sent) == 30
    assert most_in_window(sent, 60.0) == 20
    assert most_in_window(sent, 1.0) <= 3


def test_one_chat_in_flight_at_a_time_and_in_order() -> None:
    items = [item(ADMIN_A) for _ in range(3)]
    timeline = simulate(items, until=T0 + 5, call_s=0.2)
    assert [t for t, _ in timeline] == pytest.approx([T0, T0 + 0.2, T0 + 0.4])
    assert [u.items[0].id for _, u in timeline] == sorted(i.id for i in items)


def test_one_chats_pace_never_delays_another_chat() -> None:
    slow = [item(ADMIN_A) for _ in range(20)]  # paced at 1/s for ~17 s
    late = item(4242, at=T0 + 2.5)
    timeline = simulate([*slow, late], until=T0 + 30)
    (when,) = [t for t, u in timeline if u.chat_id == 4242]
    assert when == pytest.approx(T0 + 2.5)


def test_a_slow_call_in_one_chat_does_not_hold_back_other_chats() -> None:
    items = [item(ADMIN_A), item(ADMIN_A), *[item(9000 + n) for n in range(5)]]
    timeline = simulate(items, until=T0 + 20, call_s=5.0)
    others = [t for t, u in timeline if u.chat_id != ADMIN_A]
    assert others == [T0] * 5


# ----------------------------------------------------------------------------- priorities


def test_callback_answers_first_then_clients_then_administrators() -> None:
    # A budget already spent this second: what goes first when it frees?
    pacer = Pacer(POLICY)
    for n in range(30):
        pacer.answered(pacer.take(50_000 + n, T0), T0)
    admin_cards = [item(ADMIN_A + n, "edit", target=1) for n in range(40)]  # oldest ids
    clients = [item(60_000 + n, "confirm") for n in range(40)]
    callbacks = [item(None, "callback") for _ in range(5)]
    timeline = simulate([*admin_cards, *clients, *callbacks], until=T0 + 4, pacer=pacer)
    first = [(t, u) for t, u in timeline if t == T0]
    assert [u.tier for _, u in first] == [CALLBACK] * 5  # not chat messages: no budget needed
    order = [u.items[0].purpose for t, u in timeline if u.chat_id is not None]
    assert order[:40] == ["confirm"] * 40
    assert order[40:] == ["edit"] * 40


def test_callback_answers_still_wait_for_a_bot_wide_pause() -> None:
    pacer = Pacer(POLICY)
    pacer.refused(None, 3.0, T0)
    timeline = simulate([item(None, "callback")], until=T0 + 10, pacer=pacer)
    assert [t for t, _ in timeline] == [pytest.approx(T0 + 3.0)]


# ----------------------------------------------------------------------------- retry_after


def test_retry_after_pauses_that_chat_only() -> None:
    pacer = Pacer(POLICY)
    pacer.refused(ADMIN_A, 5.0, T0)
    timeline = simulate([item(ADMIN_A), item(ADMIN_B)], until=T0 + 10, pacer=pacer)
    when = {u.chat_id: t for t, u in timeline}
    assert when[ADMIN_B] == T0
    assert when[ADMIN_A] == pytest.approx(T0 + 5.0)


def test_retry_after_from_several_chats_at_once_pauses_everything() -> None:
    pacer = Pacer(POLICY)
    for n in range(POLICY.flood_chats):
        pacer.refused(100 + n, 4.0, T0 + n * 0.1)
    timeline = simulate([item(ADMIN_B), item(None, "callback")], until=T0 + 10, pacer=pacer)
    assert [t for t, _ in timeline] == [pytest.approx(T0 + 4.2)] * 2


def test_a_row_in_backoff_waits_and_keeps_its_chat_in_order() -> None:
    retried = item(ADMIN_A, at=T0 + 4.0)  # next_attempt_at after a failure
    retried = replace(retried, created=T0)
    after = item(ADMIN_A)
    timeline = simulate([retried, after], until=T0 + 10)
    assert [(t, u.items[0].id) for t, u in timeline] == [
        (pytest.approx(T0 + 4.0), retried.id),
        (pytest.approx(T0 + 4.0), after.id),
    ]


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    assert [POLICY.backoff(n, jitter=0.5) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert POLICY.backoff(1, jitter=0.0) == 0.75
    assert POLICY.backoff(1, jitter=0.999) == pytest.approx(1.25, abs=0.001)
    assert POLICY.backoff(30, jitter=0.999) == POLICY.max_backoff_s


# ----------------------------------------------------------------------------- digests


def cards_for(chat: int, count: int, spread: float = 0.0) -> list[Item]:
    return [item(chat, "notify", at=T0 + spread * n / max(count, 1)) for n in range(count)]


def test_a_lone_card_waits_briefly_for_company_then_goes_alone() -> None:
    (card,) = cards_for(ADMIN_A, 1)
    timeline = simulate([card], until=T0 + 5)
    assert [(t, len(u.items)) for t, u in timeline] == [(pytest.approx(T0 + 0.5), 1)]


def test_sixty_cards_arriving_together_go_as_six_digests_within_three_seconds() -> None:
    items = cards_for(ADMIN_A, 60, spread=0.6) + cards_for(ADMIN_B, 60, spread=0.6)
    last_stored = max(i.created for i in items)
    timeline = simulate(items, until=T0 + 20)
    for admin in (ADMIN_A, ADMIN_B):
        units = [(t, u) for t, u in timeline if u.chat_id == admin]
        assert [len(u.items) for _, u in units] == [10] * 6
        assert units[-1][0] - last_stored <= 3.0
        shown = Counter(i.id for _, u in units for i in u.items)
        assert len(shown) == 60 and set(shown.values()) == {1}


def test_digests_carry_at_most_digest_max_cards() -> None:
    policy = replace(POLICY, digest_max=4)
    timeline = simulate(cards_for(ADMIN_A, 9), until=T0 + 10, policy=policy)
    assert [len(u.items) for _, u in timeline] == [4, 4, 1]


def test_queued_edits_of_one_message_collapse_and_go_before_new_cards() -> None:
    card = item(ADMIN_A, "notify")
    edits = [item(ADMIN_A, "edit", target=77) for _ in range(3)]
    other = item(ADMIN_A, "edit", target=78)
    timeline = simulate([card, *edits, other], until=T0 + 10)
    units = [u for _, u in timeline]
    assert [(u.kind, [i.id for i in u.items]) for u in units] == [
        ("edit", [e.id for e in edits]),
        ("edit", [other.id]),
        ("cards", [card.id]),
    ]


def test_a_busy_chat_is_not_planned() -> None:
    pacer = Pacer(POLICY)
    queued = [item(ADMIN_A), item(ADMIN_B)]
    units = plan(queued, {ADMIN_A}, pacer, POLICY, T0, 64).units
    assert [u.chat_id for u in units] == [ADMIN_B]


def test_no_more_calls_than_free_slots() -> None:
    queued = [item(None, "callback") for _ in range(10)]
    assert len(plan(queued, set(), Pacer(POLICY), POLICY, T0, 3).units) == 3
