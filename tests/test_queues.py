"""`sosekni-ops outbox …` and `inbox …`: the operator's view of stuck and failed work.

The commands run in-process through Typer's `CliRunner` against a migrated database of each
engine; rows are written and read with the application's own SQL. That the running sender
sends a retried message is shown in tests/test_sender.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ops.cli import app
from sosekni.db import sql
from sosekni.standin import FakeTelegram
from tests.harness import BotServer, Db, base_env, kept_logging, on_database

NOW = datetime.now(UTC)
HOUR = timedelta(hours=1)
MARKUP = "[bold]Anna[/bold] [/x] [link=https://evil.example/]here[/link]"
COMMANDS = [
    ("outbox",), ("outbox", "list"), ("outbox", "retry"),
    ("inbox",), ("inbox", "list"), ("inbox", "retry"),
]  # fmt: skip


def rows(url: str, table: str) -> list[dict[str, Any]]:
    return on_database(url, lambda: sql(f"SELECT * FROM {table} ORDER BY id"))


def add_message(
    url: str, status: str, *, chat_id: int = 4001, attempts: int = 0, age: timedelta = HOUR,
    error: str | None = None, locked_for: timedelta | None = None,
) -> int:  # fmt: skip
    async def insert() -> int:
        found = await sql(
            "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, attempts, "
            "claim_token, locked_until, next_attempt_at, last_error, created_at) VALUES "
            "('sendMessage', {}, {}, 'reply', {}, {}, {}, {}, {}, {}, {}) RETURNING id",
            chat_id,
            '{"text": "hi"}',
            status,
            attempts,
            "token" if locked_for is not None else None,
            None if locked_for is None else NOW + locked_for,
            NOW + HOUR,
            error,
            NOW - age,
        )
        return int(found[0]["id"])

    return on_database(url, insert)


def add_update(url: str, update_id: int, status: str, error: str | None = None) -> int:
    async def insert() -> int:
        found = await sql(
            "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, attempts, "
            "next_attempt_at, error, received_at, processed_at) VALUES "
            "({}, 'message', 4001, {}, {}, 5, {}, {}, {}, {}) RETURNING id",
            update_id,
            "{}",
            status,
            NOW + HOUR,
            error,
            NOW - 2 * HOUR,
            NOW if status in ("failed", "done") else None,
        )
        return int(found[0]["id"])

    return on_database(url, insert)


@pytest.fixture
def url(migrated_url: str) -> str:
    return migrated_url


@pytest.fixture
def ops(url: str) -> Iterator[Callable[..., Result]]:
    """`sosekni-ops ARGS` in-process on `url`; the logging it configures is undone after."""
    env = base_env(url, "http://127.0.0.1:9", COLUMNS="200")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    with kept_logging():
        yield invoke


def body(result: Result) -> list[list[str]]:
    """The body rows of the printed table, as cells."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]


def one_red_line(result: Result, text: str) -> None:
    assert result.exit_code == 1
    assert result.stderr == f"error: {text}\n"


# ----------------------------------------------------------------------------- list


def test_outbox_list_shows_open_work_oldest_first_with_age_and_error(
    url: str, ops: Callable[..., Result]
) -> None:
    first = add_message(url, "sending", attempts=1, age=3 * HOUR, locked_for=HOUR)
    later = add_message(url, "pending", chat_id=4002, attempts=3, age=HOUR, error="x (500)")
    add_message(url, "sent")
    add_message(url, "failed", error="Forbidden")

    result = ops("outbox", "list")

    assert result.exit_code == 0, result.output
    assert body(result) == [
        [str(first), "sending", "sendMessage", "4001", "1", "3h", ""],
        [str(later), "pending", "sendMessage", "4002", "3", "1h", "x (500)"],
    ]
    assert "2 of 2 open message(s) shown" in result.stdout


def test_list_failed_prints_stored_text_as_plain_text_clipped_newest_first(
    url: str, ops: Callable[..., Result]
) -> None:
    older = add_message(url, "failed", attempts=20, error=MARKUP)
    newer = add_message(url, "failed", attempts=20, error="BadRequest: " + "long " * 40)
    add_message(url, "pending")

    result = ops("outbox", "list", "--failed")

    assert result.exit_code == 0, result.output
    (top, bottom) = body(result)
    assert top[0] == str(newer) and top[6].endswith("…") and len(top[6]) == 80
    assert bottom == [str(older), "failed", "sendMessage", "4001", "20", "1h", MARKUP]
    assert "2 of 2 failed message(s) shown" in result.stdout


def test_list_is_bounded_by_limit_and_still_counts_every_row(
    url: str, ops: Callable[..., Result]
) -> None:
    for _ in range(3):
        add_message(url, "pending")

    result = ops("outbox", "list", "--limit", "2")

    assert result.exit_code == 0, result.output
    assert len(body(result)) == 2
    assert "2 of 3 open message(s) shown" in result.stdout


def test_inbox_list_shows_waiting_updates_and_with_failed_the_failed_ones(
    url: str, ops: Callable[..., Result]
) -> None:
    waiting = add_update(url, 900, "new", error="ValueError: once")
    failed = add_update(url, 901, "failed", error="AssertionError: [red]boom")
    add_update(url, 902, "done")

    open_ = ops("inbox", "list")
    gone = ops("inbox", "list", "--failed")

    assert body(open_) == [[str(waiting), "new", "message", "4001", "5", "2h", "ValueError: once"]]
    assert "1 of 1 open update(s) shown" in open_.stdout
    assert body(gone) == [
        [str(failed), "failed", "message", "4001", "5", "2h", "AssertionError: [red]boom"]
    ]


# ----------------------------------------------------------------------------- retry


