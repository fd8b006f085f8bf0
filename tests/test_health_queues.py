"""`/health`'s queue checks: stuck work fails them, work waiting on Telegram does not.

A message Telegram keeps refusing waits in backoff for up to `DeliveryPolicy.max_age_s`;
`/health` going 503 for it would make every `deploy` roll back, though no release can fix
Telegram. The checks run in-process on a migrated database of each engine, with rows
written as the service writes them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sosekni.app import OUTBOX_STALE, _backlog, stale_queues
from sosekni.db import sql, utcnow
from tests.harness import on_database


def queue(url: str, *, created: timedelta, due_in: timedelta, status: str = "pending") -> None:
    """One outbox message queued `created` ago whose next try is `due_in` from now."""
    now = utcnow()
    on_database(
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
    found = on_database(url, _backlog)
    return found, stale_queues(found)


def test_an_old_message_waiting_out_telegrams_backoff_keeps_health_ok(migrated_url: str) -> None:
    queue(migrated_url, created=timedelta(hours=2), due_in=timedelta(minutes=4))
    found, failing = checks(migrated_url)
    assert found["outbox"]["backlog"] == 1
    assert found["outbox"]["oldest_age_seconds"] > 7000
    assert found["outbox"]["overdue_seconds"] == 0.0
    assert failing == []


def test_a_message_due_long_ago_that_nobody_sent_fails_the_outbox_check(migrated_url: str) -> None:
    late = OUTBOX_STALE + timedelta(minutes=1)
    queue(migrated_url, created=late, due_in=-late)
    found, failing = checks(migrated_url)
    assert found["outbox"]["overdue_seconds"] > OUTBOX_STALE.total_seconds()
    assert failing == ["outbox"]


def test_a_message_due_a_moment_ago_is_not_stuck(migrated_url: str) -> None:
    queue(migrated_url, created=timedelta(hours=1), due_in=-timedelta(seconds=30))
    assert checks(migrated_url)[1] == []
