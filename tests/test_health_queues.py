"""`/health`'s queue checks: stuck work fails them, work waiting on Telegram does not.

A message Telegram keeps refusing waits in backoff for up to `DeliveryPolicy.max_age_s`;
`/health` going 503 for it would make every `deploy` roll back, though no release can fix
Telegram. The checks run in-process on a migrated database of each engine, with rows
written as the service writes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sosekni import migrations
from sosekni.app import OUTBOX_STALE, _backlog, stale_queues
from sosekni.db import sql, utcnow
from tests.fakes.postgres import create_database, drop_database
from tests.test_queues import run


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path, postgres_admin_dsn: str) -> Iterator[str]:
    found = (
        f"sqlite:///{tmp_path / 'bot.db'}"
        if request.param == "sqlite"
        else create_database(postgres_admin_dsn)
    )
    run(found, migrations.forwards)
    yield found
    if request.param == "postgres":
        drop_database(postgres_admin_dsn, found)


def queue(url: str, *, created: timedelta, due_in: timedelta, status: str = "pending") -> None:
    """One outbox message queued `created` ago whose next try is `due_in` from now."""
    now = utcnow()
    run(
        url,
        lambda: sql(
            "INSERT INTO outbox_message (method, chat_id, payload, purpose, status, attempts, "
            "next_attempt_at, created_at) VALUES ('sendMessage', 7001, {}, 'reply', {}, 3, {}, {})",
            '{"text": "hi"}',
            status,
            now + due_in,
            now - created,
        ),
    )


def checks(url: str) -> tuple[dict[str, Any], list[str]]:
    found = run(url, _backlog)
    return found, stale_queues(found)


def test_an_old_message_waiting_out_telegrams_backoff_keeps_health_ok(url: str) -> None:
    queue(url, created=timedelta(hours=2), due_in=timedelta(minutes=4))
    found, failing = checks(url)
    assert found["outbox"]["backlog"] == 1
    assert found["outbox"]["oldest_age_seconds"] > 7000
    assert found["outbox"]["overdue_seconds"] == 0.0
    assert failing == []


def test_a_message_due_long_ago_that_nobody_sent_fails_the_outbox_check(url: str) -> None:
    late = OUTBOX_STALE + timedelta(minutes=1)
    queue(url, created=late, due_in=-late)
    found, failing = checks(url)
    assert found["outbox"]["overdue_seconds"] > OUTBOX_STALE.total_seconds()
    assert failing == ["outbox"]


def test_a_message_due_a_moment_ago_is_not_stuck(url: str) -> None:
    queue(url, created=timedelta(hours=1), due_in=-timedelta(seconds=30))
    assert checks(url)[1] == []