def test_outbox_retry_id_makes_a_failed_message_due_now_with_attempts_reset(
    url: str, ops: Callable[..., Result]
) -> None:
    target = add_message(url, "failed", attempts=20, error="gave up")
    other = add_message(url, "failed", attempts=20, error="gave up")

    result = ops("outbox", "retry", str(target))

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"outbox message {target} queued again; the running service sends it\n"
    )
    found = {r["id"]: r for r in rows(url, "outbox_message")}
    assert (found[target]["status"], found[target]["attempts"]) == ("pending", 0)
    assert found[target]["claim_token"] is None
    due = found[target]["next_attempt_at"]
    due = datetime.fromisoformat(due) if isinstance(due, str) else due
    assert due.replace(tzinfo=due.tzinfo or UTC) <= datetime.now(UTC)
    assert (found[other]["status"], found[other]["attempts"]) == ("failed", 20)


def test_retry_failed_requeues_every_failed_row_and_nothing_else(
    url: str, ops: Callable[..., Result]
) -> None:
    failed = [add_message(url, "failed", attempts=20) for _ in range(2)]
    sent = add_message(url, "sent", attempts=1)
    update = add_update(url, 900, "failed")
    add_update(url, 901, "done")

    outbox = ops("outbox", "retry", "--failed")
    inbox = ops("inbox", "retry", "--failed")

    assert outbox.stdout == "2 failed message(s) queued again; the running service sends it\n"
    assert inbox.stdout == "1 failed update(s) queued again; the running service processes it\n"
    statuses = {r["id"]: (r["status"], r["attempts"]) for r in rows(url, "outbox_message")}
    assert statuses == {failed[0]: ("pending", 0), failed[1]: ("pending", 0), sent: ("sent", 1)}
    updates = {r["id"]: r for r in rows(url, "inbox_update")}
    assert (updates[update]["status"], updates[update]["attempts"]) == ("new", 0)
    assert updates[update]["processed_at"] is None
    assert [r["status"] for r in updates.values()] == ["new", "done"]


def test_retry_of_an_unknown_id_is_one_red_line_and_changes_nothing(
    url: str, ops: Callable[..., Result]
) -> None:
    add_message(url, "failed", attempts=20)
    add_update(url, 900, "failed")
    before = (rows(url, "outbox_message"), rows(url, "inbox_update"))

    one_red_line(ops("outbox", "retry", "999"), "no outbox message with id 999")
    one_red_line(ops("inbox", "retry", "999"), "no inbox update with id 999")

    assert (rows(url, "outbox_message"), rows(url, "inbox_update")) == before


@pytest.mark.parametrize("args", [(), ("1", "--failed")], ids=["neither", "both"])
@pytest.mark.parametrize("queue", ["outbox", "inbox"])
def test_retry_needs_exactly_one_of_id_or_failed(
    url: str, ops: Callable[..., Result], queue: str, args: tuple[str, ...]
) -> None:
    add_message(url, "failed", attempts=20)
    add_update(url, 900, "failed")
    before = (rows(url, "outbox_message"), rows(url, "inbox_update"))

    one_red_line(ops(queue, "retry", *args), "give exactly one of ID or --failed")

    assert (rows(url, "outbox_message"), rows(url, "inbox_update")) == before


def test_retry_refuses_a_finished_row_and_one_held_under_a_live_lease(
    url: str, ops: Callable[..., Result]
) -> None:
    sent = add_message(url, "sent", attempts=1)
    held = add_message(url, "sending", attempts=1, locked_for=HOUR)
    abandoned = add_message(url, "sending", attempts=1, locked_for=-HOUR)
    done = add_update(url, 900, "done")
    before = rows(url, "outbox_message")

    one_red_line(
        ops("outbox", "retry", str(sent)),
        f"outbox message {sent} was sent already: nothing to retry",
    )
    one_red_line(
        ops("outbox", "retry", str(held)),
        f"outbox message {held} is being sent right now: nothing to retry",
    )
    one_red_line(
        ops("inbox", "retry", str(done)),
        f"inbox update {done} was processed already: nothing to retry",
    )
    assert rows(url, "outbox_message") == before

    assert ops("outbox", "retry", str(abandoned)).exit_code == 0  # its worker is gone
    found = {r["id"]: r["status"] for r in rows(url, "outbox_message")}
    assert found == {sent: "sent", held: "sending", abandoned: "pending"}


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_queue_command_has_help_with_an_example(
    url: str, ops: Callable[..., Result], args: tuple[str, ...]
) -> None:
    result = ops(*args, "--help")
    assert result.exit_code == 0, result.output
    assert f"sosekni-ops {' '.join(args)}" in result.stdout
    assert "Example" in result.stdout


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def backend() -> str:
    """The running bot below needs one engine: the sender's look is the same on both."""
    return "sqlite"


async def test_a_running_service_sends_a_message_the_operator_retries(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    _, db, telegram = bot
    await db.fetch(
        "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, attempts, "
        "next_attempt_at, last_error, created_at) VALUES ('sendMessage', 4001, {}, 'reply', "
        "'failed', 20, {}, 'gave up', {})",
        '{"text": "at last"}',
        NOW.isoformat(),
        NOW.isoformat(),
    )
    (row_id,) = [r["id"] for r in await db.fetch("SELECT id FROM outbox_message")]
    env = base_env(db.url, telegram.base_url)
    with kept_logging():
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["outbox", "retry", str(row_id)], env=env
        )
    assert result.exit_code == 0, result.output

    await telegram.wait_for_async(lambda t: t.sent_texts(4001) == ["at last"])
    await db.settle()
    assert await db.value("SELECT status FROM outbox_message WHERE id = {}", row_id) == "sent"
