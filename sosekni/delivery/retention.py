"""Retention: finished delivery bookkeeping is deleted once it is older than its period.

Inbox rows keep whole Telegram updates (personal data) and outbox rows whole messages;
once finished they only serve the duplicate check (an `update_id` Telegram may send again
within 24 hours) and an operator's look back. Finished inbox rows (`done`, `failed`) older
than INBOX_RETENTION_DAYS, by when they finished (`processed_at`, else `received_at`), and
finished outbox rows (`sent`, `failed`, `dropped`) older than OUTBOX_RETENTION_DAYS, by
when they were sent (else queued), are deleted. Requests, decisions, administrators and
the administrators' notification copies are the audit record: nothing here touches them.

Deletes go `BATCH` rows per statement, each statement its own short transaction, through
the partial indexes over finished rows (migration `finished_row_indexes`): a batch reads
only what it deletes, holds SQLite's write lock for milliseconds and then pauses as long
as it took, so the webhook's inserts never wait behind it for long. Deleting is idempotent:
several workers (or `sosekni-ops prune` beside the service) may run it at once; on
Postgres `SKIP LOCKED` gives each its own rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sosekni.config import Settings
from sosekni.db import current_engine, is_postgres, sql, utcnow
from sosekni.delivery import BackgroundLoop
from sosekni.services.work import Wakeup

BATCH = 1000
INTERVAL_S = 3600.0


@dataclass(frozen=True)
class Kept:
    """What one table keeps: which rows are finished and which time their age counts from."""

    table: str
    index: str  # the partial index of finished rows
    finished: str  # exactly that index's WHERE
    indexed: str  # the column that index orders by (never later than `finished_at`)
    finished_at: str  # when the row finished


INBOX = Kept(
    "inbox_update",
    "inbox_update_finished",
    "(status = 'done' OR status = 'failed')",
    "received_at",
    "coalesce(processed_at, received_at)",
)
OUTBOX = Kept(
    "outbox_message",
    "outbox_message_finished",
    "(status = 'sent' OR status = 'failed' OR status = 'dropped')",
    "created_at",
    "coalesce(sent_at, created_at)",
)


@dataclass(frozen=True)
class Retention:
    """How long finished rows of each table are kept."""

    inbox: timedelta
    outbox: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Retention:
        return cls(
            inbox=timedelta(days=settings.inbox_retention_days),
            outbox=timedelta(days=settings.outbox_retention_days),
        )

    def cutoffs(self, now: datetime) -> list[tuple[Kept, datetime]]:
        """Each table with the moment before which its finished rows go."""
        return [(INBOX, now - self.inbox), (OUTBOX, now - self.outbox)]


def _old(kept: Kept) -> str:
    """`FROM … WHERE …` of the finished rows older than a cutoff (given twice).

    The partial index finds the rows that arrived before the cutoff; `finished_at` is never
    earlier, so its test only leaves out the few that finished recently. Without ANALYZE
    statistics SQLite would rather walk the status index over every finished row: there
    the index is named (INDEXED BY also makes the query fail, not crawl, if it cannot use it).
    """
    named = "" if is_postgres(current_engine()) else f" INDEXED BY {kept.index}"
    return (
        f"FROM {kept.table}{named} WHERE {kept.indexed} < {{}} AND {kept.finished} "
        f"AND {kept.finished_at} < {{}}"
    )


async def count_old(kept: Kept, cutoff: datetime) -> int:
    """How many finished rows of this table are older than `cutoff`."""
    rows = await sql(f"SELECT count(*) AS n {_old(kept)}", cutoff, cutoff)
    return int(rows[0]["n"])


async def delete_batch(kept: Kept, cutoff: datetime, batch: int = BATCH) -> int:
    """Delete at most `batch` finished rows older than `cutoff`, in one statement; how many.

    The outer test repeats the status condition: on Postgres a row that an operator put
    back into the queue meanwhile is re-checked after its lock and kept.
    """
    skip_locked = " FOR UPDATE SKIP LOCKED" if is_postgres(current_engine()) else ""
    rows = await sql(
        f"DELETE FROM {kept.table} WHERE id IN (SELECT id {_old(kept)} "
        f"LIMIT {int(batch)}{skip_locked}) AND {kept.finished} RETURNING id",
        cutoff,
        cutoff,
    )
    return len(rows)


async def prune(
    retention: Retention,
    now: datetime,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    pause: float = 1.0,
    progress: Callable[[str, int], None] | None = None,
    stopping: asyncio.Event | None = None,
) -> dict[str, int]:
    """Delete (or with `dry_run` count) each table's finished rows older than its period.

    Returns the rows deleted (or that would be) per table. After each batch it sleeps
    `pause` times as long as the batch took, leaving the database to other writers;
    `progress(table, done)` is called after each batch; a set `stopping` ends it between
    batches (what is left goes in the next run).
    """
    found: dict[str, int] = {}
    for kept, cutoff in retention.cutoffs(now):
        if dry_run:
            found[kept.table] = await count_old(kept, cutoff)
            continue
        done = 0
        while stopping is None or not stopping.is_set():
            started = time.perf_counter()
            deleted = await delete_batch(kept, cutoff, batch)
            done += deleted
            if progress is not None:
                progress(kept.table, done)
            if deleted < batch:
                break
            if pause > 0:
                await asyncio.sleep((time.perf_counter() - started) * pause)
        found[kept.table] = done
    return found


class RetentionLoop(BackgroundLoop):
    """Prunes at start and then every `interval_s` (an hour); safe in every worker."""

    name = "retention"

    def __init__(
        self,
        retention: Retention,
        ready: asyncio.Event | None = None,
        interval_s: float = INTERVAL_S,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(Wakeup(), ready)
        self.retention = retention
        self.poll_interval_s = interval_s
        self.now = now

    async def run_once(self) -> int:
        deleted = await prune(self.retention, self.now(), stopping=self.stopping)
        if any(deleted.values()):
            self.log.info(
                "retention: deleted %d inbox and %d outbox row(s) past their retention",
                deleted[INBOX.table],
                deleted[OUTBOX.table],
            )
        return 0  # then wait a whole interval (or a stop)
