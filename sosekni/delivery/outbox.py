"""The outbox sender: delivers queued Bot API calls continuously, within Telegram's limits.

One process per database sends (`SenderLease`). It keeps the pending rows in memory
(re-read in full every `poll_interval_s`, new rows as soon as they are announced), asks
`schedule.plan` what may go now, claims exactly those rows with a token and a lease, and
makes each call as its own task: a chat waiting for its pace, or a slow call, never holds
back another chat. A call that keeps failing is given up after `DeliveryPolicy.max_attempts`
attempts or `max_age_s` (marked `failed`), so the messages behind it in its chat go on; a
group that became a supergroup (`ChatMigrated`) has its queue moved there. A 403 from a
client's chat is not retried: the chat is marked blocked and its messages are held
(`services.blocked`) until the client writes again. What a card or an edit says is rendered
by `services.cards` when it leaves; what a delivery means for the workflow (the
administrator's copy) is recorded there too. Only a call in flight when the process dies
can be sent twice; every other row is either sent and marked or not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from sosekni.db import as_utc, is_unavailable, sql, transaction
from sosekni.delivery import BackgroundLoop
from sosekni.delivery.botapi import BotApi
from sosekni.delivery.lease import SenderLease
from sosekni.delivery.policy import (
    DEFAULT_POLICY,
    Backoff,
    Clock,
    DeliveryPolicy,
    SystemClock,
)
from sosekni.delivery.schedule import EDIT, Item, Pacer, Unit, plan
from sosekni.metrics import metrics
from sosekni.services import blocked, cards, invites
from sosekni.services.cards import Call
from sosekni.services.work import OutboxWakeup, outbox_ready

log = logging.getLogger(__name__)

DROPPED = "dropped"  # a card whose every request was decided before it could leave


def retry_seconds(exc: RetryAfter) -> float:
    """Telegram's `retry_after` in seconds (PTB gives an int or a timedelta)."""
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _moment(value: Any) -> float:
    return as_utc(value).timestamp()


def item_of(row: dict[str, Any]) -> Item:
    """The planner's view of an outbox row."""
    target = None
    if row["purpose"] == EDIT and row.get("payload"):
        message_id = json.loads(row["payload"]).get("message_id")
        target = message_id if isinstance(message_id, int) else None
    return Item(
        id=int(row["id"]),
        chat_id=None if row["chat_id"] is None else int(row["chat_id"]),
        purpose=row["purpose"] or "",
        due=_moment(row["next_attempt_at"]),
        created=_moment(row["created_at"]),
        target=target,
    )


def _ids(rows: list[dict[str, Any]]) -> tuple[str, list[int]]:
    ids = [int(r["id"]) for r in rows]
    return ", ".join("{}" for _ in ids), ids


def _names(rows: list[dict[str, Any]]) -> str:
    """Row ids for a log line: `12`, or `12,13,14` for a digest."""
    return ",".join(str(r["id"]) for r in rows)


