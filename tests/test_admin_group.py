"""The administrators' group (issue 13, point 3): with ADMIN_CHAT_ID the cards go to that
group once per request instead of to every administrator; active administrators decide
there by button or reply and get /pending there; anyone else gets a "not authorized" toast
and nothing is posted for them. Real Update JSON to a running server on both engines.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from sosekni.standin import FakeTelegram
from sosekni.texts import text
from tests.conftest import running_bot
from tests.harness import (
    BotServer,
    Db,
    bot_message,
    callback,
    group_chat,
    in_group,
    message,
    next_id,
    user,
)

GROUP = -1001234509876


@pytest.fixture(scope="module")
def group_server(
    module_database: str, fake_telegram: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BotServer, Db]]:
    """The module's bot with ADMIN_CHAT_ID set, on each engine."""
    log_path = tmp_path_factory.mktemp("bot") / "serve.log"
    with running_bot(
        module_database, fake_telegram.base_url, log_path, ADMIN_CHAT_ID=str(GROUP)
    ) as running:
        yield running


@pytest.fixture
async def bot(
    group_server: tuple[BotServer, Db], telegram: FakeTelegram
) -> AsyncIterator[tuple[BotServer, Db, FakeTelegram]]:
    running, db = group_server
    await db.settle()
    await db.reset()
    telegram.reset()
    yield running, db, telegram


def the_group() -> dict[str, Any]:
    return {**group_chat("supergroup"), "id": GROUP, "title": "SOSenki admins"}


def in_admin_group(update: dict[str, Any]) -> dict[str, Any]:
    return in_group(update, the_group())


def card_in_group(message_id: int, request_id: int) -> dict[str, Any]:
    card = bot_message(GROUP, message_id, f"Access request #{request_id}")
    card["chat"] = the_group()
    return card


async def post_all(server: BotServer, db: Db, *updates: dict[str, Any]) -> None:
    for update in updates:
        answer = await server.post(update)
        assert answer.status_code == 200, answer.text
    await db.settle()


async def one_request(server: BotServer, db: Db, tg: FakeTelegram) -> tuple[int, int, int]:
    """A client's request, shown in the group: (client id, request id, the card's id)."""
    client = user(next_id(), "Anna", "anna")
    await post_all(server, db, message(client, "/request Plot 42"))
    request_id = int(await db.value("SELECT id FROM client_request"))
    (card,) = tg.calls("sendMessage", chat_id=GROUP)
    return client["id"], request_id, int(card.message_id or 0)


