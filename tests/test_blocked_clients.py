"""Clients who blocked the bot (issue 13, point 6): a 403 is not retried, every copy of the
request's card says so once, later messages to that chat are held until the client writes
again, and `requests list` shows it. Real Update JSON posted to the running server on both
engines; the fake Bot API answers 403 as Telegram does for a blocked bot.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from sosekni.standin import FakeTelegram
from sosekni.texts import text
from tests.harness import (
    BotServer,
    Db,
    base_env,
    bot_message,
    callback,
    message,
    next_id,
    ops_in_process,
    user,
)

UNREACHABLE = "Client unreachable (blocked the bot)"


def shown(tg: FakeTelegram, chat_id: int) -> str:
    """What the administrator's last delivered message (or edit of it) says now."""
    done = [
        c
        for c in tg.calls(chat_id=chat_id)
        if c.method in ("sendMessage", "editMessageText") and c.status == HTTPStatus.OK
    ]
    return str(done[-1].params.get("text")) if done else ""


async def post_all(server: BotServer, db: Db, *updates: dict) -> None:
    for update in updates:
        answer = await server.post(update)
        assert answer.status_code == 200, answer.text
    await db.settle()


async def test_a_blocked_client_is_marked_once_held_and_released_when_they_write(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    first_admin, second_admin = next_id(), next_id()
    await db.reset(admins=(first_admin, second_admin))
    client = user(next_id(), "Anna", "anna")
    tg.block_chat(client["id"])

    # The confirmation answers 403: not retried, the chat is blocked, the cards say so.
    await post_all(server, db, message(client, "/request Plot 42"))
    request_id = int(await db.value("SELECT id FROM client_request"))
    refused = tg.calls("sendMessage", client["id"])
    assert [c.status for c in refused] == [HTTPStatus.FORBIDDEN], tg.summary()
    confirm = await db.fetch(
        "SELECT status, attempts, last_error FROM outbox_message "
        "WHERE chat_id = {} AND purpose = 'confirm'",
        client["id"],
    )
    assert [(r["status"], r["attempts"]) for r in confirm] == [("failed", 1)]
    assert "bot was blocked by the user" in confirm[0]["last_error"]
    assert await db.value("SELECT count(*) FROM blocked_chat WHERE chat_id = {}", client["id"]) == 1
    assert await db.value("SELECT unreachable_at FROM client_request") is not None
    for admin in (first_admin, second_admin):
        assert UNREACHABLE in shown(tg, admin), tg.summary()

    # The decision is held, not sent nor failed; the copies show it and the mark.
    card = bot_message(first_admin, 1, f"Access request #{request_id}")
    await post_all(
        server, db, callback(user(first_admin, "Olga", "olga"), f"approve:{request_id}", card)
    )
    assert len(tg.calls("sendMessage", client["id"])) == 1, tg.summary()
    decision = await db.fetch(
        "SELECT status FROM outbox_message WHERE chat_id = {} AND purpose = 'decision'",
        client["id"],
    )
    assert decision == [{"status": "held"}]
    for admin in (first_admin, second_admin):
        assert "Approved" in shown(tg, admin) and UNREACHABLE in shown(tg, admin)
    for admin in (first_admin, second_admin):  # once per copy at most (none if it left later)
        marked = [
            c
            for c in tg.calls("editMessageText", chat_id=admin)
            if UNREACHABLE in str(c.params["text"]) and "Approved" not in str(c.params["text"])
        ]
        assert len(marked) <= 1, tg.summary()

    listed = await asyncio.to_thread(
        ops_in_process, ["requests", "list"], base_env(db.url, tg.base_url)
    )
    assert listed.returncode == 0, listed.stderr
    assert "approved, client unreachable" in listed.stdout

    # The client writes again: the held decision goes first, then the answer; the mark goes.
    tg.unblock_chat(client["id"])
    await post_all(server, db, message(client, "/status"))
    texts = tg.sent_texts(client["id"])
    assert texts[0] == text("en", "welcome", id=request_id), texts
    assert texts[1].startswith(f"Your request #{request_id} was approved"), texts
    assert await db.value("SELECT count(*) FROM blocked_chat") == 0
    assert await db.value("SELECT unreachable_at FROM client_request") is None
    for admin in (first_admin, second_admin):
        assert "Approved" in shown(tg, admin) and UNREACHABLE not in shown(tg, admin)
    listed = await asyncio.to_thread(
        ops_in_process, ["requests", "list"], base_env(db.url, tg.base_url)
    )
    assert "client unreachable" not in listed.stdout


async def test_a_card_already_on_screen_is_edited_once_when_the_decision_is_refused(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = next_id()
    await db.reset(admins=(admin,))
    client = user(next_id(), "Vera", None, lang="ru")
    await post_all(server, db, message(client, "/request Участок 19"))
    request_id = int(await db.value("SELECT id FROM client_request"))
    assert UNREACHABLE not in shown(tg, admin)
    tg.block_chat(client["id"])
    card = bot_message(admin, 1, f"Access request #{request_id}")
    await post_all(server, db, callback(user(admin, "Olga"), f"reject:{request_id}", card))
    assert await db.value("SELECT count(*) FROM blocked_chat") == 1
    assert "Rejected" in shown(tg, admin) and UNREACHABLE in shown(tg, admin), tg.summary()
    assert len(tg.calls("editMessageText", chat_id=admin)) <= 2  # the decision, the mark
    assert [c.status for c in tg.calls("sendMessage", client["id"])] == [
        HTTPStatus.OK,
        HTTPStatus.FORBIDDEN,  # the rejection: not retried
    ]


async def test_a_pending_card_gets_the_mark_and_loses_it_keeping_its_buttons(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = next_id()
    await db.reset(admins=(admin,))
    client = user(next_id(), "Gleb", "gleb")
    await post_all(server, db, message(client, "/request Plot 3"))
    request_id = int(await db.value("SELECT id FROM client_request"))
    tg.block_chat(client["id"])  # blocked right after: the answer to /start is refused
    await post_all(server, db, message(client, "/start"))
    (marked,) = tg.calls("editMessageText", chat_id=admin)
    assert UNREACHABLE in marked.params["text"]
    assert marked.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == (
        f"approve:{request_id}"
    )
    tg.unblock_chat(client["id"])
    await post_all(server, db, message(client, "/status"))
    _, unmarked = tg.calls("editMessageText", chat_id=admin)
    assert UNREACHABLE not in unmarked.params["text"]
    assert "reply_markup" in unmarked.params  # still pending: the buttons stay
    assert await db.value("SELECT status FROM client_request") == "pending"


async def test_an_administrator_refusing_is_not_a_blocked_client(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = next_id()
    await db.reset(admins=(admin,))
    tg.block_chat(admin)
    client = user(next_id(), "Boris", "boris")
    await post_all(server, db, message(client, "/request Plot 7"))
    assert await db.value("SELECT count(*) FROM blocked_chat") == 0
    assert await db.value("SELECT unreachable_at FROM client_request") is None
    assert await db.value("SELECT status FROM outbox_message WHERE chat_id = {}", admin) == "failed"
    assert tg.sent_texts(client["id"])  # the client's confirmation went out as ever
