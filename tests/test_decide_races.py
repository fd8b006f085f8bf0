"""The database rules under real concurrency: the services called at once on one pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from sosekni import migrations
from sosekni.db import bind, close_pool, engine_for, open_pool, sql
from sosekni.services import requests
from sosekni.services.requests import Answer, Decided, Person, Submitted


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[None]:
    engine = engine_for(postgres_url)
    bind(engine)
    await migrations.forwards()
    await open_pool(engine, max_size=25)
    yield
    await close_pool(engine)


def person(telegram_id: int, name: str = "Anna") -> Person:
    return Person(telegram_id=telegram_id, first_name=name, username=None, language="en")


async def test_fifty_concurrent_decide_calls_make_exactly_one_decision(pool: None) -> None:
    import asyncio

    admins = [person(9000 + n, f"Admin{n}") for n in range(50)]
    await sql(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "SELECT g, 'a', true, now(), now() FROM generate_series(9000, 9049) AS g"
    )
    outcome, request_id = await requests.submit(person(1), 1, "Plot 3", "en")
    assert outcome is Submitted.CREATED and request_id is not None

    results = await asyncio.gather(
        *(
            requests.decide(
                a, request_id, "approved" if n % 2 else "rejected", Answer(a.telegram_id, "q"), "en"
            )
            for n, a in enumerate(admins)
        )
    )

    assert Counter(results) == Counter({Decided.DECIDED: 1, Decided.ALREADY_PROCESSED: 49})
    client_messages = await sql(
        "SELECT count(*) AS n FROM outbox_message WHERE chat_id = 1 AND purpose = 'decision'"
    )
    assert client_messages[0]["n"] == 1


async def test_twenty_concurrent_submits_of_one_client_store_one_pending_request(
    pool: None,
) -> None:
    import asyncio

    results = await asyncio.gather(
        *(requests.submit(person(2), 2, f"try {n}", "en") for n in range(20))
    )
    assert Counter(outcome for outcome, _ in results) == Counter(
        {Submitted.CREATED: 1, Submitted.ALREADY_PENDING: 19}
    )
    rows = await sql("SELECT status FROM client_request WHERE client_telegram_id = 2")
    assert rows == [{"status": "pending"}]
