"""The unit of work: a state change, its outgoing messages and the inbox mark, committed at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sosekni.db import current_engine, is_postgres, sql, transaction, utcnow
from sosekni.tables import OutboxMessage


@dataclass
class Claim:
    """The inbox row this task is processing, claimed with a token."""

    row_id: int
    update_id: int
    token: str
    finished: bool = False


current_claim: ContextVar[Claim | None] = ContextVar("current_claim", default=None)


class ClaimLost(Exception):
    """Another worker finished this update first; this attempt is rolled back."""


class Wakeup:
    """A per-process nudge for a background loop (it also polls, so a missed nudge only delays)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    @property
    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def set(self) -> None:
        self.event.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            pass
        self.event.clear()


class OutboxWakeup(Wakeup):
    """The sender's nudge, carrying the lowest id of the outbox rows committed since its last
    look (from this process, or from any process through Postgres NOTIFY): the sender reads
    just the rows from there on, and an uncommitted row is never skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.floor: int | None = None

    def announce(self, first_id: int | None) -> None:
        if first_id is not None:
            self.floor = first_id if self.floor is None else min(self.floor, first_id)
        self.set()

    def take_floor(self) -> int | None:
        floor, self.floor = self.floor, None
        return floor


outbox_ready = OutboxWakeup()


@dataclass
class UnitOfWork:
    """Collects the Bot API calls that announce this transaction's change."""

    messages: list[OutboxMessage] = field(default_factory=list)

    def send(
        self,
        method: str,
        payload: dict[str, Any],
        *,
        chat_id: int | None,
        purpose: str,
        request_id: int | None = None,
        admin_telegram_id: int | None = None,
    ) -> None:
        now = utcnow()
        self.messages.append(
            OutboxMessage(
                method=method,
                chat_id=chat_id,
                payload=json.dumps(payload, ensure_ascii=False),
                purpose=purpose,
                request_id=request_id,
                admin_telegram_id=admin_telegram_id,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    def message(self, chat_id: int, text: str, *, purpose: str, **extra: Any) -> None:
        """Queue a sendMessage with HTML formatting."""
        payload = {"text": text, "parse_mode": "HTML", **extra.pop("payload", {})}
        self.send("sendMessage", payload, chat_id=chat_id, purpose=purpose, **extra)

    first_id: int | None = None

    async def insert(self) -> None:
        """Write the queued calls to the outbox (inside the caller's transaction); after the
        commit, `announce` tells the sender."""
        if not self.messages:
            return
        rows = await OutboxMessage.insert(*self.messages).run()
        self.first_id = min(int(r["id"]) for r in rows)
        await notify_sender(self.first_id)

    def announce(self) -> None:
        """The transaction committed: wake this process's sender (if it is the one)."""
        if self.messages:
            outbox_ready.announce(self.first_id)


OUTBOX_CHANNEL = "sosekni_outbox"  # what the sender's lease LISTENs on (delivery.lease)


async def notify_sender(first_id: int) -> None:
    """On Postgres, wake the sender, which may run in another process, to read the outbox
    from row `first_id` on; inside a transaction the notice is delivered on commit. (On
    SQLite the sender is in this process: `announce`, or its next look.)"""
    if is_postgres(current_engine()):
        await sql("SELECT pg_notify({}, {})", OUTBOX_CHANNEL, str(first_id))


async def finish_claim() -> None:
    """Mark the update being processed as done, inside the current transaction."""
    claim = current_claim.get()
    if claim is None or claim.finished:
        return
    rows = await sql(
        "UPDATE inbox_update SET status = 'done', processed_at = {}, claim_token = NULL, "
        "error = NULL WHERE id = {} AND claim_token = {} RETURNING id",
        utcnow(),
        claim.row_id,
        claim.token,
    )
    if not rows:
        raise ClaimLost(f"update {claim.update_id} was finished by another worker")


@asynccontextmanager
async def unit_of_work() -> AsyncIterator[UnitOfWork]:
    """Open a transaction; on success insert the queued messages and finish the update."""
    work = UnitOfWork()
    async with transaction():
        yield work
        await work.insert()
        await finish_claim()
    claim = current_claim.get()
    if claim is not None:
        claim.finished = True
    work.announce()
