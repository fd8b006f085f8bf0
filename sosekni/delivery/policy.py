"""How fast and how patiently the bot delivers: every pace, backoff and lease in one object.

The loops take a `DeliveryPolicy` instead of reading module constants, so tests and the
benchmark change timing by passing another policy, never by patching code. The defaults
are Telegram's published limits: about 30 messages a second overall, about one a second in
one chat (with a short burst), 20 a minute in a group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Protocol


class Clock(Protocol):
    """Seconds since the epoch; the system clock in production, a fake one in tests."""

    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()


def exponential(attempts: int, base_s: float, cap_s: float, jitter: float | None = None) -> float:
    """The one backoff formula: `base_s` · 2^(attempts − 1), at most `cap_s`; with `jitter` (a
    number in [0, 1): random in production, fixed in tests) spread ±25 % around it."""
    delay = min(cap_s, base_s * 2 ** max(attempts - 1, 0))
    return delay if jitter is None else min(cap_s, delay * (0.75 + jitter / 2))


class Backoff:
    """Growing waits for a loop that retries the same step (1st wait `base_s`, then twice the
    last, at most `cap_s`) until `reset` after a success."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.failures = 0

    def next(self) -> float:
        """Count a failure and return how long to wait before trying again."""
        self.failures += 1
        return exponential(self.failures, self.base_s, self.cap_s)

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class DeliveryPolicy:
    # Telegram's limits, kept by the outbox sender for the whole service.
    messages_per_second: int = 30  # chat messages (sent or edited) in any one-second window
    chat_rate: float = 1.0  # messages a second in one chat, once its burst is spent
    chat_burst: int = 3
    group_per_minute: int = 20  # in any 60-second window, in one group chat
    # Administrators' cards: several waiting for one chat go out as one digest.
    digest_max: int = 10  # requests in one digest message
    digest_wait_s: float = 0.5  # a lone card waits this long for company before it goes
    # Retries.
    backoff_base_s: float = 1.0
    max_backoff_s: float = 300.0
    # Giving up: a message whose call keeps failing is marked `failed` after this many
    # attempts (with the backoff above, about an hour of trying) or once it is this old,
    # whichever comes first, so the messages queued after it in its chat go on. A 429 is
    # Telegram setting the pace, not the message failing: it does not count as an attempt.
    max_attempts: int = 20
    max_age_s: float = 24 * 3600.0
    # 429s from this many chats within `flood_window_s` mean a bot-wide limit: pause all.
    flood_chats: int = 3
    flood_window_s: float = 1.0
    # Leases, polling and concurrency.
    outbox_lease_s: float = 60.0  # a claimed message is another sender's after this long
    inbox_lease_s: float = 60.0
    lease_retry_s: float = 2.0  # how often a worker that does not send tries to take over
    lease_check_s: float = 0.25  # how often the sender makes sure it still holds the lease
    pump_interval_s: float = 0.01  # at least this long between two rounds of the sender
    poll_interval_s: float = 0.5  # a full look at the queue, even without a wakeup
    max_in_flight: int = 64  # Bot API calls at once (the HTTP pool's size)
    inbox_max_attempts: int = 5
    # A failing update is retried within the minute: its chat's later updates wait behind it.
    inbox_max_backoff_s: float = 60.0
    inbox_batch: int = 32

    def backoff(self, attempts: int, jitter: float = 0.5) -> float:
        """Seconds before the next try after `attempts` tries: 1, 2, 4 … with ±25 % jitter.

        `jitter` is a number in [0, 1) (random in production, fixed in tests).
        """
        return exponential(attempts, self.backoff_base_s, self.max_backoff_s, jitter)

    def exhausted(self, attempts: int, age_s: float) -> bool:
        """True when a message that has just failed `attempts` times and was queued `age_s`
        seconds ago is to be given up rather than tried again."""
        return attempts >= self.max_attempts or age_s >= self.max_age_s

    def lifted(self) -> DeliveryPolicy:
        """Telegram's limits lifted (for the benchmark: the pipeline, not the policy)."""
        return replace(
            self,
            messages_per_second=10**9,
            chat_rate=1e9,
            chat_burst=10**9,
            group_per_minute=10**9,
            digest_wait_s=0.0,
        )

    def scaled(self, factor: float) -> DeliveryPolicy:
        """Retry backoff (inbox and outbox) `factor` times as long, everything else as is.

        For tests of real processes: they watch the backoff grow without waiting through
        1 + 2 + 4 + 8 seconds. Telegram's own numbers (its limits, `retry_after`) and the
        leases are not the bot's to shorten, so they stay.
        """
        if factor <= 0:
            raise ValueError(f"scale factor must be positive, not {factor}")
        return replace(
            self,
            backoff_base_s=self.backoff_base_s * factor,
            max_backoff_s=self.max_backoff_s * factor,
            inbox_max_backoff_s=self.inbox_max_backoff_s * factor,
        )


DEFAULT_POLICY = DeliveryPolicy()
