"""Private chats only: what the bot does with updates from groups, chats and placeholders.

Real Update shapes (supergroups, forum topics, anonymous administrators, captions) posted
to the running server on both engines; what counts is what reaches the fake Bot API and
the tables.
"""

from __future__ import annotations

from typing import Any

from sosekni.standin import FakeTelegram
from sosekni.texts import text
from tests.harness import (
    GROUP_ANONYMOUS_BOT,
    BotServer,
    Db,
    bot_message,
    callback,
    group_chat,
    in_group,
    message,
    next_id,
    user,
    with_caption,
)

POINTER = "https://t.me/SoSenkiTestBot?start=request"


async def post_all(server: BotServer, db: Db, *updates: dict[str, Any]) -> None:
    for update in updates:
        answer = await server.post(update)
        assert answer.status_code == 200, answer.text
    await db.settle()


async def inbox_rows(db: Db) -> list[dict[str, Any]]:
    return await db.fetch("SELECT update_id, status, attempts, error FROM inbox_update")


async def pending_request_with_card(server: BotServer, db: Db, tg: FakeTelegram, admin: int) -> int:
    await db.reset(admins=(admin,))
    await post_all(server, db, message(user(next_id(), "Anna", "anna"), "/request Plot 42"))
    assert tg.sent_texts(admin)
    return int(await db.value("SELECT id FROM client_request"))


async def test_messages_in_a_group_get_no_answer_and_store_nothing(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = next_id()
    request_id = await pending_request_with_card(server, db, tg, admin)
    card = bot_message(admin, 1, f"Access request #{request_id}")
    sent_before = len(tg.calls("sendMessage"))
    forum = group_chat(forum=True)
    group = group_chat("group")
    stranger = user(next_id(), "Boris", "boris")
    await post_all(
        server,
        db,
        in_group(message(stranger, "hello neighbours"), forum, topic=7),
        in_group(message(stranger, "Approve"), group),
        in_group(message(stranger, "Approve", reply_to=card), group),
        in_group(message(user(admin), "Reject", reply_to=card), group),
        in_group(message(user(admin), "/pending"), group),
        in_group(message(user(admin), "/pending@SoSenkiTestBot"), forum, topic=7),
        in_group(message(stranger, "/request plot 9"), forum),
        in_group(message(stranger, "/request@SomeOtherBot plot 9"), forum),
        in_group(message(stranger, "/help@SoSenkiTestBot"), group),
    )
    assert len(tg.calls("sendMessage")) == sent_before, tg.summary()
    assert tg.calls("editMessageText") == []
    assert await db.value("SELECT count(*) FROM client_request") == 1
    assert await db.value("SELECT status FROM client_request") == "pending"
    assert await db.value("SELECT count(*) FROM admin_notification") == 1
    assert all(row["status"] == "done" and row["error"] is None for row in await inbox_rows(db))


async def test_own_commands_in_a_group_get_one_pointer_to_the_private_chat(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    await db.reset(admins=(next_id(),))
    chat = group_chat(forum=True)
    client = user(next_id(), "Vera", "vera_k", lang="ru")
    commands = (
        "/request@SoSenkiTestBot Plot 19",
        "/start@SoSenkiTestBot",
        "/status@sosenkitestbot",
        "/cancel@SoSenkiTestBot",
    )
    for command in commands:
        await post_all(server, db, in_group(message(client, command), chat, topic=3))
    texts = tg.sent_texts(chat["id"])
    assert len(texts) == 4, tg.summary()
    for sent in texts:
        assert POINTER in sent
        assert "Vera" not in sent and "vera_k" not in sent and str(client["id"]) not in sent
    assert texts[0] == text("ru", "group_pointer", link=POINTER)
    assert tg.calls("sendMessage", chat_id=client["id"]) == []
    assert await db.value("SELECT count(*) FROM client_request") == 0


async def test_the_deep_link_opens_the_private_chat_with_the_usage_of_request(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    client = user(next_id())
    await post_all(server, db, message(client, "/start request"), message(client, "/start"))
    assert tg.sent_texts(client["id"]) == [text("en", "request_usage"), text("en", "start")]


async def test_chats_and_telegrams_placeholder_users_are_never_clients(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    await db.reset(admins=(next_id(),))
    chat = group_chat()
    channel = {"id": -1_000_000_000_000 - next_id() % 10**9, "type": "channel", "title": "News"}
    service = user(777000, "Telegram", None)
    channel_bot = user(136817688, "Channel", "Channel_Bot") | {"is_bot": True}
    await post_all(
        server,
        db,
        # an anonymous administrator: `from` is the GroupAnonymousBot placeholder
        in_group(
            message(user(next_id()), "/request@SoSenkiTestBot let me in"),
            chat,
            sender=GROUP_ANONYMOUS_BOT,
            sender_chat=chat,
        ),
        in_group(
            message(user(next_id()), "/start@SoSenkiTestBot"),
            chat,
            sender_chat=chat,
            without_sender=True,
        ),
        in_group(
            message(user(next_id()), "/status@SoSenkiTestBot"),
            chat,
            sender=channel_bot,
            sender_chat=channel,
        ),
        message(service, "/request login code 12345"),
        message(GROUP_ANONYMOUS_BOT, "/request hello"),
    )
    assert tg.calls("sendMessage") == [], tg.summary()
    assert await db.value("SELECT count(*) FROM client_request") == 0
    rows = await inbox_rows(db)
    assert len(rows) == 5
    assert all((r["status"], r["attempts"], r["error"]) == ("done", 1, None) for r in rows), rows


async def test_a_tap_on_a_message_in_a_group_gets_a_toast_and_changes_nothing(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = next_id()
    request_id = await pending_request_with_card(server, db, tg, admin)
    chat = group_chat()
    posted = bot_message(chat["id"], 4, f"Access request #{request_id}") | {"chat": chat}
    sent_before = len(tg.calls("sendMessage"))
    await post_all(server, db, callback(user(admin), f"approve:{request_id}", posted))
    assert await db.value("SELECT status FROM client_request") == "pending"
    answers = tg.calls("answerCallbackQuery")
    assert [a.params.get("text") for a in answers] == [text("en", "group_button")]
    assert len(tg.calls("sendMessage")) == sent_before
    assert tg.calls("editMessageText") == [] and tg.calls("editMessageReplyMarkup") == []


async def test_request_as_a_photo_or_document_caption_is_answered_like_a_text(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = next_id()
    await db.reset(admins=(admin,))
    anna, boris = user(next_id(), "Anna", "anna"), user(next_id(), "Boris", "boris")
    await post_all(
        server,
        db,
        with_caption(message(anna, "/request Plot 42, a photo of the lease")),
        with_caption(message(boris, "/request@SoSenkiTestBot Plot 7"), media="document"),
        with_caption(message(boris, "/status")),
    )
    rows = await db.fetch("SELECT id, client_telegram_id, text FROM client_request ORDER BY id")
    assert [(r["client_telegram_id"], r["text"]) for r in rows] == [
        (anna["id"], "Plot 42, a photo of the lease"),
        (boris["id"], "Plot 7"),
    ]
    assert tg.sent_texts(anna["id"]) == [text("en", "request_received", id=rows[0]["id"])]
    boris_texts = tg.sent_texts(boris["id"])
    assert boris_texts[0] == text("en", "request_received", id=rows[1]["id"])
    assert boris_texts[1].startswith(f"Your request #{rows[1]['id']}")
    assert len(tg.sent_texts(admin)) >= 1
