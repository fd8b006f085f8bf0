"""ADMIN_TELEGRAM_ID is the truth for the administrators it lists; the operator keeps theirs.

`admins.seed` is what every start runs (each server worker, `poll`): it is called here
directly, with different lists standing for restarts with a changed ADMIN_TELEGRAM_ID, on a
database migrated by the real migrations, on SQLite and on Postgres.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from sosekni import migrations
from sosekni.db import sql
from sosekni.services import admins, requests
from sosekni.services.requests import Answer, Decided, Person, Submitted

BEFORE_SOURCE = "2026-11-29T16:00:00:000000"  # the migration just before `source` came


@pytest.fixture
def database(bound_database: str) -> str:
    """A migrated database of either engine, bound as the services' engine."""
    return bound_database


def person(telegram_id: int, name: str = "Olga") -> Person:
    return Person(telegram_id=telegram_id, first_name=name, username=None, language="en")


async def states() -> dict[int, tuple[bool, str]]:
    """Each administrator's (active, source)."""
    return {a.telegram_id: (a.active, a.source) for a in await admins.list_all()}


def revocations(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "no longer in ADMIN_TELEGRAM_ID" in r.getMessage()
    ]


async def test_an_id_removed_from_the_list_is_deactivated_at_start_with_a_warning(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await admins.seed((501, 502)) == [501, 502]

    with caplog.at_level(logging.WARNING, logger="sosekni.services.admins"):
        assert await admins.seed((501,)) == []

    assert await states() == {501: (True, "config"), 502: (False, "config")}
    (line,) = revocations(caplog)
    assert "502" in line and "501" not in line
    # A second start with the same list changes nothing and warns about nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sosekni.services.admins"):
        await admins.seed((501,))
    assert revocations(caplog) == []
    assert await states() == {501: (True, "config"), 502: (False, "config")}


async def test_a_removed_administrators_tap_is_not_authorized_after_restart(
    database: str,
) -> None:
    await admins.seed((501, 502))
    outcome, request_id = await requests.submit(person(1001, "Anna"), 1001, "Plot 42", "en")
    assert outcome is Submitted.CREATED and request_id is not None

    await admins.seed((501,))  # the restart with 502 taken out of ADMIN_TELEGRAM_ID
    refused = await requests.decide(person(502), request_id, "approved", Answer(502, "q1"), "en")

    assert refused is Decided.NOT_AUTHORIZED
    (row,) = await sql("SELECT status, admin_telegram_id FROM client_request")
    assert (row["status"], row["admin_telegram_id"]) == ("pending", None)
    decided = await requests.decide(person(501), request_id, "approved", Answer(501, "q2"), "en")
    assert decided is Decided.DECIDED


async def test_an_administrator_added_with_the_cli_stays_whatever_the_list_says(
    database: str,
) -> None:
    await admins.seed((501,))
    await admins.add(777, "Ivan")
    await admins.add(501)  # a listed one the operator also adds: now the operator's

    await admins.seed((502,))

    assert await states() == {501: (True, "cli"), 777: (True, "cli"), 502: (True, "config")}
    assert await admins.is_active(777)
    assert await admins.deactivate(777)
    await admins.seed((502,))
    assert await states() == {501: (True, "cli"), 777: (False, "cli"), 502: (True, "config")}


async def test_an_administrator_the_operator_deactivated_stays_deactivated_while_listed(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    await admins.seed((501, 502))
    assert await admins.deactivate(502)

    with caplog.at_level(logging.WARNING, logger="sosekni.services.admins"):
        await admins.seed((501, 502))

    assert await states() == {501: (True, "config"), 502: (False, "cli")}
    assert any("in ADMIN_TELEGRAM_ID but deactivated" in r.getMessage() for r in caplog.records)
    await admins.add(502)
    assert await states() == {501: (True, "config"), 502: (True, "cli")}


async def test_an_id_listed_again_is_active_again(database: str) -> None:
    await admins.seed((501, 502))
    await admins.seed((501,))

    await admins.seed((501, 502))

    assert await states() == {501: (True, "config"), 502: (True, "config")}


async def test_workers_starting_together_revoke_once_and_log_once(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    await admins.seed((501, 502, 503))

    with caplog.at_level(logging.WARNING, logger="sosekni.services.admins"):
        await asyncio.gather(*(admins.seed((501,)) for _ in range(4)))

    assert await states() == {
        501: (True, "config"),
        502: (False, "config"),
        503: (False, "config"),
    }
    # "administrator 502 is no longer in ADMIN_TELEGRAM_ID: …": once per revoked id.
    assert sorted(int(line.split()[1]) for line in revocations(caplog)) == [502, 503]


async def test_the_migration_marks_existing_administrators_by_their_state(database: str) -> None:
    await migrations.backwards_to(BEFORE_SOURCE)
    for telegram_id, active in ((601, True), (602, False)):
        await sql(
            "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
            "VALUES ({}, {}, {}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            telegram_id,
            "",
            active,
        )

    await migrations.forwards()

    # Active with no recorded origin: the list's (revoked once unlisted, the safe side).
    # Inactive: only `admin deactivate` deactivated before, so it stays the operator's.
    assert await states() == {601: (True, "config"), 602: (False, "cli")}
    await admins.seed((602,))
    assert await states() == {601: (False, "config"), 602: (False, "cli")}
