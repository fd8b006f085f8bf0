"""Requests that end without a decision, through the webhook on SQLite and Postgres: the
client withdraws (`/cancel`, status `cancelled`) or nobody decides in time (`expired`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from sosekni.db import as_utc
from sosekni.standin import FakeTelegram
from tests.conftest import StartBot
from tests.harness import BotServer, Db, callback, message, next_id, user
from tests.test_workflow import World

WITHDRAWN = "↩️ <b>Withdrawn by the client</b> at "
EXPIRED = "⌛ <b>Expired</b> at "


@pytest.fixture
async def world(bot: tuple[BotServer, Db, FakeTelegram]) -> World:
    """The module's running bot, two active administrators."""
    server, db, tg = bot
    admins = [user(next_id(), "Olga", "olga_admin"), user(next_id(), "Ivan", None)]
    for admin in admins:
        await db.add_admin(admin["id"])
    return World(server, db, tg, admins)


@asynccontextmanager
async def services_on(url: str) -> AsyncIterator[None]:
    """The services bound to the running bot's database, as another worker of it would be."""
    from sosekni.db import bind, close_pool, engine_for, open_pool

    engine = engine_for(url)
    bind(engine)
    await open_pool(engine, 2)
    try:
        yield
    finally:
        await close_pool(engine)


def edits_of(world: World, chat_id: int) -> list[str]:
    return [c.params["text"] for c in world.tg.calls("editMessageText", chat_id=chat_id)]


# ----------------------------------------------------------------------------- /cancel


