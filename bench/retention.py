"""What a long history costs on SQLite: claims, /health, /metrics and retention at 1M rows.

    uv run python -m bench.retention                 # 1M finished rows per queue, ~3 min
    uv run python -m bench.retention --rows 100000   # quicker

Builds a migrated SQLite database holding `--rows` finished inbox rows and as many
finished outbox rows (payloads of real size: ~540 and ~450 bytes), with a few open rows in
each queue, and times, without and then with ANALYZE statistics:

- the inbox claim as it was before issue 11 and as `sosekni.delivery.inbox.claim` sends it
  now (each in a transaction rolled back, so every run sees the same rows);
- the sender's read of pending rows (`OutboxSender.look`);
- /health's backlog and the /metrics queries, before (`GROUP BY status` over every row,
  `status IN (…)`) and now;
- a full retention run (`sosekni.delivery.retention.prune`, pause 0): every row is past its
  retention; the time of each batch is how long SQLite's write lock is held at once.

The statements "now" are recorded from the code as it runs, so the figures follow the code.
Medians of `--repeats` runs; results printed and written to `bench/results/retention-*.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sosekni.app
import sosekni.delivery.inbox
import sosekni.delivery.outbox
import sosekni.metrics
from bench.saving import save
from sosekni.db import bind, engine_for, sql
from sosekni.delivery import retention
from sosekni.delivery.lease import lease_for
from sosekni.delivery.outbox import OutboxSender
from sosekni.delivery.policy import DEFAULT_POLICY
from tests.harness import migrate_in_process

RESULTS = Path(__file__).resolve().parent / "results"
NOW = datetime.now(UTC)
OPEN = 10

# The statements as they were before issue 11 (commit 45b3d21).
BEFORE = {
    "inbox claim": (
        "UPDATE inbox_update SET status = 'processing', claim_token = ?, locked_until = ?, "
        "attempts = attempts + 1 WHERE id IN (SELECT i.id FROM inbox_update i WHERE "
        "((i.status = 'new' AND i.next_attempt_at <= ?) "
        "OR (i.status = 'processing' AND i.locked_until < ?)) "
        "AND NOT EXISTS (SELECT 1 FROM inbox_update o WHERE o.chat_id = i.chat_id "
        "AND o.id < i.id AND o.status IN ('new', 'processing')) "
        "ORDER BY i.id LIMIT ?) RETURNING id, update_id, payload, attempts, claim_token"
    ),
    "health: inbox backlog": (
        "SELECT count(*) AS n, min(received_at) AS oldest FROM inbox_update "
        "WHERE status IN ('new', 'processing')"
    ),
    "health: outbox backlog": (
        "SELECT count(*) AS n, min(created_at) AS oldest FROM outbox_message "
        "WHERE status IN ('pending', 'sending')"
    ),
    "metrics: inbox": "SELECT status, count(*) AS n FROM inbox_update GROUP BY status",
    "metrics: outbox": "SELECT status, count(*) AS n FROM outbox_message GROUP BY status",
}
BEFORE_ARGS = {"inbox claim": ("token", NOW + timedelta(seconds=60), NOW, NOW, 16)}


def build(path: Path, rows: int) -> None:
    """The schema by the real migrations, then the rows in bulk (one statement each)."""
    migrate_in_process(f"sqlite:///{path}")
    old = str(NOW - timedelta(days=45))  # past both retentions
    series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) "
    with sqlite3.connect(path) as db:
        db.execute(
            series + "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, "
            "attempts, next_attempt_at, received_at, processed_at) SELECT n, 'message', "
            "n % 5000, printf('%.540c', 'x'), 'done', 1, ?, ?, ? FROM s",
            (rows, old, old, old),
        )
        db.execute(
            series + "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, "
            "attempts, next_attempt_at, created_at, sent_at) SELECT 'sendMessage', n % 5000, "
            "printf('%.450c', 'x'), 'reply', 'sent', 1, ?, ?, ? FROM s",
            (rows, old, old, old),
        )
        now = str(NOW)
        db.execute(
            series + "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, "
            "attempts, next_attempt_at, received_at) SELECT 100000000 + n, 'message', n, "
            "printf('%.540c', 'x'), 'new', 0, ?, ? FROM s",
            (OPEN, now, now),
        )
        db.execute(
            series + "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, "
            "attempts, next_attempt_at, created_at) SELECT 'sendMessage', n, "
            "printf('%.450c', 'x'), 'reply', 'pending', 0, ?, ? FROM s",
            (OPEN, now, now),
        )


def record_now(path: Path) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """The statements the code sends today, with their arguments, by what they do."""
    seen: list[tuple[str, tuple[Any, ...]]] = []

    async def recording(query: str, *args: Any) -> list[dict[str, Any]]:
        seen.append((query, args))
        return await sql(query, *args)

    async def run() -> None:
        bind(engine_for(f"sqlite:///{path}"))
        for module in (
            sosekni.app,
            sosekni.metrics,
            sosekni.delivery.inbox,
            sosekni.delivery.outbox,
        ):
            module.sql = recording  # type: ignore[attr-defined]
        sender = OutboxSender("http://127.0.0.1:9/botx", "en", lease_for(f"sqlite:///{path}"))
        await sender.look(NOW.timestamp(), full=True)
        await sender.api.close()
        await sosekni.app._backlog()
        await sosekni.metrics.Metrics().render()
        await sosekni.delivery.inbox.claim(DEFAULT_POLICY)
        await sql(
            "UPDATE inbox_update SET status = 'new', claim_token = NULL WHERE status = 'processing'"
        )

    asyncio.run(run())
    named = {}
    for query, args in seen:
        if query.startswith("UPDATE inbox_update SET status = 'processing'"):
            named["inbox claim"] = (query, args)
        elif "FROM outbox_message WHERE status = 'pending'" in query:
            named["sender: pending rows"] = (query, args)
        elif "min(received_at)" in query:
            named["health: inbox backlog"] = (query, args)
        elif "min(created_at)" in query:
            named["health: outbox backlog"] = (query, args)
        elif query.startswith("SELECT count(*) AS n FROM inbox_update"):
            named["metrics: inbox"] = (query, args)
        elif query.startswith("SELECT count(*) AS n FROM outbox_message WHERE (status"):
            named["metrics: outbox"] = (query, args)
    return named


def timed(path: Path, query: str, args: tuple[Any, ...], repeats: int) -> tuple[float, str]:
    """Median seconds of `query` on a new connection each run (writes rolled back)."""
    query = query.replace("{}", "?")
    runs = []
    plan = ""
    for _ in range(repeats):
        db = sqlite3.connect(path, isolation_level=None)
        try:
            plan = "; ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + query, args))
            writes = not query.startswith("SELECT")
            if writes:
                db.execute("BEGIN IMMEDIATE")
            started = time.perf_counter()
            db.execute(query, args).fetchall()
            runs.append(time.perf_counter() - started)
            if writes:
                db.execute("ROLLBACK")
        finally:
            db.close()
    return statistics.median(runs), plan


def prune_all(path: Path) -> dict[str, Any]:
    """A full retention run with no pause; the time of each batch (the lock held at once)."""
    batches: list[float] = []
    last = [time.perf_counter()]

    def progress(table: str, done: int) -> None:
        now = time.perf_counter()
        batches.append(now - last[0])
        last[0] = now

    async def run() -> dict[str, int]:
        bind(engine_for(f"sqlite:///{path}"))
        kept = retention.Retention(inbox=timedelta(days=7), outbox=timedelta(days=30))
        last[0] = time.perf_counter()
        return await retention.prune(kept, NOW, pause=0, progress=progress)

    started = time.perf_counter()
    deleted = asyncio.run(run())
    return {
        "deleted": deleted,
        "total_s": time.perf_counter() - started,
        "batches": len(batches),
        "batch_p50_ms": statistics.median(batches) * 1000,
        "batch_p99_ms": sorted(batches)[int(len(batches) * 0.99) - 1] * 1000,
        "batch_max_ms": max(batches) * 1000,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished rows per queue")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="results file prefix")
    options = parser.parse_args(argv)

    report: dict[str, Any] = {"rows": options.rows, "sqlite": sqlite3.sqlite_version}
    with tempfile.TemporaryDirectory(prefix="sosekni-bench-retention-") as tmp:
        path = Path(tmp) / "bot.db"
        started = time.perf_counter()
        build(path, options.rows)
        report["build_s"] = time.perf_counter() - started
        report["size_mb"] = path.stat().st_size / 2**20
        now = record_now(path)
        for stats in ("no statistics", "after ANALYZE"):
            if stats == "after ANALYZE":
                with sqlite3.connect(path) as db:
                    db.execute("ANALYZE")
            for name in (*BEFORE, "sender: pending rows"):
                row: dict[str, Any] = {"stats": stats, "query": name}
                if name in BEFORE:
                    args = BEFORE_ARGS.get(name, ())
                    row["before_ms"], row["before_plan"] = timed(
                        path, BEFORE[name], args, options.repeats
                    )
                    row["before_ms"] *= 1000
                query, args = now[name]
                row["now_ms"], row["now_plan"] = timed(path, query, args, options.repeats)
                row["now_ms"] *= 1000
                report.setdefault("queries", []).append(row)
        report["prune"] = prune_all(path)

    lines = [
        f"# Retention and query cost at {options.rows:,} finished rows per queue "
        f"(SQLite {report['sqlite']})",
        "",
        f"Database {report['size_mb']:.0f} MB, built in {report['build_s']:.0f} s. Medians of "
        f"{options.repeats} runs.",
        "",
        "| statistics | query | before (ms) | now (ms) | plan now |",
        "|---|---|---:|---:|---|",
    ]
    for row in report["queries"]:
        before = f"{row['before_ms']:.2f}" if "before_ms" in row else "—"
        lines.append(
            f"| {row['stats']} | {row['query']} | {before} | {row['now_ms']:.2f} "
            f"| {row['now_plan']} |"
        )
    prune = report["prune"]
    lines += [
        "",
        f"Retention, every row past its period: deleted {prune['deleted']} in "
        f"{prune['total_s']:.1f} s, {prune['batches']} batches; one batch (the write lock "
        f"held at once) p50 {prune['batch_p50_ms']:.1f} ms, p99 {prune['batch_p99_ms']:.1f} "
        f"ms, max {prune['batch_max_ms']:.1f} ms (the service pauses as long after each).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = options.out or RESULTS / f"retention-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    save(out, report, text)
    return report


if __name__ == "__main__":
    main()
