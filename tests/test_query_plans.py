"""The queries that run all the time read open rows (or old ones) through indexes, never the
history: claims, the sender's reads, /health, /metrics and retention.

Each test fills a migrated database with many finished rows and a few open ones, runs the
real functions while recording the SQL they send, and asks the engine for the plan of each
statement: on Postgres no `Seq Scan` on the inbox or the outbox; on SQLite no full `SCAN`
of a table and no walk through a whole index other than a partial one (of open rows, or of
finished rows for retention), with no statistics, with ANALYZE's, and with statistics as
ANALYZE leaves them over a million finished rows (written into sqlite_stat1: that is where
SQLite 3.40 chose to walk the table for a claim). The time this saves is measured by
`bench/retention.py`, not here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import sosekni.app
import sosekni.delivery.inbox
import sosekni.delivery.outbox
import sosekni.delivery.retention
import sosekni.metrics
from sosekni.db import bind, close_pool, engine_for, open_pool, sql
from sosekni.delivery import inbox, retention
from sosekni.delivery.lease import lease_for
from sosekni.delivery.outbox import OutboxSender
from sosekni.delivery.policy import DEFAULT_POLICY
from sosekni.metrics import Metrics
from tests.conftest import migrated_database
from tests.fakes.postgres import drop_database

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FINISHED = 20_000  # rows of history in each of the inbox and the outbox
OPEN = 10
BIG_TABLES = ("inbox_update", "outbox_message")
# Partial indexes: walking one reads only the rows it holds.
PARTIAL = {
    "inbox_update_open",
    "inbox_update_open_chat",
    "outbox_message_open",
    "outbox_message_open_chat",
    "outbox_message_failed",
    "inbox_update_finished",
    "outbox_message_finished",
    "client_request_one_pending",
}
# What sqlite_stat1 says after ANALYZE over a million rows, all finished: one status value,
# and nothing for the partial indexes (they were empty).
SQLITE_STATS_1M = {
    "inbox_update": {
        "inbox_update_due": "1000000 1000000 1000000 1",
        "inbox_update_status": "1000000 1000000",
        "inbox_update_update_id": "1000000 1",
        "inbox_update_finished": "1000000 1",
    },
    "outbox_message": {
        "outbox_message_due": "1000000 1000000 1000000 1",
        "outbox_message_status": "1000000 1000000",
        "outbox_message_chat_id": "1000000 2000",
        "outbox_message_request_id": "1000000 3",
        "outbox_message_finished": "1000000 1",
    },
}


@pytest.fixture(
    params=["sqlite-no-stats", "sqlite-analyzed", "sqlite-stats-of-1m-rows", "postgres"]
)
async def history(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_admin_dsn: str
) -> AsyncIterator[tuple[str, str]]:
    """(kind, url) of a migrated database: FINISHED finished and OPEN open rows per queue."""
    kind = request.param
    engine_kind = "postgres" if kind == "postgres" else "sqlite"
    url = migrated_database(engine_kind, postgres_admin_dsn, tmp_path)
    engine = engine_for(url)
    bind(engine)
    await open_pool(engine, 4)
    await fill(kind == "postgres")
    if kind != "sqlite-no-stats":
        await sql("ANALYZE")
    if kind == "sqlite-stats-of-1m-rows":
        await sql("DELETE FROM sqlite_stat1")
        for table, stats in SQLITE_STATS_1M.items():
            for index, stat in stats.items():
                await sql("INSERT INTO sqlite_stat1 VALUES ({}, {}, {})", table, index, stat)
    yield kind, url
    await close_pool(engine)
    if kind == "postgres":
        drop_database(postgres_admin_dsn, url)


async def fill(postgres: bool) -> None:
    """History finished a day ago (within retention), and a few open rows per queue."""
    day_ago = NOW - timedelta(days=1)
    series = (
        "generate_series(1, {}) AS s(n)"
        if postgres
        else "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {}) "
        "SELECT n FROM s) AS s"
    )
    text = "repeat('x', 300)" if postgres else "printf('%.300c', 'x')"
    for status, rows, update_base in (("done", FINISHED, 0), ("new", OPEN, 10_000_000)):
        await sql(
            "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, attempts, "
            "next_attempt_at, received_at, processed_at) "
            f"SELECT {{}} + n, 'message', n % 997, {text}, {{}}, 1, {{}}, {{}}, {{}} "
            f"FROM {series}",
            update_base,
            status,
            day_ago,
            day_ago,
            day_ago if status == "done" else None,
            rows,
        )
    for status, rows in (("sent", FINISHED), ("pending", OPEN)):
        await sql(
            "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, attempts, "
            "next_attempt_at, created_at, sent_at) "
            f"SELECT 'sendMessage', n % 997, {text}, 'reply', {{}}, 1, {{}}, {{}}, {{}} "
            f"FROM {series}",
            status,
            day_ago,
            day_ago,
            day_ago if status == "sent" else None,
            rows,
        )


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Every statement the modules under test send, with its arguments (still sent)."""
    seen: list[tuple[str, tuple[Any, ...]]] = []

    async def recording(query: str, *args: Any) -> list[dict[str, Any]]:
        seen.append((query, args))
        return await sql(query, *args)

    for module in (
        sosekni.app,
        sosekni.metrics,
        sosekni.delivery.inbox,
        sosekni.delivery.outbox,
        sosekni.delivery.retention,
    ):
        monkeypatch.setattr(module, "sql", recording)
    return seen