async def test_cancel_withdraws_the_pending_request_and_every_copy_says_so(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    await world.send(message(client, "/cancel"))

    assert world.last_text(client["id"]) == (
        f"Your request #{request_id} has been withdrawn. You may send a new request with /request."
    )
    row = await world.request_row(request_id)
    assert row["status"] == "cancelled"
    assert row["responded_at"] is not None and row["admin_telegram_id"] is None
    for admin in world.admins:
        (edit,) = edits_of(world, admin["id"])
        assert f"Access request #{request_id}" in edit and WITHDRAWN in edit

    await world.send(message(client, "/status"))
    status = world.last_text(client["id"])
    assert status.startswith(f"You withdrew your request #{request_id} on ")
    assert status.endswith("You may send a new request with /request.")

    again = await world.request(client, "Plot 42 after all")
    assert again != request_id
    assert (await world.request_row(again))["status"] == "pending"


async def test_cancel_with_nothing_pending_changes_nothing(world: World) -> None:
    client = world.client("ru")
    await world.send(message(client, "/cancel"))
    assert world.texts(client["id"]) == [
        "У вас нет запроса, ожидающего рассмотрения, который можно отозвать."
    ]
    request_id = await world.request(client)
    await world.tap(world.admins[0], "approve", request_id)
    sent = len(world.tg.calls())
    await world.send(message(client, "/cancel"))

    assert world.last_text(client["id"]) == (
        "У вас нет запроса, ожидающего рассмотрения, который можно отозвать."
    )
    assert len(world.tg.calls()) == sent + 1  # the answer, and no edit of any copy
    assert (await world.request_row(request_id))["status"] == "approved"


async def test_a_decision_after_the_withdrawal_is_refused(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    olga = world.admins[0]
    on = await world.copy(olga, request_id)
    await world.send(message(client, "/cancel"))
    await world.send(callback(olga, f"approve:{request_id}", on))

    (answer,) = world.callback_answers()
    assert answer.startswith(
        f"Request #{request_id} is no longer pending: withdrawn by the client at "
    )
    row = await world.request_row(request_id)
    assert (row["status"], row["admin_telegram_id"]) == ("cancelled", None)
    assert not [t for t in world.texts(client["id"]) if "approved" in t]


# ----------------------------------------------------------------------------- expiry


async def test_expiry_ends_old_requests_once_and_the_client_may_ask_again(world: World) -> None:
    from sosekni.services import endings

    old, fresh = world.client(), world.client("ru", "Пётр", None)
    old_id = await world.request(old)
    fresh_id = await world.request(fresh)
    submitted = as_utc((await world.request_row(old_id))["submitted_at"])
    period = timedelta(days=3)
    await world.db.fetch(
        "UPDATE client_request SET submitted_at = {} WHERE id = {}", submitted - period, old_id
    )

    async with services_on(world.db.url):
        assert await endings.expire_due(submitted, period, "en") == [old_id]
        assert await endings.expire_due(submitted, period, "en") == []
    await world.db.settle()

    assert world.last_text(old["id"]) == (
        f"Your request #{old_id} expired: no decision was made in 3 day(s). "
        "You may send a new request with /request."
    )
    assert (await world.request_row(old_id))["status"] == "expired"
    assert (await world.request_row(fresh_id))["status"] == "pending"
    for admin in world.admins:
        (edit,) = edits_of(world, admin["id"])
        assert f"Access request #{old_id}" in edit and EXPIRED in edit

    await world.send(message(old, "/status"))
    assert world.last_text(old["id"]).startswith(f"Your request #{old_id} expired on ")
    again = await world.request(old)
    assert again != old_id


async def test_concurrent_expiry_runs_end_each_request_once(bound_database: str) -> None:
    from sosekni.db import sql, utcnow
    from sosekni.services import endings, requests
    from sosekni.services.requests import Person

    await sql(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "VALUES (700, 'a', {}, {}, {})",
        True,
        utcnow(),
        utcnow(),
    )
    _, request_id = await requests.submit(Person(45, "Di", None, "en"), 45, "Plot 12", "en")
    later = utcnow() + timedelta(days=8)
    results = await asyncio.gather(
        *(endings.expire_due(later, timedelta(days=7), "en") for _ in range(8))
    )
    assert sorted(results, key=len) == [[]] * 7 + [[request_id]]
    told = await sql("SELECT count(*) AS n FROM outbox_message WHERE chat_id = 45")
    assert told[0]["n"] == 2  # the confirmation, and one expiry message
    assert await requests.remind_due(later, timedelta(hours=24), "en") == []


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_running_server_expires_a_request_once_and_stops_reminding_it(
    start_bot: StartBot, telegram: FakeTelegram, engine: str
) -> None:
    """Two workers, each with its expiry loop: the client is told once, the copy is edited,
    and no reminder follows (the short reminder period makes the loop look often)."""
    admin = user(next_id(), "Olga", None)
    server, db = start_bot(
        engine,
        workers=2,
        ADMIN_TELEGRAM_ID=str(admin["id"]),
        PENDING_EXPIRY_DAYS="1",
        PENDING_REMINDER_HOURS=str(1 / 3600),
    )
    client = user(next_id())
    assert (await server.post(message(client, "/request hi"))).status_code == 200
    await db.settle()
    request_id = await db.value("SELECT id FROM client_request")
    await db.fetch(
        "UPDATE client_request SET submitted_at = {} WHERE id = {}",
        as_utc(await db.value("SELECT submitted_at FROM client_request")) - timedelta(days=2),
        request_id,
    )
    telegram.wait_for(lambda f: any("expired" in t for t in f.sent_texts(client["id"])), timeout=20)
    await db.settle()
    server.stop()

    expired = [t for t in telegram.sent_texts(client["id"]) if "expired" in t]
    assert expired == [
        f"Your request #{request_id} expired: no decision was made in 1 day(s). "
        "You may send a new request with /request."
    ]
    assert await db.value("SELECT status FROM client_request") == "expired"
    edits = [c.params["text"] for c in telegram.calls("editMessageText", chat_id=admin["id"])]
    assert edits and EXPIRED in edits[-1]
    last_edit = telegram.calls("editMessageText", chat_id=admin["id"])[-1].at
    reminders_after = [
        c
        for c in telegram.calls("sendMessage", chat_id=admin["id"])
        if "Still waiting" in c.params["text"] and c.at > last_edit
    ]
    assert reminders_after == []


# ----------------------------------------------------------------------------- /stats


async def test_stats_gives_administrators_the_numbers_and_others_nothing(world: World) -> None:
    from sosekni.db import utcnow
    from tests.stats_data import seed

    async with services_on(world.db.url):
        await seed(utcnow())
    olga, client = world.admins[0], world.client("ru")
    await world.send(message(olga, "/stats"))
    await world.send(message(client, "/stats"))

    assert world.last_text(olga["id"]) == (
        "<b>Last 7 days</b>\n"
        "Requests: 5 · pending 1 · approved 2 · rejected 1 · withdrawn 1 · expired 0\n"
        "Time to decision: median 1 h 00 min, 90% within 2 h 00 min\n"
        "Olga: 1 approved, 1 rejected\n"
        "Ivan &lt;i&gt;: 1 approved, 0 rejected\n\n"
        "<b>Last 30 days</b>\n"
        "Requests: 7 · pending 1 · approved 3 · rejected 1 · withdrawn 1 · expired 1\n"
        "Time to decision: median 1 h 30 min, 90% within 1 d 0 h\n"
        "Olga: 1 approved, 1 rejected\n"
        "Ivan &lt;i&gt;: 2 approved, 0 rejected"
    )
    assert world.texts(client["id"]) == ["У вас нет прав принимать решения по запросам."]


async def test_a_withdrawal_and_a_decision_at_once_end_the_request_once(
    bound_database: str,
) -> None:
    from sosekni.db import sql, utcnow
    from sosekni.services import endings, requests
    from sosekni.services.requests import Answer, Person

    await sql(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "VALUES (800, 'a', {}, {}, {})",
        True,
        utcnow(),
        utcnow(),
    )
    client, admin = Person(46, "Eve", None, "en"), Person(800, "Olga", None, "en")
    _, request_id = await requests.submit(client, 46, "Plot 13", "en")
    assert request_id is not None
    cancelled, decided = await asyncio.gather(
        endings.cancel(client, 46, "en"),
        requests.decide(admin, request_id, "approved", Answer(chat_id=800), "en"),
    )
    status = (await sql("SELECT status FROM client_request WHERE id = {}", request_id))[0]
    assert (cancelled == request_id) == (status["status"] == "cancelled")
    assert (decided == requests.Decided.DECIDED) == (status["status"] == "approved")
    assert (cancelled == request_id) != (decided == requests.Decided.DECIDED)
    told = await sql(
        "SELECT count(*) AS n FROM outbox_message WHERE chat_id = 46 AND purpose = 'decision'"
    )
    assert told[0]["n"] == 1  # withdrawn or welcomed, never both