class OutboxSender(BackgroundLoop):
    """Delivers queued messages, in the one process that holds the sender lease."""

    name = "outbox"

    def __init__(
        self,
        base_url: str,
        admin_language: str,
        lease: SenderLease,
        policy: DeliveryPolicy = DEFAULT_POLICY,
        clock: Clock | None = None,
        ready: asyncio.Event | None = None,
        jitter: Callable[[], float] = random.random,
        invite_ttl_hours: float = 72.0,
    ) -> None:
        super().__init__(outbox_ready, ready)
        self.wakeup: OutboxWakeup = outbox_ready  # carries the ids announced since the last look
        self.api = BotApi(base_url)
        self.admin_language = admin_language
        self.lease = lease
        self.policy = policy
        self.poll_interval_s = policy.poll_interval_s
        self.clock: Clock = clock or SystemClock()
        self.jitter = jitter
        self.invite_ttl_hours = invite_ttl_hours  # for a link renewed after a membership check
        self.pacer = Pacer(policy)
        self.leading = False
        self.queue: dict[int, Item] = {}  # pending rows, by id
        self.busy: set[int] = set()  # chats with a call in flight
        self.tasks: set[asyncio.Task[None]] = set()
        self._next_try = -math.inf
        self._last_full = -math.inf
        self._wake_at = math.inf
        self._held_until = -math.inf
        self._last_pump = -math.inf

    # -- the lease

    async def _lead(self) -> bool:
        """Hold the sender lease, or try to take it at most every `lease_retry_s`."""
        if self.leading and self.clock.time() < self._held_until:
            return True
        if self.leading and await self.lease.still_held():
            self._held_until = self.clock.time() + self.policy.lease_check_s
            return True
        if self.leading:
            self.log.warning("outbox: lost the sender lease")
            self.leading = False
        now = self.clock.time()
        if now < self._next_try:
            return False
        self._next_try = now + self.policy.lease_retry_s
        if not await self.lease.acquire():
            return False
        # The previous sender is gone: what it held is ours to send (only its in-flight
        # call may have reached Telegram already).
        taken = await sql(
            "UPDATE outbox_message SET status = 'pending', claim_token = NULL "
            "WHERE status = 'sending' RETURNING id"
        )
        self.log.info("outbox: this worker sends now (%d message(s) taken over)", len(taken))
        self.leading = True
        self.queue.clear()
        self._last_full = -math.inf
        return True

    # -- the loop

    def idle_timeout(self) -> float:
        wait = self._wake_at - self.clock.time()
        return max(0.001, min(self.policy.poll_interval_s, wait))

    async def run_once(self) -> int:
        if not await self._lead():
            self._wake_at = math.inf
            return 0
        # Calls ending in quick succession are planned for together, not one round each.
        pause = self._last_pump + self.policy.pump_interval_s - self.clock.time()
        if pause > 0:
            await asyncio.sleep(pause)
        self._last_pump = self.clock.time()
        return await self.pump()

    async def pump(self) -> int:
        """Read what was queued, start every call that may go now; how many started."""
        await self.look(self.clock.time())
        now = self.clock.time()  # after the look: the pacer must not plan in the past
        slots = self.policy.max_in_flight - len(self.tasks)
        planned = plan(self.queue.values(), self.busy, self.pacer, self.policy, now, slots)
        self._wake_at = planned.wake_at
        if planned.units:
            await self._start(planned.units, now)
        return len(planned.units)

    async def look(self, now: float, *, full: bool = False) -> None:
        """Bring the in-memory queue up to date: every pending row every `poll_interval_s`;
        in between, the rows from the lowest id announced since the last look (announced
        after their commit, so none is skipped)."""
        columns = (
            "SELECT id, chat_id, purpose, next_attempt_at, created_at, "
            "CASE WHEN purpose = 'edit' THEN payload END AS payload FROM outbox_message "
        )
        if full or now - self._last_full >= self.policy.poll_interval_s:
            self.wakeup.take_floor()
            rows = await sql(columns + "WHERE status = 'pending'")
            self.queue = {int(r["id"]): item_of(r) for r in rows}
            self._last_full = now
            return
        floor = self.wakeup.take_floor()
        if floor is None:
            return
        for row in await sql(columns + "WHERE status = 'pending' AND id >= {}", floor):
            self.queue[int(row["id"])] = item_of(row)

    async def _start(self, units: list[Unit], now: float) -> None:
        wanted = [item.id for unit in units for item in unit.items]
        token = str(uuid.uuid4())
        marks = ", ".join("{}" for _ in wanted)
        try:
            claimed = await sql(
                "UPDATE outbox_message SET status = 'sending', claim_token = {}, "
                "locked_until = {}, attempts = attempts + 1 "
                f"WHERE id IN ({marks}) AND status = 'pending' AND NOT EXISTS (SELECT 1 FROM "
                "blocked_chat b WHERE b.chat_id = outbox_message.chat_id) RETURNING *",
                token,
                self._at(now + self.policy.outbox_lease_s),
                *wanted,
            )
            if len(claimed) < len(wanted):  # changed meanwhile, or for a blocked client
                taken = {int(r["id"]) for r in claimed}
                await blocked.hold([i for i in wanted if i not in taken])
        except BaseException:
            for unit in units:
                self.pacer.cancel(unit.ticket)
            raise
        by_id = {int(r["id"]): r for r in claimed}
        for unit in units:
            rows = [by_id[item.id] for item in unit.items if item.id in by_id]
            for item in unit.items:
                self.queue.pop(item.id, None)
            if not rows:
                self.pacer.cancel(unit.ticket)
                continue  # changed meanwhile (an operator, another sender): the next look
            if unit.chat_id is not None:
                self.busy.add(unit.chat_id)
            task = asyncio.create_task(self._deliver(unit, rows), name=f"outbox-{rows[0]['id']}")
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.wakeup.set()

    async def finish(self) -> None:
        """Stopping: let the calls in flight end and be marked (a few seconds at most)."""
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=5)
            for task in late:
                task.cancel()

    # -- one call

    async def _deliver(self, unit: Unit, rows: list[dict[str, Any]]) -> None:
        try:
            call = await self._persist(lambda: self._compose(unit, rows))
            if call is None:
                self.pacer.cancel(unit.ticket)  # it never left
                await self._persist(lambda: self._finish(rows, DROPPED, "nothing left to act on"))
                return
            payload = dict(call.payload)
            if unit.chat_id is not None:
                payload["chat_id"] = unit.chat_id
            try:
                outcome, detail = await self._call(call.method, payload, unit, rows)
            finally:
                self.pacer.answered(unit.ticket, self.clock.time())
            if outcome == "migrated":
                old = unit.chat_id if unit.chat_id is not None else payload.get("chat_id")
                if isinstance(old, int) and old != detail:
                    await self._persist(lambda: self._migrate(rows, old, detail))
                    return
                reason = f"ChatMigrated: to {detail}, from a chat it cannot move"
                outcome, detail = "retry", (reason, self._backoff(rows))
            if outcome == "sent":
                await self._persist(lambda: self._sent(unit, rows, call, detail))
            elif outcome == "blocked" and unit.chat_id is not None and unit.chat_id > 0:
                await self._persist(lambda: self._blocked(unit.chat_id, rows, detail))
            elif outcome in ("failed", "blocked"):
                await self._persist(lambda: self._fail(rows, detail))
            else:
                await self._persist(lambda: self._retry(rows, *detail))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: put the rows back for a later try
            self.pacer.answered(unit.ticket, self.clock.time())
            log.exception("outbox %s: unexpected error", _names(rows))
            with contextlib.suppress(Exception):
                await self._retry(rows, f"{type(exc).__name__}: {exc}", self._backoff(rows))
        finally:
            if unit.chat_id is not None:
                self.busy.discard(unit.chat_id)

    async def _compose(self, unit: Unit, rows: list[dict[str, Any]]) -> Call | None:
        if unit.kind == "cards":
            return await cards.compose_cards(rows, self.admin_language)
        target = unit.items[0].target
        if unit.kind == "edit" and target is not None and unit.chat_id is not None:
            return await cards.compose_edit(unit.chat_id, target, rows, self.admin_language)
        (row,) = rows
        return Call(row["method"], json.loads(row["payload"]))

    async def _call(
        self, method: str, payload: dict[str, Any], unit: Unit, rows: list[dict[str, Any]]
    ) -> tuple[str, Any]:
        """Make the call: ("sent", result), ("failed", reason), ("migrated", new chat id) or
        ("retry", (reason, delay[, counted]))."""
        try:
            return "sent", await self.api.call(method, payload)
        except RetryAfter as exc:
            delay = retry_seconds(exc)
            self.pacer.refused(unit.chat_id, delay, self.clock.time())
            return "retry", (f"RetryAfter: {delay:g}s", delay, False)
        except ChatMigrated as exc:
            return "migrated", int(exc.new_chat_id)
        except BadRequest as exc:
            if "message is not modified" in exc.message.lower():
                return "sent", None
            return "failed", f"BadRequest: {exc.message}"
        except Forbidden as exc:
            return "blocked", f"Forbidden: {exc.message}"
        except TelegramError as exc:
            reason = f"{type(exc).__name__}: {exc.message}"
        except Exception as exc:  # anything else is treated as transient: never drop a message
            reason = f"{type(exc).__name__}: {exc}"
        return "retry", (reason, self._backoff(rows))

    def _backoff(self, rows: list[dict[str, Any]]) -> float:
        return self.policy.backoff(max(int(r["attempts"]) for r in rows), self.jitter())

    async def _persist(self, write: Callable[[], Awaitable[Any]]) -> Any:
        """Run a database step; while the database is unreachable, keep trying (the call it
        records was made: giving up would send it again)."""
        backoff = Backoff(0.25, 10)
        while True:
            try:
                return await write()
            except Exception as exc:
                if not is_unavailable(exc) or self.stopping.is_set():
                    raise
                log.warning("outbox: database unavailable (%s); retrying", exc)
                await asyncio.sleep(backoff.next())

    # -- recording the outcome

    def _at(self, moment: float) -> datetime:
        return datetime.fromtimestamp(moment, UTC)

    async def _sent(self, unit: Unit, rows: list[dict[str, Any]], call: Call, result: Any) -> None:
        if rows[0]["purpose"] == invites.CHECK:
            await self._checked(rows, "sent", result)
            return
        if rows[0]["purpose"] in invites.PURPOSES:
            async with transaction():  # the mark, the link and the message showing it together
                work = None
                if await self._finish(rows, "sent"):
                    work = await invites.created(rows[0], result, self.admin_language)
            if work is not None:
                work.announce()
            return
        if unit.kind != "cards" or not isinstance(result, dict):
            await self._finish(rows, "sent")  # one statement: no BEGIN/COMMIT
            return
        async with transaction():  # the mark and the administrators' copies together
            await self._finish(rows, "sent")
            work = await cards.delivered(rows, call, int(result["message_id"]), self.admin_language)
        if work is not None:
            work.announce()

    async def _fail(self, rows: list[dict[str, Any]], reason: str, uncount: int = 0) -> None:
        """Mark the rows failed for good; a refused invite link still lets its message go
        (without the link), in the same transaction."""
        purpose = rows[0]["purpose"]
        if purpose == invites.CHECK:  # refused: renew the link as if nobody had asked
            await self._checked(rows, "failed", None, reason, uncount)
            return
        if purpose not in invites.PURPOSES and purpose != invites.DECISION:
            await self._finish(rows, "failed", reason, uncount)
            return
        async with transaction():
            work = None
            if not await self._finish(rows, "failed", reason, uncount):
                pass
            elif purpose == invites.DECISION:
                work = await invites.not_told(rows[0], reason, self.admin_language)
            else:
                work = await invites.refused(rows[0], reason, self.admin_language)
        if work is not None:
            work.announce()

    async def _checked(
        self,
        rows: list[dict[str, Any]],
        status: str,
        result: Any,
        reason: str = "",
        uncount: int = 0,
    ) -> None:
        """A membership check's mark and what it leads to (a line, or a renewed link) in
        one transaction."""
        async with transaction():
            work = None
            if await self._finish(rows, status, reason, uncount):
                work = await invites.checked(
                    rows[0], result, self.admin_language, self.invite_ttl_hours
                )
        if work is not None:
            work.announce()

    async def _blocked(self, chat_id: int, rows: list[dict[str, Any]], reason: str) -> None:
        """A 403 from a private chat: this message is not retried; a client's chat is
        marked blocked and what is queued for it held, with the cards' edit, at once."""
        request_id = next((r["request_id"] for r in rows if r["request_id"] is not None), None)
        async with transaction():
            await self._finish(rows, "failed", reason)
            work = None
            if rows[0]["purpose"] == invites.DECISION:  # someone who asked to join, too late
                work = await invites.not_told(rows[0], reason, self.admin_language)
            if work is None:
                work = await blocked.client_blocked(
                    chat_id, None if request_id is None else int(request_id), self.admin_language
                )
        if work is not None:
            work.announce()

    async def _finish(
        self, rows: list[dict[str, Any]], status: str, reason: str = "", uncount: int = 0
    ) -> list[dict[str, Any]]:
        """Mark the rows `status` (`uncount`: attempts to take back, a 429's claim)."""
        marks, ids = _ids(rows)
        if status == "failed":
            log.error(
                "outbox %s (%s to %s) failed for good: %s",
                _names(rows),
                rows[0]["method"],
                rows[0]["chat_id"],
                reason,
            )
        sent_at = self._at(self.clock.time()) if status == "sent" else None
        marked = await sql(
            "UPDATE outbox_message SET status = {}, sent_at = {}, claim_token = NULL, "
            f"last_error = {{}}, attempts = attempts - {{}} "
            f"WHERE id IN ({marks}) AND claim_token = {{}} RETURNING id",
            status,
            sent_at,
            reason[:2000] or None,
            uncount,
            *ids,
            rows[0]["claim_token"],
        )
        if marked and status in ("sent", "failed"):
            metrics.inc(f"messages_{status}", len(marked))
        return marked

    async def _retry(
        self, rows: list[dict[str, Any]], reason: str, delay: float, counted: bool = True
    ) -> None:
        """Put the rows back for another try in `delay` seconds, or give them up when they
        have failed `max_attempts` times or are `max_age_s` old (a 429, not `counted`,
        takes back the attempt its claim added: only the age bound applies to it)."""
        attempts = max(int(r["attempts"]) for r in rows) - (0 if counted else 1)
        age = self.clock.time() - min(_moment(r["created_at"]) for r in rows)
        if self.policy.exhausted(attempts if counted else 0, age):
            given = f"gave up ({age / 3600:.1f} h old, {attempts} attempt(s)): {reason}"
            await self._fail(rows, given, 0 if counted else 1)
            return
        marks, ids = _ids(rows)
        log.warning(
            "outbox %s (%s) not sent, retry in %.1fs: %s",
            _names(rows),
            rows[0]["method"],
            delay,
            reason,
        )
        due = self._at(self.clock.time() + delay)
        await sql(
            "UPDATE outbox_message SET status = 'pending', last_error = {}, claim_token = NULL, "
            f"next_attempt_at = {{}}, attempts = attempts - {{}} "
            f"WHERE id IN ({marks}) AND claim_token = {{}}",
            reason[:2000],
            due,
            0 if counted else 1,
            *ids,
            rows[0]["claim_token"],
        )
        for row in rows:
            self.queue[int(row["id"])] = item_of({**row, "next_attempt_at": due})

    async def _migrate(self, rows: list[dict[str, Any]], old: int, new: int) -> None:
        """The group `old` became the supergroup `new`: move these rows, every other queued
        message to `old` (its stored `chat_id` too) and the administrators' copies there,
        and send these rows again at once."""
        marks, ids = _ids(rows)
        token = rows[0]["claim_token"]
        mine = f"(status = 'pending' OR (id IN ({marks}) AND claim_token = {{}}))"
        async with transaction():
            moving = await sql(
                f"SELECT id, payload FROM outbox_message WHERE chat_id = {{}} AND {mine}",
                old,
                *ids,
                token,
            )
            for found in moving:
                payload = json.loads(found["payload"])
                if payload.get("chat_id") == old:
                    payload["chat_id"] = new
                    await sql(
                        "UPDATE outbox_message SET payload = {} WHERE id = {}",
                        json.dumps(payload, ensure_ascii=False),
                        found["id"],
                    )
            await sql(
                f"UPDATE outbox_message SET chat_id = {{}} WHERE chat_id = {{}} AND {mine}",
                new,
                old,
                *ids,
                token,
            )
            copies = await sql(
                "UPDATE admin_notification SET chat_id = {} WHERE chat_id = {} AND NOT EXISTS "
                "(SELECT 1 FROM admin_notification n WHERE n.chat_id = {} "
                "AND n.message_id = admin_notification.message_id "
                "AND n.request_id = admin_notification.request_id) RETURNING id",
                new,
                old,
                new,
            )
            await sql(
                "UPDATE outbox_message SET status = 'pending', claim_token = NULL, "
                f"last_error = {{}}, next_attempt_at = {{}} WHERE id IN ({marks}) "
                "AND claim_token = {}",
                f"ChatMigrated: chat {old} is now {new}",
                self._at(self.clock.time()),
                *ids,
                token,
            )
        log.warning(
            "outbox %s (%s): chat %s became the supergroup %s; %d queued message(s) and "
            "%d administrator's copy(ies) moved there, sending again",
            _names(rows),
            rows[0]["method"],
            old,
            new,
            len(moving),
            len(copies),
        )
        self._last_full = -math.inf  # re-read the queue: its rows now name the new chat

    async def close(self) -> None:
        await self.lease.release()
        await self.api.close()
