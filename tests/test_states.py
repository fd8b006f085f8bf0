"""Requests that end without a decision, through the webhook on SQLite and Postgres: the
client withdraws (`/cancel`, status `cancelled`) or nobody decides in time (`expired`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from sosekni.db import as_utc
from sosekni.standin import FakeTelegram
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
