"""Request numbers that clients see have no gaps: a refused `/request` costs no number.

On PostgreSQL an INSERT that ends in ON CONFLICT DO NOTHING has already drawn the next
value of the id sequence; `submit` checks for a pending request first, so only a truly
concurrent second request (which the partial unique index refuses) can skip a number.
"""

from __future__ import annotations

import pytest

from sosekni.db import sql
from sosekni.services import requests
from sosekni.services.requests import Answer, Decided, Person, Submitted

ADMIN = 4242


@pytest.fixture
async def database(bound_database: str) -> str:
    """A migrated database of either engine, bound, with ADMIN its administrator."""
    await sql(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "VALUES ({}, 'Olga', {}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        ADMIN,
        True,
    )
    return bound_database


def person(telegram_id: int, name: str) -> Person:
    return Person(telegram_id=telegram_id, first_name=name, username=None, language="en")


async def test_a_request_refused_as_already_pending_costs_no_number(database: str) -> None:
    anna, boris, olga = person(1, "Anna"), person(2, "Boris"), person(ADMIN, "Olga")
    first = await requests.submit(anna, 1, "Plot 42", "en")
    assert first[0] is Submitted.CREATED
    for attempt in range(3):
        refused = await requests.submit(anna, 1, f"Plot 42, again {attempt}", "en")
        assert refused == (Submitted.ALREADY_PENDING, first[1])
    decided = await requests.decide(olga, first[1], "rejected", Answer(ADMIN), "en")
    assert decided is Decided.DECIDED
    second = await requests.submit(anna, 1, "Plot 42, with the lease", "en")
    third = await requests.submit(boris, 2, "Plot 7", "en")
    assert [second[0], third[0]] == [Submitted.CREATED, Submitted.CREATED]
    assert [first[1], second[1], third[1]] == [first[1], first[1] + 1, first[1] + 2]
    rows = await sql("SELECT id FROM client_request ORDER BY id")
    assert [r["id"] for r in rows] == [first[1], first[1] + 1, first[1] + 2]
    refusals = await sql(
        "SELECT count(*) AS n FROM outbox_message WHERE chat_id = 1 AND payload LIKE {}",
        "%already have a pending request%",
    )
    assert refusals[0]["n"] == 3