async def run_the_queries(url: str) -> None:
    """What a worker runs over and over, and what retention runs hourly."""
    sender = OutboxSender("http://127.0.0.1:9/botx", "en", lease_for(url), DEFAULT_POLICY)
    await sender.look(NOW.timestamp(), full=True)  # every pending row
    first = min(sender.queue)
    sender.wakeup.announce(first)
    await sender.look(NOW.timestamp())  # the rows announced since
    await sosekni.app._backlog()  # GET /health
    await Metrics().render()  # GET /metrics
    kept = retention.Retention(inbox=timedelta(days=7), outbox=timedelta(days=30))
    await retention.prune(kept, NOW, dry_run=True)
    await retention.prune(kept, NOW)
    assert len(await inbox.claim(DEFAULT_POLICY)) == OPEN  # last: it changes the rows
    await sender.api.close()


async def plan(query: str, args: tuple[Any, ...], postgres: bool) -> list[str]:
    if postgres:
        rows = await sql("EXPLAIN " + query, *args)
        return [r["QUERY PLAN"] for r in rows]
    rows = await sql("EXPLAIN QUERY PLAN " + query, *args)
    return [r["detail"] for r in rows]


_WALK = re.compile(r"^SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?")


def reads_history(line: str, postgres: bool) -> str | None:
    """Why this plan line reads rows it does not need, or None."""
    if postgres:
        found = re.search(r"Seq Scan on (\w+)", line)
        return line if found and found.group(1) in BIG_TABLES else None
    walk = _WALK.match(line.strip())
    if walk is None or walk.group(1) == "CONSTANT":
        return None
    if walk.group(2) in PARTIAL:
        return None
    return line


async def test_claims_reads_health_metrics_and_retention_use_indexes_not_history(
    history: tuple[str, str], recorded: list[tuple[str, tuple[Any, ...]]]
) -> None:
    kind, url = history
    postgres = kind == "postgres"
    await run_the_queries(url)

    statements = [(q, a) for q, a in recorded if re.search(r"\b(inbox_update|outbox_message)\b", q)]
    assert len(statements) >= 9, statements
    wrong = []
    for query, args in statements:
        lines = await plan(query, args, postgres)
        bad = [why for line in lines if (why := reads_history(line, postgres))]
        if bad:
            wrong.append(f"{query}\n    " + "\n    ".join(lines))
    assert not wrong, "\n\n".join(wrong)


async def test_retention_reads_only_through_the_finished_row_indexes(
    history: tuple[str, str], recorded: list[tuple[str, tuple[Any, ...]]]
) -> None:
    postgres = history[0] == "postgres"
    kept = retention.Retention(inbox=timedelta(days=7), outbox=timedelta(days=30))
    await retention.prune(kept, NOW, dry_run=True)
    await retention.prune(kept, NOW)
    assert len(recorded) == 4
    for query, args in recorded:
        lines = "\n".join(await plan(query, args, postgres))
        table = "inbox_update" if "inbox_update" in query else "outbox_message"
        assert f"{table}_finished" in lines, f"{query}\n{lines}"
