"""The operator's view of the two queues: what is waiting or failed, and trying it again.

The inbox (updates to process) and the outbox (Bot API calls to send) have the same shape:
a row waits (`new` / `pending`), is held under a lease while worked on (`processing` /
`sending`), and ends done, sent or failed. `sosekni-ops inbox …` and `outbox …` read and
reset rows here; the running service picks a reset row up at its next look at the table
(every `poll_interval_s`; on Postgres the sender is also woken at once).

A retry never touches a row another worker holds under a live lease (the worker would
finish it too: a message could go twice), nor a finished one (it was sent or applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sosekni.db import as_utc, sql, utcnow
from sosekni.services.work import notify_sender


@dataclass(frozen=True)
class Queue:
    """Where one queue lives and what its columns and states are called."""

    name: str
    table: str
    what: str  # the column saying what a row is: the Bot API method, the update kind
    since: str  # when the row was queued
    error: str
    waiting: str  # due, or backing off
    working: str  # held under a lease
    finished: tuple[str, ...]
    reset: str = ""  # more columns cleared by a retry


OUTBOX = Queue(
    "outbox", "outbox_message", "method", "created_at", "last_error", "pending", "sending",
    ("sent", "dropped"),
)  # fmt: skip
INBOX = Queue(
    "inbox", "inbox_update", "kind", "received_at", "error", "new", "processing", ("done",),
    ", processed_at = NULL",
)  # fmt: skip
QUEUES = {q.name: q for q in (OUTBOX, INBOX)}


@dataclass(frozen=True)
class QueueRow:
    id: int
    status: str
    what: str
    chat_id: int | None
    attempts: int
    since: datetime
    next_attempt_at: datetime | None
    error: str


class Retried(Enum):
    """What `retry` did with one row."""

    QUEUED = "queued"  # waiting again, due now
    NOT_FOUND = "not found"
    FINISHED = "finished"  # sent, dropped or done: nothing to retry
    BUSY = "busy"  # a worker holds it under a live lease


def _row(queue: Queue, r: dict[str, Any]) -> QueueRow:
    return QueueRow(
        id=int(r["id"]),
        status=r["status"],
        what=r["what"] or "",
        chat_id=None if r["chat_id"] is None else int(r["chat_id"]),
        attempts=int(r["attempts"]),
        since=as_utc(r["since"]),
        next_attempt_at=as_utc(r["next_attempt_at"]),
        error=r["error"] or "",
    )


async def listing(queue: Queue, *, failed: bool, limit: int) -> tuple[int, list[QueueRow]]:
    """How many rows match and at most `limit` of them: the open work (waiting or being
    worked on) oldest first, or the failed rows newest first."""
    if failed:
        where, args, order = "status = 'failed'", [], "id DESC"
    else:
        where, args, order = "status IN ({}, {})", [queue.waiting, queue.working], "id"
    count = await sql(f"SELECT count(*) AS n FROM {queue.table} WHERE {where}", *args)
    rows = await sql(
        f"SELECT id, status, {queue.what} AS what, chat_id, attempts, {queue.since} AS since, "
        f"next_attempt_at, {queue.error} AS error FROM {queue.table} WHERE {where} "
        f"ORDER BY {order} LIMIT {{}}",
        *args,
        limit,
    )
    return int(count[0]["n"]), [_row(queue, r) for r in rows]


async def retry(queue: Queue, row_id: int) -> Retried:
    """Make one failed, waiting or abandoned row due now with its attempts reset."""
    found = await sql(f"SELECT status, locked_until FROM {queue.table} WHERE id = {{}}", row_id)
    if not found:
        return Retried.NOT_FOUND
    status, now = found[0]["status"], utcnow()
    if status in queue.finished:
        return Retried.FINISHED
    locked = as_utc(found[0]["locked_until"])
    if status == queue.working and locked is not None and locked > now:
        return Retried.BUSY
    changed = await sql(
        f"UPDATE {queue.table} SET status = {{}}, attempts = 0, next_attempt_at = {{}}, "
        f"claim_token = NULL, locked_until = NULL{queue.reset} "
        "WHERE id = {} AND status = {} RETURNING id",
        queue.waiting,
        now,
        row_id,
        status,
    )
    if not changed:
        return Retried.BUSY  # claimed between the look and the update
    await _wake(queue, row_id)
    return Retried.QUEUED


async def retry_failed(queue: Queue) -> int:
    """Make every failed row due now with its attempts reset; how many."""
    changed = await sql(
        f"UPDATE {queue.table} SET status = {{}}, attempts = 0, next_attempt_at = {{}}, "
        f"claim_token = NULL, locked_until = NULL{queue.reset} "
        "WHERE status = 'failed' RETURNING id",
        queue.waiting,
        utcnow(),
    )
    if changed:
        await _wake(queue, min(int(r["id"]) for r in changed))
    return len(changed)


async def _wake(queue: Queue, first_id: int) -> None:
    """On Postgres, wake the sender in whichever process holds it (else its next look)."""
    if queue is OUTBOX:
        await notify_sender(first_id)
