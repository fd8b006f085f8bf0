"""Retention: finished delivery bookkeeping is deleted after its period, the audit record never.

In-process on both engines: the settings through `load_settings`, the deletes called with
an injected `now` on a migrated database, `sosekni-ops prune` through Typer's CliRunner,
and the worker's runtime (inbox, sender, retention loop) started in this event loop
against the fake Bot API, to show that the service prunes by itself and that /metrics
totals do not go backwards when rows are deleted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from piccolo.engine.base import Engine
from telegram import Update
from typer.testing import CliRunner

from ops.cli import app as ops_app
from sosekni import migrations
from sosekni.config import ConfigError, load_settings
from sosekni.db import bind, current_engine, sql, utcnow
from sosekni.delivery import inbox
from sosekni.delivery.retention import Retention, prune
from sosekni.metrics import Metrics
from sosekni.metrics import use as use_metrics
from sosekni.runtime import Runtime
from sosekni.standin import FakeTelegram
from tests.harness import SECRET, TOKEN, message, next_id, user

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DEFAULTS = Retention(inbox=7 * DAY, outbox=30 * DAY)
PREVIOUS_MIGRATION = "2026-11-29T16:00:00:000000"  # the one before finished_row_indexes
FINISHED_INDEXES = {"inbox_update_finished", "outbox_message_finished"}


@dataclass
class Database:
    url: str
    engine: Engine


@pytest.fixture
def database(bound_database: str) -> Database:
    """A migrated database of its own, bound (and pooled on Postgres) in this event loop."""
    return Database(bound_database, current_engine())


# ----------------------------------------------------------------------------- rows


async def inbox_row(
    status: str, received: datetime, processed: datetime | None = None, chat_id: int = 1
) -> int:
    rows = await sql(
        "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, attempts, "
        "next_attempt_at, received_at, processed_at) VALUES ({}, 'message', {}, {}, {}, 1, "
        "{}, {}, {}) RETURNING id",
        next_id(),
        chat_id,
        json.dumps({"update_id": 0, "message": {"text": "personal data"}}),
        status,
        received,
        received,
        processed,
    )
    return int(rows[0]["id"])


async def outbox_row(status: str, created: datetime, sent: datetime | None = None) -> int:
    rows = await sql(
        "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, attempts, "
        "next_attempt_at, created_at, sent_at) VALUES ('sendMessage', 1, {}, 'reply', {}, 1, "
        "{}, {}, {}) RETURNING id",
        json.dumps({"text": "Welcome, Anna"}),
        status,
        created,
        created,
        sent,
    )
    return int(rows[0]["id"])


async def audit_rows(at: datetime) -> None:
    """A decided request, its administrator and a copy of its card, all long past."""
    await sql(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "VALUES (7001, 'Olga', {}, {}, {})",
        True,
        at,
        at,
    )
    rows = await sql(
        "INSERT INTO client_request (client_telegram_id, client_first_name, client_language, "
        "text, status, submitted_at, admin_telegram_id, admin_name, response, responded_at, "
        "created_at, updated_at) VALUES (42, 'Anna', 'en', 'Plot 42', 'approved', {}, 7001, "
        "'Olga', 'approved', {}, {}, {}) RETURNING id",
        at,
        at,
        at,
        at,
    )
    await sql(
        "INSERT INTO admin_notification (request_id, admin_telegram_id, chat_id, message_id, "
        "created_at) VALUES ({}, 7001, 7001, 5, {})",
        rows[0]["id"],
        at,
    )


async def ids(table: str) -> set[int]:
    return {int(r["id"]) for r in await sql(f"SELECT id FROM {table}")}


async def count(table: str) -> int:
    return int((await sql(f"SELECT count(*) AS n FROM {table}"))[0]["n"])


# ----------------------------------------------------------------------------- settings


def settings_env(**extra: str) -> dict[str, str]:
    return {"ADMIN_TELEGRAM_ID": "1", **extra}


def test_retention_defaults_to_seven_and_thirty_days() -> None:
    settings = load_settings(settings_env())
    assert (settings.inbox_retention_days, settings.outbox_retention_days) == (7, 30)
    assert Retention.of(settings) == DEFAULTS
    custom = load_settings(settings_env(INBOX_RETENTION_DAYS="2", OUTBOX_RETENTION_DAYS="90"))
    assert Retention.of(custom) == Retention(inbox=2 * DAY, outbox=90 * DAY)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("INBOX_RETENTION_DAYS", "1", "at least 2"),
        ("INBOX_RETENTION_DAYS", "1.9", "Telegram redelivers updates for up to 24 hours"),
        ("INBOX_RETENTION_DAYS", "0", "at least 2"),
        ("INBOX_RETENTION_DAYS", "a week", "a number of days"),
        ("OUTBOX_RETENTION_DAYS", "0", "at least 1"),
        ("OUTBOX_RETENTION_DAYS", "-5", "at least 1"),
        ("OUTBOX_RETENTION_DAYS", "nan", "at least 1"),
        ("OUTBOX_RETENTION_DAYS", "thirty", "a number of days"),
    ],
)
def test_a_retention_too_short_or_not_a_number_is_refused_naming_the_variable(
    name: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(settings_env(**{name: value}))
    text = str(refused.value)
    assert text.startswith(name) and says in text
    assert "\n" not in text


# ----------------------------------------------------------------------------- deletes


async def test_prune_deletes_finished_rows_past_their_retention_and_nothing_else(
    database: Database,
) -> None:
    gone = {
        "inbox_update": {
            await inbox_row("done", NOW - 10 * DAY, NOW - 10 * DAY),
            await inbox_row("failed", NOW - 8 * DAY, NOW - 8 * DAY),
            await inbox_row("done", NOW - 9 * DAY, None),  # no processed_at: received counts
        },
        "outbox_message": {
            await outbox_row("sent", NOW - 40 * DAY, NOW - 40 * DAY),
            await outbox_row("failed", NOW - 31 * DAY),
            await outbox_row("dropped", NOW - 35 * DAY),
        },
    }
    kept = {
        "inbox_update": {
            await inbox_row("done", NOW - 6 * DAY, NOW - 6 * DAY),  # within its retention
            await inbox_row("done", NOW - 10 * DAY, NOW - 3 * DAY),  # finished recently
            await inbox_row("new", NOW - 30 * DAY),  # open rows are work, whatever their age
            await inbox_row("processing", NOW - 30 * DAY),
        },
        "outbox_message": {
            await outbox_row("sent", NOW - 40 * DAY, NOW - 20 * DAY),  # sent recently
            await outbox_row("sent", NOW - 10 * DAY, NOW - 10 * DAY),
            await outbox_row("pending", NOW - 60 * DAY),
            await outbox_row("sending", NOW - 60 * DAY),
        },
    }
    await audit_rows(NOW - 400 * DAY)

    deleted = await prune(DEFAULTS, NOW)

    assert deleted == {"inbox_update": 3, "outbox_message": 3}
    for table in ("inbox_update", "outbox_message"):
        assert await ids(table) == kept[table]
        assert not await ids(table) & gone[table]
    for table in ("client_request", "administrator", "admin_notification"):
        assert await count(table) == 1, f"{table} is the audit record"
    assert await prune(DEFAULTS, NOW) == {"inbox_update": 0, "outbox_message": 0}


async def test_a_dry_run_counts_what_would_go_and_deletes_nothing(database: Database) -> None:
    for days in (8, 9, 10):
        await inbox_row("done", NOW - days * DAY, NOW - days * DAY)
    await inbox_row("done", NOW - DAY, NOW - DAY)
    await outbox_row("sent", NOW - 31 * DAY, NOW - 31 * DAY)

    found = await prune(DEFAULTS, NOW, dry_run=True)

    assert found == {"inbox_update": 3, "outbox_message": 1}
    assert (await count("inbox_update"), await count("outbox_message")) == (4, 1)


async def test_rows_go_in_batches_with_progress_and_a_stop_ends_it_between_batches(
    database: Database,
) -> None:
    for n in range(7):
        await inbox_row("done", NOW - (10 + n) * DAY, NOW - (10 + n) * DAY, chat_id=n)
    seen: list[tuple[str, int]] = []

    deleted = await prune(DEFAULTS, NOW, batch=3, progress=lambda t, n: seen.append((t, n)))

    assert deleted == {"inbox_update": 7, "outbox_message": 0}
    assert seen == [
        ("inbox_update", 3),
        ("inbox_update", 6),
        ("inbox_update", 7),
        ("outbox_message", 0),
    ]

    for _ in range(7):
        await inbox_row("done", NOW - 10 * DAY, NOW - 10 * DAY)
    stopping = asyncio.Event()
    stopped = await prune(
        DEFAULTS, NOW, batch=3, progress=lambda t, n: stopping.set(), stopping=stopping
    )
    assert stopped == {"inbox_update": 3, "outbox_message": 0}
    assert await count("inbox_update") == 4  # left for the next run


async def test_the_migration_adds_the_finished_row_indexes_and_takes_them_back(
    database: Database,
) -> None:
    async def indexes() -> set[str]:
        if database.url.startswith("sqlite:"):
            rows = await sql("SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            rows = await sql("SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'")
        return {r["name"] for r in rows}

    assert FINISHED_INDEXES <= await indexes()
    await migrations.backwards_to(PREVIOUS_MIGRATION)
    assert not FINISHED_INDEXES & await indexes()
    await migrations.forwards()
    assert FINISHED_INDEXES <= await indexes()
    await inbox_row("done", NOW - 10 * DAY, NOW - 10 * DAY)
    assert await prune(DEFAULTS, NOW) == {"inbox_update": 1, "outbox_message": 0}


# ----------------------------------------------------------------------------- the CLI


def cli_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "SOSEKNI_ENV_FILE": "/nonexistent/.env",
        "ADMIN_TELEGRAM_ID": "",
        "LOG_LEVEL": "INFO",
        **extra,
    }


async def run_cli(database: Database, *args: str, **env: str) -> Any:
    """`sosekni-ops ARGS` in a thread of this process (it runs its own event loop)."""
    result = await asyncio.to_thread(
        CliRunner().invoke, ops_app, list(args), env=cli_env(database.url, **env)
    )
    bind(database.engine)  # the command bound its own engine
    return result


async def test_ops_prune_reports_and_deletes_what_is_past_retention(database: Database) -> None:
    now = utcnow()  # the command reads the clock: rows are placed around its cutoffs
    await inbox_row("done", now - 10 * DAY, now - 10 * DAY)
    await inbox_row("failed", now - 9 * DAY, now - 9 * DAY)
    await inbox_row("done", now - DAY, now - DAY)
    await outbox_row("sent", now - 45 * DAY, now - 45 * DAY)
    await outbox_row("sent", now - DAY, now - DAY)
    await audit_rows(now - 400 * DAY)

    dry = await run_cli(database, "prune", "--dry-run")

    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert lines[0].startswith("inbox_update: 2 row(s) would be deleted (finished before ")
    assert lines[1].startswith("outbox_message: 1 row(s) would be deleted (finished before ")
    assert (await count("inbox_update"), await count("outbox_message")) == (3, 2)

    done = await run_cli(database, "prune")

    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0].startswith("inbox_update: 2 row(s) deleted (finished before ")
    assert lines[1].startswith("outbox_message: 1 row(s) deleted (finished before ")
    assert (await count("inbox_update"), await count("outbox_message")) == (1, 1)
    assert await count("client_request") == 1

    again = await run_cli(database, "prune", "--dry-run")
    assert again.output.startswith("inbox_update: 0 row(s) would be deleted")


async def test_ops_prune_refuses_a_retention_under_two_days_and_deletes_nothing(
    database: Database,
) -> None:
    await inbox_row("done", utcnow() - 10 * DAY, utcnow() - 10 * DAY)

    refused = await run_cli(database, "prune", INBOX_RETENTION_DAYS="1")

    assert refused.exit_code == 1
    assert refused.output.startswith("error: INBOX_RETENTION_DAYS must be at least 2")
    assert len(refused.output.strip().splitlines()) == 1
    assert await count("inbox_update") == 1


# ----------------------------------------------------------------------------- the service


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Wait for a condition the running loops bring about (a deadline, not a timing)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}"
        await asyncio.sleep(0.02)


def values(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text scrape, by name."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            found[name] = float(value)
    return found


async def store(update: dict[str, Any]) -> None:
    """What the webhook does with an update it accepts."""
    payload, data = inbox.parse(json.dumps(update))
    kind, chat_id = inbox.describe(Update.de_json(data, None), data)
    assert await inbox.store(data["update_id"], payload, kind, chat_id)


async def test_the_service_prunes_by_itself_and_metric_totals_survive_the_prune(
    database: Database, telegram: FakeTelegram
) -> None:
    old = utcnow() - 60 * DAY
    stale = {await inbox_row("done", old, old), await inbox_row("failed", old, old)}
    stale_out = {await outbox_row("sent", old, old)}
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "WEBHOOK_SECRET": SECRET,
            "ADMIN_TELEGRAM_ID": "7001",
            "DATABASE_URL": database.url,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
        }
    )
    metrics: Metrics = use_metrics()  # a fresh array: this process's counters from zero
    runtime = Runtime(settings)
    await runtime.start()
    try:
        # The retention loop runs once the worker is ready, then hourly.
        async def pruned() -> bool:
            left = await ids("inbox_update") | await ids("outbox_message")
            return not left & (stale | stale_out)

        await until(pruned, "the service deleted the rows past their retention")

        for _ in range(3):
            await store(message(user(next_id()), "/start"))

        async def all_done() -> bool:
            seen = values(await metrics.render())
            return (
                seen["sosekni_updates_processed_total"] == 3
                and seen["sosekni_messages_sent_total"] == 3
            )

        await until(all_done, "three updates processed and three replies sent")
        before = values(await metrics.render())
        assert before["sosekni_updates_pending"] == before["sosekni_messages_pending"] == 0

        assert await prune(DEFAULTS, utcnow() + 60 * DAY) == {
            "inbox_update": 3,
            "outbox_message": 3,
        }
        after = values(await metrics.render())
    finally:
        await runtime.stop()
        bind(database.engine)  # the runtime bound (and closed) an engine of its own

    for total in (
        "sosekni_updates_processed_total",
        "sosekni_updates_failed_total",
        "sosekni_messages_sent_total",
        "sosekni_messages_failed_total",
    ):
        assert after[total] == before[total], total
    assert after["sosekni_updates_processed_total"] == 3
    assert after["sosekni_messages_sent_total"] == 3
    assert after["sosekni_updates_pending"] == after["sosekni_messages_pending"] == 0
    assert (await count("inbox_update"), await count("outbox_message")) == (0, 0)


def test_ops_prune_help_shows_usage_and_an_example() -> None:
    shown = CliRunner().invoke(ops_app, ["prune", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "Usage: sosekni-ops prune [OPTIONS]" in shown.output
    assert "--dry-run" in shown.output
    assert "Examples: sosekni-ops prune --dry-run" in shown.output


async def test_ops_prune_on_a_database_never_migrated_says_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    # In a thread: the command runs an event loop of its own.
    refused = await asyncio.to_thread(CliRunner().invoke, ops_app, ["prune"], env=cli_env(url))
    assert refused.exit_code == 1
    assert (
        refused.output
        == f"error: the database at {url} is not migrated: run `sosekni-ops migrate`\n"
    )
