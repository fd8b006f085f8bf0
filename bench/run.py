"""The benchmark: the bot, bare Sanic and PTB's run_webhook under the same load, same machine.

    uv run python -m bench.run                      # the full matrix (README), ~25 min on 2 cores
    uv run python -m bench.run --preset quick       # one repeat of the main configurations
    uv run python -m bench.run --systems sosekni --workers 1 --rates 200 --duration 5 --repeats 1

Each run: a fresh database copied from a migrated, pre-seeded template (``--seeds`` stored
requests), the server under test as its own process tree, the Telegram stand-in
(`sosekni.standin`) as another, and the load generator (`bench.load`) as a third. Results go
to ``bench/results/<time>.json`` and ``.md`` (medians over ``--repeats``, ratios to the
baselines) and the table is printed. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict, deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench import procstats
from bench.saving import save
from tests.fakes.postgres import create_database, drop_database
from tests.harness import (
    ROOT,
    SECRET,
    TOKEN,
    BotServer,
    Db,
    MigratedTemplates,
    base_env,
    clone_database,
    run_ops,
)

RESULTS = ROOT / "bench" / "results"
ADMINS = (1001, 1002)
SEEDED_CLIENT_BASE = 500_000_000
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LATENCY_CATEGORIES = ("received", "already_pending", "status", "decision", "callback")
PG_DB_FIELDS = (
    "xact_commit",
    "xact_rollback",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "blks_hit",
    "blks_read",
)


@dataclass(frozen=True)
class Config:
    """One configuration of the matrix; run `repeats` times."""

    system: str  # sosekni | ceiling | peer
    workers: int
    rate: float  # offered updates/s; 0 = full speed
    seeds: int  # stored requests before the run
    limits: str = "telegram"  # telegram | lifted (sosekni only: the sender's rate limiter)

    @property
    def label(self) -> str:
        rate = "full" if not self.rate else f"{self.rate:g}/s"
        extra = "" if self.system != "sosekni" or self.limits == "telegram" else " (limits lifted)"
        return f"{self.system}{extra} w={self.workers} {rate} seeds={self.seeds}"


# ------------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank; inf values count (they are the unfinished)."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: list[Any]) -> Any:
    found = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(found) if found else None


def classify(text: str) -> str:
    """The category of a message the bot sent, from its (English) text."""
    if "has been received" in text:
        return "received"
    if text.startswith("You already have a pending"):
        return "already_pending"
    if text.startswith(("Good news", "Sorry, your request")):
        return "decision"
    if text.startswith(("Your request #", "You have not sent")):
        return "status"
    if text.startswith("<b>Access request"):
        return "notify"
    return "other"


def python() -> str:
    return sys.executable


def peer_command() -> list[str]:
    if importlib.util.find_spec("tornado") is None:
        raise RuntimeError("the PTB peer needs tornado: run `uv sync` (a development dependency)")
    return [python(), "-m", "bench.peer"]


# ------------------------------------------------------------------------------ database


class Database:
    """Bench databases on one Postgres server, all named ``sosekni_bench_<tag>_…``.

    The harness's migrated template (`tests.harness.MigratedTemplates`, one of the bench's
    own) is copied once per seed count and seeded; each run gets a copy of that. `fresh`
    databases are migrated by a tree's own `sosekni-ops migrate` instead (another checkout's
    migrations may differ from this one's).
    """

    def __init__(self, admin_dsn: str, tag: str) -> None:
        self.admin_dsn = admin_dsn
        self.tag = tag
        self.prefix = f"sosekni_bench_{tag}"
        self.migrated = MigratedTemplates(prefix=f"{self.prefix}_template")
        self.templates: dict[int, str] = {}
        self.pending: dict[int, list[list[int]]] = {}
        self.created: list[str] = []

    async def template(self, seeds: int) -> str:
        """The URL of the migrated template with `seeds` stored requests, made on first use."""
        if seeds in self.templates:
            return self.templates[seeds]
        url = await asyncio.to_thread(
            self.migrated.postgres_copy, self.admin_dsn, f"{self.prefix}_tmpl_{seeds}"
        )
        self.created.append(url)
        conn = await asyncpg.connect(url)
        try:
            await seed(conn, seeds)
            rows = await conn.fetch(
                "SELECT id, client_telegram_id FROM client_request WHERE status = 'pending' "
                "ORDER BY id"
            )
        finally:
            await conn.close()
        self.pending[seeds] = [[r["id"], r["client_telegram_id"]] for r in rows]
        self.templates[seeds] = url
        return url

    async def copy(self, seeds: int) -> str:
        """The URL of a new database copied from the `seeds` template."""
        template = await self.template(seeds)
        url = await asyncio.to_thread(clone_database, self.admin_dsn, template, self.prefix)
        self.created.append(url)
        return url

    async def fresh(self, api: str, ops: list[str] | None = None, cwd: Path = ROOT) -> str:
        """A new empty database migrated by `ops` (a `sosekni-ops` command; default this tree's)."""
        url = await asyncio.to_thread(create_database, self.admin_dsn, self.prefix)
        self.created.append(url)
        await asyncio.to_thread(migrate, url, api, ops, cwd)
        return url

    async def drop(self, url: str) -> None:
        await asyncio.to_thread(drop_database, self.admin_dsn, url)
        with contextlib.suppress(ValueError):
            self.created.remove(url)

    async def drop_all(self) -> None:
        for url in list(self.created):
            with contextlib.suppress(Exception):
                await self.drop(url)
        await asyncio.to_thread(self.migrated.drop_postgres, self.admin_dsn)


def migrate(url: str, api: str, ops: list[str] | None = None, cwd: Path = ROOT) -> None:
    done = run_ops("migrate", env=server_env(url, api), timeout=300, ops=ops, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed: {done.stdout}{done.stderr}")


async def seed(conn: asyncpg.Connection, rows: int) -> None:
    """`rows` stored requests (half pending, the rest decided) with their history.

    Each request comes with the inbox rows and sent outbox rows it would have left (two
    updates, three messages), so the queues' tables and indexes grow with the data too.
    Submission times stay within the last 9 hours: no reminder is due during a run.
    """
    await conn.execute(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "SELECT unnest($1::bigint[]), 'Admin', true, now(), now() ON CONFLICT DO NOTHING",
        list(ADMINS),
    )
    await conn.execute(
        f"""
        INSERT INTO client_request (client_telegram_id, client_username, client_first_name,
            client_language, text, status, submitted_at, admin_telegram_id, admin_name,
            response, responded_at, created_at, updated_at)
        SELECT {SEEDED_CLIENT_BASE} + i, 'seeded' || i, 'Seeded ' || i, 'en',
            'seeded request number ' || i,
            s, now() - make_interval(secs => i * 0.3),
            CASE WHEN s = 'pending' THEN NULL ELSE {ADMINS[0]} END,
            CASE WHEN s = 'pending' THEN NULL ELSE 'Admin' END,
            CASE WHEN s = 'pending' THEN NULL ELSE s END,
            CASE WHEN s = 'pending' THEN NULL ELSE now() - make_interval(secs => i * 0.2) END,
            now(), now()
        FROM (SELECT i, (ARRAY['pending', 'approved', 'pending', 'rejected'])[i % 4 + 1] AS s
              FROM generate_series(1, $1) AS i) AS g
        """,
        rows,
    )
    await conn.execute(
        "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, attempts, "
        "next_attempt_at, received_at, processed_at) "
        "SELECT 900000000000 + i, 'message', $2 + i / 2, '{}', 'done', 1, now(), now(), now() "
        "FROM generate_series(1, $1) AS i",
        rows * 2,
        SEEDED_CLIENT_BASE,
    )
    await conn.execute(
        "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, attempts, "
        "next_attempt_at, created_at, sent_at) "
        "SELECT 'sendMessage', $2 + i / 3, '{}', 'reply', 'sent', 1, now(), now(), now() "
        "FROM generate_series(1, $1) AS i",
        rows * 3,
        SEEDED_CLIENT_BASE,
    )
    await conn.execute("VACUUM ANALYZE")


async def pg_snapshot(dsn: str) -> dict[str, Any]:
    """pg_stat_database for this database, and per-table scan and row counters."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            f"SELECT {', '.join(PG_DB_FIELDS)} FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        tables = await conn.fetch(
            "SELECT relname, seq_scan, seq_tup_read, idx_scan, n_tup_ins, n_tup_upd, "
            "n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"
        )
    finally:
        await conn.close()
    return {
        "db": {k: int(row[k] or 0) for k in PG_DB_FIELDS},
        "tables": {
            r["relname"]: {k: int(r[k] or 0) for k in r.keys() if k != "relname"} for r in tables
        },
    }


def pg_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    db = {k: after["db"][k] - before["db"][k] for k in PG_DB_FIELDS}
    tables = {}
    for name, values in after["tables"].items():
        old = before["tables"].get(name, {})
        tables[name] = {k: v - old.get(k, 0) for k, v in values.items()}
    return {"db": db, "tables": tables}


async def backend_pids(admin_dsn: str, url: str) -> list[int]:
    """The Postgres backends serving the database of `url`."""
    name = urlsplit(url).path.lstrip("/")
    rows = await Db(admin_dsn).fetch("SELECT pid FROM pg_stat_activity WHERE datname = {}", name)
    return [r["pid"] for r in rows]


def backend_cpu(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        info = procstats.read(pid)
        if info is not None:
            found[pid] = info.cpu_s
    return found


# ------------------------------------------------------------------------------- servers


def server_env(database_url: str, api: str, **extra: str) -> dict[str, str]:
    """The harness's server environment, with the bench's two administrators."""
    admins = ",".join(str(a) for a in ADMINS)
    return base_env(database_url, api, ADMIN_TELEGRAM_ID=admins, PYTHONUNBUFFERED="1", **extra)


@dataclass(kw_only=True)
class Server(BotServer):
    """The server under test of one configuration: the bot, bare Sanic or the PTB peer.

    The harness's server runner with other commands for the baselines and the instrumented
    wrapper (`bench.serve`), and, for the baselines, another sign that they are serving.
    """

    config: Config
    profile: str | None = None
    sql_counts: str | None = None
    poll_s: float = 0.2

    def __post_init__(self) -> None:
        self.workers = self.config.workers

    @property
    def name(self) -> str:
        return self.config.system

    def command(self) -> tuple[list[str], dict[str, str]]:
        c = self.config
        env = dict(self.env)
        if c.limits == "lifted":
            env["BENCH_LIFT_LIMITS"] = "1"
        if self.profile:
            env["BENCH_PROFILE"] = self.profile
        if self.sql_counts:
            env["BENCH_SQL_COUNTS"] = self.sql_counts
        port = ["--port", str(self.port)]
        if c.system == "ceiling":
            return [python(), "-m", "bench.ceiling", *port, "--workers", str(c.workers)], env
        if c.system == "peer":
            return [*peer_command(), *port], env
        if c.limits == "lifted" or self.profile or self.sql_counts:
            return [python(), "-m", "bench.serve", *port, "--workers", str(c.workers)], env
        return super().command()[0], env

    def ready(self) -> bool:
        system = self.config.system
        if system == "sosekni":
            return super().ready()
        if system == "peer" and "peer @SoSenkiTestBot ready" not in self.log():
            return False
        try:
            # a wrong secret: the peer answers 403, bare Sanic 200; either way it is serving
            answer = httpx.post(f"{self.url}/webhook/telegram", content=b"{}", timeout=2)
            return answer.status_code in (200, 403)
        except httpx.HTTPError:
            return False


class FakeApi:
    """The Telegram stand-in (`sosekni.standin`) as a process of its own."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [python(), "-m", "sosekni.standin", "--port", "0", "--token", TOKEN],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("listening on"):
            raise RuntimeError(f"fake Bot API did not start: {line}")
        self.port = int(line.split()[-1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base_url, timeout=30)
        self.seen = 0

    def reset(self) -> None:
        self.client.post("/bench/reset")
        self.seen = 0

    def new_calls(self) -> list[list[Any]]:
        found = self.client.get("/bench/calls", params={"since": self.seen}).json()
        self.seen += len(found["calls"])
        return found["calls"]

    def cpu(self) -> float:
        info = procstats.read(self.process.pid)
        return info.cpu_s if info else 0.0

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


# ---------------------------------------------------------------------------------- runs


class Matcher:
    """Matches expected effects to the fake API's calls, in order, per chat and category."""

    def __init__(self, expected: list[list[Any]]) -> None:
        self.waiting: dict[tuple[str, str], deque[tuple[float, int]]] = defaultdict(deque)
        for key, category, sent, update_id in sorted(expected, key=lambda e: e[2]):
            self.waiting[(key, category)].append((sent, update_id))
        self.total = len(expected)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.done_at: dict[int, float] = {}
        self.extra: dict[str, int] = defaultdict(int)
        self.sent_by_method: dict[str, int] = defaultdict(int)
        self.first_call = self.last_call = None

    @property
    def matched(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def feed(self, calls: list[list[Any]]) -> None:
        for at, method, chat_id, cbq_id, text in calls:
            self.sent_by_method[method] += 1
            if method == "answerCallbackQuery":
                key = (f"cbq:{cbq_id}", "callback")
            elif method == "sendMessage":
                category = classify(text)
                if chat_id in ADMINS or category in ("notify", "other"):
                    continue
                key = (f"chat:{chat_id}", category)
            else:
                continue
            queue = self.waiting.get(key)
            if not queue:
                self.extra[key[1]] += 1
                continue
            sent, update_id = queue.popleft()
            self.latencies[key[1]].append(at - sent)
            self.done_at[update_id] = max(self.done_at.get(update_id, 0.0), at)

    def unmatched(self) -> int:
        return sum(len(v) for v in self.waiting.values())


def load_plan(config: Config, url: str, out: str, duration: float, pool: list[list[int]]) -> dict:
    return {
        "url": f"{url}/webhook/telegram",
        "secret": SECRET,
        "duration": duration,
        "rate": config.rate,
        "out": out,
        "connections": 40,
        "seed": 7,
        "client_base": 100_000_000,
        "update_base": 1_000_000,
        "admins": list(ADMINS),
        "decision_pool": pool,
    }


async def one_run(
    config: Config,
    repeat: int,
    db: Database,
    fake: FakeApi,
    duration: float,
    drain: float,
    workdir: Path,
    profile: bool = False,
) -> dict[str, Any]:
    url = await db.copy(config.seeds)
    c = config
    tag = f"{c.system}-w{c.workers}-r{c.rate:g}-s{c.seeds}-{c.limits}-{repeat}"
    server = Server(
        config=config, env=server_env(url, fake.base_url), log_path=workdir / f"{tag}.log"
    )
    if profile:
        server.profile = str(workdir / f"profile-{tag}")
        server.sql_counts = str(workdir / f"sql-{tag}")
    result: dict[str, Any] = {"config": asdict(config), "label": config.label, "repeat": repeat}
    try:
        fake.reset()
        pg_before = await pg_snapshot(url)
        server.start(timeout=90)
        assert server.process is not None
        fake.new_calls()  # start-up calls (getMe, setWebhook) are not the load's
        procs = procstats.python_processes(server.process.pid)
        cpu_before = procstats.cpu_by_pid(procs)
        db_cpu_before = backend_cpu(await backend_pids(db.admin_dsn, url))
        fake_cpu_before = fake.cpu()

        plan_path = workdir / f"plan-{tag}.json"
        out_path = workdir / f"load-{tag}.json"
        plan = load_plan(config, server.url, str(out_path), duration, db.pending[config.seeds])
        plan_path.write_text(json.dumps(plan))
        load = await asyncio.create_subprocess_exec(
            python(), "-m", "bench.load", str(plan_path), cwd=ROOT
        )
        peak: dict[int, float] = {}
        while load.returncode is None:
            for p in procstats.python_processes(server.process.pid):
                peak[p.pid] = max(peak.get(p.pid, 0.0), p.peak_rss_mb)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(load.wait(), 0.5)
        if load.returncode != 0:
            raise RuntimeError(f"load generator failed with {load.returncode}")
        loaded = json.loads(out_path.read_text())
        load_end = loaded["wall_started"] + loaded["elapsed"]

        # Drain: until every expected effect reached the fake API (and, for the bot, every
        # stored update is processed), or `drain` seconds after the load ended.
        if config.system == "ceiling":  # answers and does nothing: no effect to wait for
            loaded["expected"] = []
        matcher = Matcher(loaded["expected"])
        deadline = time.monotonic() + drain
        inbox_left = 0
        while True:
            matcher.feed(fake.new_calls())
            if config.system == "sosekni":
                inbox_left = await Db(url).value(
                    "SELECT count(*) FROM inbox_update WHERE status IN ('new', 'processing')"
                )
            if (matcher.unmatched() == 0 and inbox_left == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        drained_at = time.time()
        await asyncio.sleep(0.3)
        matcher.feed(fake.new_calls())

        procs = procstats.python_processes(server.process.pid)
        for p in procs:
            peak[p.pid] = max(peak.get(p.pid, 0.0), p.peak_rss_mb)
        cpu = procstats.cpu_delta(cpu_before, procstats.cpu_by_pid(procs))
        db_cpu = procstats.cpu_delta(
            db_cpu_before, backend_cpu(await backend_pids(db.admin_dsn, url))
        )
        fake_cpu = fake.cpu() - fake_cpu_before
        bot_facts = await bot_state(url, loaded) if config.system == "sosekni" else {}
        main_pid = server.process.pid
        server.stop()
        await asyncio.sleep(0.5)  # exiting backends flush their statistics
        pg = pg_delta(pg_before, await pg_snapshot(url))
        result.update(
            summarize(config, loaded, load_end, drained_at, matcher, drain)
            | {
                "server_cpu_s": round(cpu, 3),
                "db_backend_cpu_s": round(db_cpu, 3),
                "fake_api_cpu_s": round(fake_cpu, 3),
                "peak_rss_mb_main": round(peak.get(main_pid, 0.0), 1),
                "peak_rss_mb_worker": round(
                    max((v for k, v in peak.items() if k != main_pid), default=0.0), 1
                ),
                "pg": pg,
            }
            | bot_facts
        )
        acked = result["acked"] or 1
        result["cpu_ms_per_update"] = round(cpu / acked * 1000, 3)
        result["cpu_s_per_1k_updates"] = round(cpu / acked * 1000, 3)
        result["db_cpu_s_per_1k_updates"] = round(db_cpu / acked * 1000, 3)
        for k in ("xact_commit", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated"):
            result[f"pg_{k}_per_update"] = round(pg["db"][k] / acked, 2)
        if profile:
            result["profiles"] = files(workdir, f"profile-{tag}-*.txt")
            result["sql_counts"] = files(workdir, f"sql-{tag}-*.json")
    finally:
        server.stop()
        await db.drop(url)
    return result


def files(folder: Path, pattern: str) -> list[str]:
    return sorted(str(p) for p in folder.glob(pattern))


async def bot_state(url: str, loaded: dict[str, Any]) -> dict[str, Any]:
    """What the bot stored: lost updates, failures, processing rate, the outbox backlog."""
    acked_ids = sorted({r[0] for r in loaded["records"] if r[5] == 200})
    conn = await asyncpg.connect(url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM inbox_update WHERE update_id = ANY($1::bigint[])", acked_ids
        )
        by_status = dict(
            await conn.fetch(
                "SELECT status, count(*) FROM inbox_update WHERE update_id = ANY($1::bigint[]) "
                "GROUP BY status",
                acked_ids,
            )
        )
        window = await conn.fetchrow(
            "SELECT min(received_at) AS first, max(processed_at) AS last, count(*) AS n "
            "FROM inbox_update WHERE update_id = ANY($1::bigint[]) AND status = 'done'",
            acked_ids,
        )
        outbox = dict(
            await conn.fetch(
                "SELECT status, count(*) FROM outbox_message WHERE created_at > now() - "
                "interval '1 hour' AND payload <> '{}' GROUP BY status"
            )
        )
    finally:
        await conn.close()
    span = (
        (window["last"] - window["first"]).total_seconds() if window["n"] and window["last"] else 0
    )
    return {
        "lost": len(acked_ids) - int(stored),
        "inbox": {k: int(v) for k, v in by_status.items()},
        "inbox_failed": int(by_status.get("failed", 0)),
        "inbox_processed_per_s": round(window["n"] / span, 1) if span > 0 else None,
        "outbox": {k: int(v) for k, v in outbox.items()},
    }


def summarize(
    config: Config,
    loaded: dict[str, Any],
    load_end: float,
    drained_at: float,
    matcher: Matcher,
    drain: float,
) -> dict[str, Any]:
    records = loaded["records"]
    statuses: dict[str, int] = defaultdict(int)
    for r in records:
        statuses[str(r[5])] += 1
    ok = [r for r in records if r[5] == 200]
    if records:
        span = max(r[4] for r in records) - min(r[3] for r in records)
    else:
        span = loaded["elapsed"]
    latency = [(r[4] - r[2]) * 1000 for r in ok]
    service = [(r[4] - r[3]) * 1000 for r in ok]
    kinds: dict[str, int] = defaultdict(int)
    for r in records:
        kinds[r[1]] += 1
    e2e = [v * 1000 for vs in matcher.latencies.values() for v in vs]
    unmatched = matcher.unmatched()
    e2e_all = e2e + [float("inf")] * unmatched
    by_category = {
        c: {
            "n": len(matcher.latencies[c]),
            "p50_ms": _ms(percentile([v * 1000 for v in matcher.latencies[c]], 50)),
            "p99_ms": _ms(percentile([v * 1000 for v in matcher.latencies[c]], 99)),
        }
        for c in LATENCY_CATEGORIES
    }
    tracked = {e[3] for e in loaded["expected"]}
    done = [t for u, t in matcher.done_at.items() if u in tracked]
    complete = len(tracked) - len({e[3] for e in loaded["expected"] if _open(e, matcher)})
    processed_span = (max(done) - loaded["wall_started"]) if done else 0
    return {
        "sent": len(records),
        "acked": len(ok),
        "statuses": dict(statuses),
        "errors": len(records) - len(ok),
        "kinds": dict(kinds),
        "load_s": round(span, 3),
        "offered_per_s": config.rate or None,
        "acked_per_s": round(len(ok) / span, 1) if span else None,
        "webhook_p50_ms": _ms(percentile(latency, 50)),
        "webhook_p95_ms": _ms(percentile(latency, 95)),
        "webhook_p99_ms": _ms(percentile(latency, 99)),
        "webhook_service_p99_ms": _ms(percentile(service, 99)),
        "e2e_expected": matcher.total,
        "e2e_matched": matcher.matched,
        "e2e_unmatched": unmatched,
        "e2e_p50_ms": _ms(percentile(e2e_all, 50)),
        "e2e_p99_ms": _ms(percentile(e2e_all, 99)),
        "e2e_by_category": by_category,
        "extra_messages": dict(matcher.extra),
        "sent_by_method": dict(matcher.sent_by_method),
        "tracked_updates": len(tracked),
        "tracked_complete": complete,
        "processed_per_s": round(complete / processed_span, 1) if processed_span > 0 else None,
        "drain_s": round(drained_at - load_end, 2),
        "drain_limit_s": drain,
    }


def _open(expected: list[Any], matcher: Matcher) -> bool:
    key = (expected[0], expected[1])
    return any(u == expected[3] for _, u in matcher.waiting.get(key, ()))


def _ms(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 2) if value != float("inf") else float("inf")


# ------------------------------------------------------------------------------- report


SUMMARY_KEYS = (
    "acked_per_s",
    "webhook_p50_ms",
    "webhook_p95_ms",
    "webhook_p99_ms",
    "processed_per_s",
    "inbox_processed_per_s",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "errors",
    "lost",
    "e2e_unmatched",
    "peak_rss_mb_worker",
    "peak_rss_mb_main",
    "cpu_s_per_1k_updates",
    "db_cpu_s_per_1k_updates",
    "fake_api_cpu_s",
    "pg_xact_commit_per_update",
    "pg_tup_returned_per_update",
    "pg_tup_fetched_per_update",
    "pg_tup_inserted_per_update",
    "pg_tup_updated_per_update",
)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median of each figure over the repeats of a configuration, and ratios to baselines."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[tuple(run["config"].values())].append(run)
    rows = []
    for _, group in groups.items():
        row: dict[str, Any] = {"config": group[0]["config"], "label": group[0]["label"]}
        row["repeats"] = len(group)
        for key in SUMMARY_KEYS:
            values = [r.get(key) for r in group]
            if any(v == float("inf") for v in values):
                finite = sorted(v if v is not None else float("inf") for v in values)
                row[key] = finite[len(finite) // 2]
            else:
                row[key] = median(values)
        row["errors_max"] = max((r.get("errors") or 0) for r in group)
        row["lost_max"] = max((r.get("lost") or 0) for r in group)
        rows.append(row)

    def find(system: str, workers: int | None, rate: float, seeds: int | None = None) -> Any:
        for r in rows:
            c = r["config"]
            if c["system"] == system and c["rate"] == rate:
                if (workers is None or c["workers"] == workers) and (
                    seeds is None or c["seeds"] == seeds
                ):
                    return r
        return None

    for row in rows:
        c = row["config"]
        ceiling = find("ceiling", c["workers"], c["rate"])
        peer = find("peer", None, c["rate"], c["seeds"]) or find("peer", None, c["rate"])
        row["ack_vs_ceiling"] = _ratio(row["acked_per_s"], ceiling and ceiling["acked_per_s"])
        row["processed_vs_peer"] = _ratio(row["processed_per_s"], peer and peer["processed_per_s"])
        row["cpu_vs_peer"] = _ratio(
            row["cpu_s_per_1k_updates"], peer and peer["cpu_s_per_1k_updates"]
        )
    return rows


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return None
    return round(a / b, 3)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if value == float("inf"):
        return "∞"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any], args: dict[str, Any]) -> str:
    lines = [
        f"Run {machine['when']} on {machine['cpu']} ({machine['nproc']} CPUs), "
        f"{machine['postgres']}; duration {args['duration']} s, drain ≤ {args['drain']} s, "
        f"repeats {args['repeats']} (medians).",
        "",
        "| configuration | acked/s | ×ceiling | webhook p50/p95/p99 ms | processed/s | ×peer "
        "| inbox done/s | e2e p50 / p99 ms (unmatched) | errors / lost | peak RSS MB worker "
        "(main) | CPU s/1k upd | DB CPU s/1k | xact/upd | tup ret/fetch/ins/upd per upd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"ceiling": 0, "peer": 1, "sosekni": 2}
    for r in sorted(
        rows,
        key=lambda r: (
            order.get(r["config"]["system"], 9),
            r["config"]["limits"],
            r["config"]["seeds"],
            r["config"]["workers"],
            -(r["config"]["rate"] or 1e9),
        ),
    ):
        lines.append(
            f"| {r['label']} | {fmt(r['acked_per_s'])} | {fmt(r['ack_vs_ceiling'], 3)} "
            f"| {fmt(r['webhook_p50_ms'])} / {fmt(r['webhook_p95_ms'])} / "
            f"{fmt(r['webhook_p99_ms'])} | {fmt(r['processed_per_s'])} "
            f"| {fmt(r['processed_vs_peer'], 3)} | {fmt(r['inbox_processed_per_s'])} "
            f"| {fmt(r['e2e_p50_ms'])} / {fmt(r['e2e_p99_ms'])} ({fmt(r['e2e_unmatched'], 0)}) "
            f"| {r['errors_max']} / {fmt(r['lost_max'])} "
            f"| {fmt(r['peak_rss_mb_worker'])} ({fmt(r['peak_rss_mb_main'])}) "
            f"| {fmt(r['cpu_s_per_1k_updates'], 2)} | {fmt(r['db_cpu_s_per_1k_updates'], 2)} "
            f"| {fmt(r['pg_xact_commit_per_update'], 2)} "
            f"| {fmt(r['pg_tup_returned_per_update'], 0)} / "
            f"{fmt(r['pg_tup_fetched_per_update'], 0)} / "
            f"{fmt(r['pg_tup_inserted_per_update'], 2)} / "
            f"{fmt(r['pg_tup_updated_per_update'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def machine_facts(admin_dsn: str) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    async def pg() -> tuple[str, str]:
        conn = await asyncpg.connect(admin_dsn)
        try:
            version = await conn.fetchval("SHOW server_version")
            preload = await conn.fetchval("SHOW shared_preload_libraries")
        finally:
            await conn.close()
        return version, preload

    version, preload = asyncio.run(pg())
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "postgres": f"PostgreSQL {version}",
        "pg_stat_statements": "pg_stat_statements" in (preload or ""),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------- main


PRESETS: dict[str, dict[str, Any]] = {
    # the full matrix of bench/README.md
    "full": {
        "matrix": [
            ("ceiling", [1, 2, 4], [200, 0], [1000], ["telegram"]),
            ("peer", [1], [200, 0], [1000], ["telegram"]),
            ("sosekni", [1, 2, 4], [200, 0], [1000], ["telegram"]),
            ("sosekni", [1], [200, 0], [10000, 100000], ["telegram"]),
            ("sosekni", [1, 2], [200, 0], [1000], ["lifted"]),
        ],
        "repeats": 3,
        "duration": 6.0,
        "drain": 10.0,
    },
    "quick": {
        "matrix": [
            ("ceiling", [1, 2], [200, 0], [1000], ["telegram"]),
            ("peer", [1], [200, 0], [1000], ["telegram"]),
            ("sosekni", [1, 2], [200, 0], [1000], ["telegram", "lifted"]),
        ],
        "repeats": 1,
        "duration": 5.0,
        "drain": 8.0,
    },
    # CI: about 10 seconds of load in all, every system once, so every ratio is computed
    "smoke": {
        "matrix": [
            ("ceiling", [1], [50], [100], ["telegram"]),
            ("peer", [1], [50], [100], ["telegram"]),
            ("sosekni", [1], [50], [100], ["telegram"]),
        ],
        "repeats": 1,
        "duration": 3.5,
        "drain": 8.0,
    },
}


def build_configs(args: argparse.Namespace) -> list[Config]:
    if args.systems:
        matrix = [
            (
                system,
                args.workers or [1],
                args.rates or [200],
                args.seeds or [1000],
                args.limits or ["telegram"],
            )
            for system in args.systems
        ]
    else:
        matrix = PRESETS[args.preset]["matrix"]
    configs = []
    for system, workers, rates, seeds, limits in matrix:
        for w, r, s, lim in itertools.product(workers, rates, seeds, limits):
            if system == "peer":
                w = 1  # run_webhook is one process
            config = Config(system, w, float(r), s, lim if system == "sosekni" else "telegram")
            if config not in configs:
                configs.append(config)
    return configs


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    preset = PRESETS[args.preset]
    duration = args.duration or preset["duration"]
    drain = args.drain or preset["drain"]
    repeats = args.repeats or preset["repeats"]
    configs = build_configs(args)
    workdir = Path(tempfile.mkdtemp(prefix="sosekni-bench-"))
    db = Database(args.pg, uuid.uuid4().hex[:6])
    fake = FakeApi()
    runs: list[dict[str, Any]] = []
    try:
        for repeat in range(repeats):  # repeats interleaved: drift hits every configuration
            for config in configs:
                print(f"[{repeat + 1}/{repeats}] {config.label} …", flush=True, file=sys.stderr)
                run = await one_run(config, repeat, db, fake, duration, drain, workdir)
                runs.append(run)
                print(
                    f"    acked/s {fmt(run['acked_per_s'])}  processed/s "
                    f"{fmt(run['processed_per_s'])}  e2e p99 {fmt(run['e2e_p99_ms'])} ms  "
                    f"errors {run['errors']}  lost {run.get('lost', '–')}",
                    flush=True,
                    file=sys.stderr,
                )
        profile = None
        if args.profile:
            config = Config("sosekni", 1, float(args.profile_rate), 1000, "lifted")
            print(f"profiling {config.label} …", file=sys.stderr, flush=True)
            profile = await one_run(config, 0, db, fake, duration, drain, workdir, profile=True)
    finally:
        fake.close()
        await db.drop_all()
    return {
        "runs": runs,
        "rows": aggregate(runs),
        "profile": profile,
        "args": {"duration": duration, "drain": drain, "repeats": repeats},
        "workdir": str(workdir),
        "db_tag": db.tag,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--systems", nargs="+", choices=["sosekni", "ceiling", "peer"])
    parser.add_argument("--workers", nargs="+", type=int)
    parser.add_argument("--rates", nargs="+", type=float, help="offered updates/s; 0 = full speed")
    parser.add_argument("--seeds", nargs="+", type=int, help="stored requests before the run")
    parser.add_argument("--limits", nargs="+", choices=["telegram", "lifted"])
    parser.add_argument("--duration", type=float, help="seconds of load per run")
    parser.add_argument("--drain", type=float, help="seconds to wait for effects after the load")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--profile", action="store_true", help="also profile one worker")
    parser.add_argument("--profile-rate", type=float, default=0, help="rate of the profiled run")
    parser.add_argument(
        "--pg",
        default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG,
        help="admin DSN of the Postgres server for the bench databases",
    )
    parser.add_argument("--out", type=Path, help="result file prefix (default bench/results/)")
    args = parser.parse_args(argv)
    machine = machine_facts(args.pg)
    report = asyncio.run(bench(args))
    report["machine"] = machine
    text = markdown(report["rows"], machine, report["args"])
    report["markdown"] = text
    prefix = args.out or RESULTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    md, raw = save(prefix, report, text)
    print(text)
    if report["profile"]:
        for path in report["profile"].get("profiles", []):
            print(f"profile: {path}")
        for path in report["profile"].get("sql_counts", []):
            print(f"SQL statement counts: {path}")
    print(f"results: {md} (raw: {raw})")
    return report


if __name__ == "__main__":
    main()