async def test_a_request_goes_to_the_group_once_and_a_stranger_cannot_decide(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    olga, ivan = await db.new_admin("Olga", "olga"), await db.new_admin("Ivan", None)
    client_id, request_id, card_id = await one_request(server, db, tg)
    assert tg.shown_requests(GROUP) == [request_id]
    for admin in (olga, ivan):
        assert tg.calls("sendMessage", chat_id=admin["id"]) == []  # not privately

    stranger = user(next_id(), "Boris", "boris")
    card = card_in_group(card_id, request_id)
    await post_all(
        server,
        db,
        callback(stranger, f"approve:{request_id}", card, query_id="stranger-tap"),
        in_admin_group(message(stranger, "Approve", reply_to=card)),
        in_admin_group(message(stranger, "/pending")),
        in_admin_group(message(stranger, "/stats")),
    )
    (toast,) = tg.calls("answerCallbackQuery")
    assert toast.params["callback_query_id"] == "stranger-tap"
    assert toast.params["text"] == text("en", "not_authorized")
    assert len(tg.calls("sendMessage", chat_id=GROUP)) == 1  # nothing posted for them
    assert await db.value("SELECT status FROM client_request") == "pending"

    await post_all(server, db, callback(olga, f"approve:{request_id}", card, query_id="olga"))
    assert await db.value("SELECT status FROM client_request") == "approved"
    assert tg.sent_texts(client_id)[-1] == text("en", "welcome", id=request_id)
    (edit,) = tg.calls("editMessageText", chat_id=GROUP)
    assert edit.params["message_id"] == card_id and "Approved" in edit.params["text"]
    assert [c.params["callback_query_id"] for c in tg.calls("answerCallbackQuery")] == [
        "stranger-tap",
        "olga",
    ]
    assert len(tg.calls("sendMessage", chat_id=GROUP)) == 1


async def test_administrators_reply_and_ask_for_pending_in_the_group_nothing_else_answers(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    olga = await db.new_admin("Olga", "olga")
    client_id, request_id, card_id = await one_request(server, db, tg)
    card = card_in_group(card_id, request_id)
    client = user(client_id, "Anna", "anna")
    await post_all(
        server,
        db,
        in_admin_group(message(olga, "who is this?", reply_to=card)),  # chatter: no hint
        in_admin_group(message(olga, "hello all")),
        in_admin_group(message(olga, "/start")),
        in_admin_group(message(client, "/request@SoSenkiTestBot let me in")),
        in_admin_group(message(client, "/status@SoSenkiTestBot")),
    )
    assert len(tg.calls("sendMessage", chat_id=GROUP)) == 1, tg.summary()
    assert await db.value("SELECT count(*) FROM client_request") == 1

    await post_all(server, db, in_admin_group(message(olga, "/pending@SoSenkiTestBot")))
    texts = tg.sent_texts(GROUP)
    assert texts[1] == text("en", "pending_header", count=1)
    assert tg.shown_requests(GROUP) == [request_id, request_id]

    await post_all(server, db, in_admin_group(message(olga, "/stats@SoSenkiTestBot")))
    assert "Last 7 days" in tg.sent_texts(GROUP)[-1]  # the numbers, answered in the group

    await post_all(
        server, db, in_admin_group(message(olga, "Reject: not a resident", reply_to=card))
    )
    assert await db.value("SELECT status FROM client_request") == "rejected"
    assert await db.value("SELECT reason FROM client_request") == "not a resident"
    assert tg.sent_texts(GROUP)[-1] == text("en", "decided_rejected", id=request_id)
    assert "Rejected" in tg.calls("editMessageText", chat_id=GROUP)[-1].params["text"]
    assert "rejected" in tg.sent_texts(client_id)[-1]


async def test_a_burst_reaches_the_group_as_digests_each_request_once(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = await db.new_admin("Olga", "olga")
    clients = [user(next_id(), f"Client {n}", None) for n in range(12)]
    answers = await asyncio.gather(
        *(server.post(message(c, f"/request Plot {n}")) for n, c in enumerate(clients))
    )
    assert {a.status_code for a in answers} == {200}
    await db.settle(timeout=60)
    ids = [int(r["id"]) for r in await db.fetch("SELECT id FROM client_request")]
    assert Counter(tg.shown_requests(GROUP)) == Counter(ids)
    assert len(tg.calls("sendMessage", chat_id=GROUP)) < len(ids)  # digests, not 12 cards
    assert tg.calls("sendMessage", chat_id=admin["id"]) == []


async def test_reminders_go_to_the_group_once_not_to_each_administrator(
    bound_database: str,
) -> None:
    from sosekni.db import utcnow
    from sosekni.services import requests

    db = Db(bound_database)
    admins = [next_id(), next_id()]
    for admin in admins:
        await db.add_admin(admin)
    client = requests.Person(next_id(), "Anna", "anna", "en")
    _, request_id = await requests.submit(client, client.telegram_id, "Plot 42", "en", GROUP)
    later = utcnow() + timedelta(hours=25)
    assert await requests.remind_due(later, timedelta(hours=24), "en", GROUP) == [request_id]
    cards = await db.fetch(
        "SELECT chat_id, purpose FROM outbox_message WHERE purpose IN ('notify', 'remind') "
        "ORDER BY id"
    )
    assert cards == [
        {"chat_id": GROUP, "purpose": "notify"},
        {"chat_id": GROUP, "purpose": "remind"},
    ]
