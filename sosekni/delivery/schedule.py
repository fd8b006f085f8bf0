"""Which queued messages go now: Telegram's limits, priorities and digests, without I/O.

The sender keeps the queue of pending outbox rows in memory and asks `plan` what to send at
a moment `now`. Rules, in order:

* one call at a time per chat, and a chat's messages in order (an administrator's edits go
  before new cards in that chat: they show decisions on what is already on screen);
* a chat waits for its own pace only (`Pacer`): one chat never holds back another;
* when the overall budget is short, callback answers go first (they are not chat
  messages and do not use the budget; Telegram shows a spinner until they come), then
  messages to clients, then administrators' cards and edits;
* cards waiting for one administrator's chat leave together, at most `digest_max` a
  message; a lone card waits up to `digest_wait_s` for company; queued edits of one
  message collapse into one call that shows the latest state.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sosekni.delivery.policy import DeliveryPolicy

CARD_PURPOSES = frozenset({"notify", "remind"})
EDIT = "edit"
CALLBACK, CLIENT, ADMIN = 0, 1, 2  # priority tiers, most urgent first


@dataclass(frozen=True)
class Item:
    """What the planner needs to know of one pending outbox row."""

    id: int
    chat_id: int | None
    purpose: str
    due: float  # next_attempt_at, epoch seconds
    created: float  # created_at, epoch seconds
    target: int | None = None  # the message an edit changes

    @property
    def tier(self) -> int:
        if self.chat_id is None:
            return CALLBACK
        if self.purpose in CARD_PURPOSES or self.purpose == EDIT:
            return ADMIN
        return CLIENT

    @property
    def is_card(self) -> bool:
        return self.purpose in CARD_PURPOSES


@dataclass
class Unit:
    """One Bot API call to make: one row, a digest of cards, or coalesced edits."""

    tier: int
    chat_id: int | None
    items: list[Item]
    ticket: int | None = None  # the pacer's, for a chat message

    @property
    def kind(self) -> str:
        head = self.items[0]
        return "cards" if head.is_card else "edit" if head.purpose == EDIT else "message"


@dataclass
class Plan:
    units: list[Unit] = field(default_factory=list)
    wake_at: float = math.inf  # when something not ready now becomes ready


def is_group(chat_id: int) -> bool:
    return chat_id < 0


class Pacer:
    """Telegram's limits as state: what was sent when, and who must wait until when."""

    def __init__(self, policy: DeliveryPolicy) -> None:
        self.policy = policy
        # Chat messages count against the overall budget from the moment they leave until a
        # second after Telegram answered: under load a call can reach Telegram well after it
        # left, and it must still be in the window of the calls that arrive with it.
        self._flying: dict[int, float] = {}  # ticket → when it left
        self._answered: deque[float] = deque()  # when calls of the last second were answered
        self._tickets = 0
        self._buckets: dict[int, tuple[float, float]] = {}  # chat → (tokens, at)
        self._group_sent: dict[int, deque[float]] = defaultdict(deque)
        self._chat_paused: dict[int, float] = {}
        self._paused_until = 0.0
        self._floods: deque[tuple[float, int | None]] = deque()

    # -- reading

    def paused_until(self, now: float) -> float:
        return self._paused_until if self._paused_until > now else now

    def global_ready_at(self, now: float) -> float:
        """When the next chat message may leave (`math.inf`: when a call in flight ends)."""
        while self._answered and self._answered[0] <= now - 1.0:
            self._answered.popleft()
        used = len(self._flying) + len(self._answered)
        ready = now
        if used >= self.policy.messages_per_second:
            excess = used - self.policy.messages_per_second
            ready = self._answered[excess] + 1.0 if excess < len(self._answered) else math.inf
        return max(ready, self.paused_until(now))

    def chat_ready_at(self, chat_id: int, now: float) -> float:
        ready = max(now, self._chat_paused.get(chat_id, 0.0), self.paused_until(now))
        tokens = self._tokens(chat_id, now)
        if tokens < 1:
            ready = max(ready, now + (1 - tokens) / self.policy.chat_rate)
        if is_group(chat_id):
            window = self._group_sent.get(chat_id)
            if window is not None:
                while window and window[0] <= now - 60.0:
                    window.popleft()
                if len(window) >= self.policy.group_per_minute:
                    ready = max(ready, window[len(window) - self.policy.group_per_minute] + 60.0)
        return ready

    def _tokens(self, chat_id: int, now: float) -> float:
        tokens, at = self._buckets.get(chat_id, (float(self.policy.chat_burst), now))
        return min(float(self.policy.chat_burst), tokens + (now - at) * self.policy.chat_rate)

    # -- recording

    def take(self, chat_id: int, now: float) -> int:
        """One chat message leaves now; the ticket to hand to `answered` when it is done."""
        self._tickets += 1
        self._flying[self._tickets] = now
        self._buckets[chat_id] = (self._tokens(chat_id, now) - 1, now)
        if is_group(chat_id):
            self._group_sent[chat_id].append(now)
        if len(self._buckets) > 10_000:
            self._forget_idle(now)
        return self._tickets

    def cancel(self, ticket: int | None) -> None:
        """The message of `ticket` did not leave after all."""
        if ticket is not None:
            self._flying.pop(ticket, None)

    def answered(self, ticket: int | None, now: float) -> None:
        """The call of `ticket` is over (sent, refused or failed)."""
        if ticket is not None and self._flying.pop(ticket, None) is not None:
            self._answered.append(now)

    def refused(self, chat_id: int | None, seconds: float, now: float) -> None:
        """Telegram answered 429 with `retry_after`: that chat waits; a flood pauses all.

        A call without a chat (a callback answer), or 429s from `flood_chats` different
        chats within `flood_window_s`, mean the limit is the bot's, not one chat's.
        """
        until = now + seconds
        if chat_id is not None:
            self._chat_paused[chat_id] = max(self._chat_paused.get(chat_id, 0.0), until)
        self._floods.append((now, chat_id))
        while self._floods and self._floods[0][0] < now - self.policy.flood_window_s:
            self._floods.popleft()
        chats = {chat for _, chat in self._floods}
        if chat_id is None or len(chats) >= self.policy.flood_chats:
            self._paused_until = max(self._paused_until, until)

    def _forget_idle(self, now: float) -> None:
        full = self.policy.chat_burst / self.policy.chat_rate
        self._buckets = {c: b for c, b in self._buckets.items() if now - b[1] < full}
        self._chat_paused = {c: t for c, t in self._chat_paused.items() if t > now}
        for chat in [c for c, w in self._group_sent.items() if not w or w[-1] <= now - 60.0]:
            del self._group_sent[chat]


def plan(
    items: Iterable[Item],
    busy: set[int],
    pacer: Pacer,
    policy: DeliveryPolicy,
    now: float,
    slots: int,
) -> Plan:
    """The calls to start now (their chat messages already counted by `pacer`).

    `busy`: chats with a call in flight; `slots`: how many more calls may start.
    """
    result = Plan()

    def later(moment: float) -> None:
        result.wake_at = min(result.wake_at, moment)

    candidates: list[Unit] = []
    chats: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        if item.chat_id is None:
            if item.due <= now:
                candidates.append(Unit(CALLBACK, None, [item]))
            else:
                later(item.due)
        else:
            chats[item.chat_id].append(item)
    for chat_id, queued in chats.items():
        if chat_id in busy:
            continue  # its call's end wakes the sender
        queued.sort(key=lambda i: (i.purpose != EDIT, i.id))
        head = queued[0]
        if head.due > now:
            later(head.due)
            continue
        ready = pacer.chat_ready_at(chat_id, now)
        if ready > now:
            later(ready)
            continue
        if head.purpose == EDIT:
            group = [i for i in queued if i.purpose == EDIT and i.target == head.target]
        elif head.is_card:
            cards = [i for i in queued if i.is_card and i.due <= now]
            company_by = head.created + policy.digest_wait_s
            if len(cards) < policy.digest_max and now < company_by:
                later(company_by)
                continue
            group = cards[: policy.digest_max]
        else:
            group = [head]
        candidates.append(Unit(head.tier, chat_id, group))

    paused = pacer.paused_until(now)
    if paused > now:
        later(paused)
        return result
    candidates.sort(key=lambda u: (u.tier, u.items[0].id))
    for unit in candidates:
        if len(result.units) >= slots:
            break  # a call's end wakes the sender
        if unit.chat_id is not None:
            ready = pacer.global_ready_at(now)
            if ready > now:
                later(ready)
                break  # everything after this one is a chat message of the same or lower tier
            unit.ticket = pacer.take(unit.chat_id, now)
        result.units.append(unit)
    return result
