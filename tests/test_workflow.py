"""The whole workflow through POST /webhook/telegram, on SQLite and on Postgres.

Each test drives a real `sosekni-ops serve` process with real Update JSON and checks what
the fake Bot API received and what the database holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from sosekni.standin import FakeTelegram
from tests.harness import BotServer, Db, bot_message, callback, message, next_id, user


@dataclass
class World:
    server: BotServer
    db: Db
    tg: FakeTelegram
    admins: list[dict[str, Any]]

    async def send(self, update: dict[str, Any]) -> None:
        answer = await self.server.post(update)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"ok": True}
        await self.db.settle()

    def client(self, lang: str = "en", first_name: str = "Anna", username: str | None = "anna"):
        return user(next_id(), first_name, username, lang)

    async def request(self, client: dict[str, Any], text: str = "Plot 42, moving in") -> int:
        await self.send(message(client, f"/request {text}"))
        rows = await self.db.fetch(
            "SELECT id FROM client_request WHERE client_telegram_id = {} ORDER BY id DESC",
            client["id"],
        )
        assert rows, self.texts(client["id"])
        return int(rows[0]["id"])

    def texts(self, chat_id: int) -> list[str]:
        return self.tg.sent_texts(chat_id)

    def last_text(self, chat_id: int) -> str:
        texts = self.texts(chat_id)
        assert texts, f"nothing sent to {chat_id}:\n{self.tg.summary()}"
        return texts[-1]

    async def copy(self, admin: dict[str, Any], request_id: int) -> dict[str, Any]:
        """The administrator's notification message for a request, as Telegram holds it."""
        rows = await self.db.fetch(
            "SELECT message_id FROM admin_notification WHERE request_id = {} AND chat_id = {}",
            request_id,
            admin["id"],
        )
        assert rows, f"no notification of #{request_id} recorded for {admin['id']}"
        notified = [
            c
            for c in self.tg.calls("sendMessage", chat_id=admin["id"])
            if f"#{request_id}" in c.params["text"]
        ]
        return bot_message(admin["id"], int(rows[0]["message_id"]), notified[0].params["text"])

    async def tap(self, admin: dict[str, Any], action: str, request_id: int) -> None:
        on = await self.copy(admin, request_id)
        await self.send(callback(admin, f"{action}:{request_id}", on))

    def callback_answers(self) -> list[str]:
        return [c.params.get("text", "") for c in self.tg.calls("answerCallbackQuery")]

    async def request_row(self, request_id: int) -> dict[str, Any]:
        rows = await self.db.fetch("SELECT * FROM client_request WHERE id = {}", request_id)
        return rows[0]


@pytest.fixture
async def world(bot: tuple[BotServer, Db, FakeTelegram]) -> World:
    server, db, tg = bot
    admins = [user(next_id(), "Olga", "olga_admin"), user(next_id(), "Ivan", None)]
    for admin in admins:
        await db.add_admin(admin["id"])
    return World(server, db, tg, admins)


def keyboard(call_params: dict[str, Any]) -> list[tuple[str, str]]:
    rows = call_params["reply_markup"]["inline_keyboard"]
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


# ----------------------------------------------------------------------------- client side


async def test_start_greets_and_explains_request(world: World) -> None:
    client = world.client()
    await world.send(message(client, "/start"))
    text = world.last_text(client["id"])
    assert text.startswith("Hello! This is the SOSenki community bot.")
    assert "/request" in text and "/status" in text


async def test_request_is_stored_confirmed_and_every_active_admin_notified(world: World) -> None:
    inactive = user(next_id(), "Gone", None)
    await world.db.add_admin(inactive["id"], active=False)
    client = world.client(first_name="Anna <b>", username="anna_k")
    before = datetime.now(UTC)
    request_id = await world.request(client, "Plot 42 & family, moving in")

    assert world.texts(client["id"]) == [
        f"Your request #{request_id} has been received and is pending review. "
        "You will get a message here as soon as an administrator decides."
    ]
    row = await world.request_row(request_id)
    assert row["status"] == "pending"
    assert row["client_telegram_id"] == client["id"]
    assert row["client_username"] == "anna_k"
    assert row["client_first_name"] == "Anna <b>"
    assert row["text"] == "Plot 42 & family, moving in"
    submitted = row["submitted_at"]
    if isinstance(submitted, str):
        submitted = datetime.fromisoformat(submitted)
    assert submitted.utcoffset().total_seconds() == 0
    assert before.timestamp() - 1 <= submitted.timestamp() <= datetime.now(UTC).timestamp() + 1

    for admin in world.admins:
        (note,) = world.tg.calls("sendMessage", chat_id=admin["id"])
        text = note.params["text"]
        assert f"<b>Access request #{request_id}</b>" in text
        assert f'<a href="tg://user?id={client["id"]}">Anna &lt;b&gt;</a>' in text
        assert "Username: @anna_k" in text
        assert f"Telegram id: <code>{client['id']}</code>" in text
        assert "Plot 42 &amp; family, moving in" in text
        assert f"Submitted: {submitted:%Y-%m-%d %H:%M} UTC" in text
        assert note.params["parse_mode"] == "HTML"
        assert keyboard(note.params) == [
            ("Approve", f"approve:{request_id}"),
            ("Reject", f"reject:{request_id}"),
        ]
    assert world.tg.calls("sendMessage", chat_id=inactive["id"]) == []


async def test_request_with_bot_name_suffix_is_accepted(world: World) -> None:
    client = world.client()
    await world.send(message(client, "/request@SoSenkiTestBot Plot 7"))
    rows = await world.db.fetch(
        "SELECT text FROM client_request WHERE client_telegram_id = {}", client["id"]
    )
    assert rows == [{"text": "Plot 7"}]


async def test_empty_request_gets_usage_and_stores_nothing(world: World) -> None:
    client = world.client()
    await world.send(message(client, "/request   "))
    assert world.last_text(client["id"]).startswith("Please add your message after the command")
    assert await world.db.value("SELECT count(*) FROM client_request") == 0
    assert all(world.tg.calls("sendMessage", chat_id=a["id"]) == [] for a in world.admins)


async def test_request_over_4096_characters_is_refused_and_stores_nothing(world: World) -> None:
    client = world.client()
    await world.send(message(client, "/request " + "x" * 4097))
    assert world.last_text(client["id"]) == (
        "Your message is too long: at most 4096 characters, please."
    )
    assert await world.db.value("SELECT count(*) FROM client_request") == 0


async def test_database_refuses_text_over_4096_characters(world: World) -> None:
    with pytest.raises(Exception, match=r"(?i)4096|too long|check"):
        await world.db.fetch(
            "INSERT INTO client_request (client_telegram_id, client_first_name, client_language, "
            "text, status, submitted_at, created_at, updated_at) VALUES "
            "(1, 'a', 'en', {}, 'pending', "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            "y" * 4097,
        )
    assert await world.db.value("SELECT count(*) FROM client_request") == 0


async def test_database_refuses_a_second_pending_request_of_one_client(world: World) -> None:
    insert = (
        "INSERT INTO client_request (client_telegram_id, client_first_name, client_language, "
        "text, status, submitted_at, created_at, updated_at) VALUES "
        "(77, 'a', 'en', 'hi', {}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    await world.db.fetch(insert, "pending")
    await world.db.fetch(insert, "rejected")
    with pytest.raises(Exception, match=r"(?i)unique"):
        await world.db.fetch(insert, "pending")
    assert await world.db.value("SELECT count(*) FROM client_request") == 2


async def test_second_request_while_pending_is_refused(world: World) -> None:
    client = world.client()
    first = await world.request(client, "first")
    await world.send(message(client, "/request second"))
    assert world.last_text(client["id"]).startswith(
        f"You already have a pending request (#{first}, sent "
    )
    assert await world.db.value("SELECT count(*) FROM client_request") == 1
    for admin in world.admins:
        assert len(world.tg.calls("sendMessage", chat_id=admin["id"])) == 1


async def test_request_after_approval_is_told_already_has_access(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    await world.tap(world.admins[0], "approve", request_id)
    await world.send(message(client, "/request again please"))
    assert world.last_text(client["id"]) == (
        f"Your request #{request_id} was approved: you already have access."
    )
    assert await world.db.value("SELECT count(*) FROM client_request") == 1


async def test_request_after_rejection_is_accepted(world: World) -> None:
    client = world.client()
    first = await world.request(client)
    await world.tap(world.admins[0], "reject", first)
    second = await world.request(client, "second try")
    assert second != first
    assert (await world.request_row(second))["status"] == "pending"
    assert world.last_text(client["id"]).startswith(f"Your request #{second} has been received")


# ----------------------------------------------------------------------------- decisions


async def test_approve_button_decides_tells_client_and_edits_every_copy(world: World) -> None:
    olga, ivan = world.admins
    client = world.client()
    request_id = await world.request(client)
    copies = {a["id"]: (await world.copy(a, request_id))["message_id"] for a in world.admins}

    await world.tap(olga, "approve", request_id)

    assert world.callback_answers() == [f"Request #{request_id} approved."]
    assert world.last_text(client["id"]) == (
        f"Good news: your request #{request_id} has been approved. Welcome to SOSenki!\n\n"
        "Next steps: an administrator will contact you with the access details; "
        "keep this chat open."
    )
    row = await world.request_row(request_id)
    assert row["status"] == "approved" and row["response"] == "approved"
    assert row["admin_telegram_id"] == olga["id"]
    assert row["admin_name"] == "Olga (@olga_admin)"
    assert row["responded_at"] is not None and row["reason"] is None
    edits = world.tg.calls("editMessageText")
    assert sorted((c.params["chat_id"], c.params["message_id"]) for c in edits) == sorted(
        copies.items()
    )
    for edit in edits:
        assert "✅ <b>Approved</b> by Olga (@olga_admin) at " in edit.params["text"]
        assert f"Access request #{request_id}" in edit.params["text"]
        assert "reply_markup" not in edit.params  # the buttons are gone
    assert ivan["id"] in {c.params["chat_id"] for c in edits}


async def test_reject_button_tells_client_without_reason(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    await world.tap(world.admins[1], "reject", request_id)
    assert world.last_text(client["id"]) == (
        f"Sorry, your request #{request_id} has been rejected. "
        "You may send a new request with /request."
    )
    assert world.callback_answers() == [f"Request #{request_id} rejected."]
    assert (await world.request_row(request_id))["admin_name"] == "Ivan"


async def test_later_decision_is_told_already_processed_and_changes_nothing(world: World) -> None:
    olga, ivan = world.admins
    client = world.client()
    request_id = await world.request(client)
    await world.tap(olga, "approve", request_id)
    decided = await world.request_row(request_id)
    await world.tap(ivan, "reject", request_id)

    responded = decided["responded_at"]
    if isinstance(responded, str):
        responded = datetime.fromisoformat(responded)
    assert world.callback_answers()[-1] == (
        f"Request #{request_id} already processed: approved by Olga (@olga_admin) "
        f"at {responded:%Y-%m-%d %H:%M} UTC."
    )
    assert await world.request_row(request_id) == decided
    assert len(world.texts(client["id"])) == 2  # confirmation and welcome, nothing more


async def test_non_admin_tap_is_not_authorized_and_changes_nothing(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    stranger = world.client(first_name="Mallory")
    on = await world.copy(world.admins[0], request_id)
    await world.send(callback(stranger, f"approve:{request_id}", on))
    assert world.callback_answers() == ["You are not authorized to decide on requests."]
    assert (await world.request_row(request_id))["status"] == "pending"
    assert world.tg.calls("editMessageText") == []
    assert len(world.texts(client["id"])) == 1


async def test_deactivated_admin_is_not_authorized(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    olga = world.admins[0]
    on = await world.copy(olga, request_id)
    await world.db.fetch(
        "UPDATE administrator SET active = {} WHERE telegram_id = {}", False, olga["id"]
    )
    await world.send(callback(olga, f"reject:{request_id}", on))
    assert world.callback_answers() == ["You are not authorized to decide on requests."]
    assert (await world.request_row(request_id))["status"] == "pending"


async def test_unknown_button_is_still_answered(world: World) -> None:
    olga = world.admins[0]
    await world.send(callback(olga, "something-old", bot_message(olga["id"], 5, "old")))
    assert world.callback_answers() == ["This button is no longer valid."]


@pytest.mark.parametrize("reply", ["Approve", "  approve ", "APPROVE"])
async def test_text_reply_approve_decides(world: World, reply: str) -> None:
    client = world.client()
    request_id = await world.request(client)
    olga = world.admins[0]
    await world.send(message(olga, reply, reply_to=await world.copy(olga, request_id)))
    assert (await world.request_row(request_id))["status"] == "approved"
    assert world.last_text(olga["id"]) == f"Request #{request_id} approved."
    assert world.last_text(client["id"]).startswith("Good news")
    assert len(world.tg.calls("editMessageText")) == 2


async def test_text_reply_reject_with_reason_tells_client_the_reason(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    ivan = world.admins[1]
    reply_to = await world.copy(ivan, request_id)
    await world.send(message(ivan, "reject: Not a resident of SOSenki", reply_to=reply_to))
    row = await world.request_row(request_id)
    assert (row["status"], row["reason"]) == ("rejected", "Not a resident of SOSenki")
    assert world.last_text(client["id"]) == (
        f"Sorry, your request #{request_id} has been rejected.\n"
        "Reason: Not a resident of SOSenki\n\n"
        "You may send a new request with /request."
    )
    for edit in world.tg.calls("editMessageText"):
        assert "Reason: Not a resident of SOSenki" in edit.params["text"]


async def test_text_reply_that_is_no_decision_gets_a_hint(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    olga = world.admins[0]
    await world.send(message(olga, "maybe later?", reply_to=await world.copy(olga, request_id)))
    assert world.last_text(olga["id"]) == (
        "Reply to a request with Approve, Reject, or Reject: &lt;reason&gt;. On a message "
        "listing several requests, name the request: Approve 12, Reject 12: &lt;reason&gt;."
    )
    assert (await world.request_row(request_id))["status"] == "pending"


async def test_text_reply_from_non_admin_is_not_authorized(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    on = await world.copy(world.admins[0], request_id)
    await world.send(message(client, "Approve", reply_to=on))
    assert world.last_text(client["id"]) == "You are not authorized to decide on requests."
    assert (await world.request_row(request_id))["status"] == "pending"


# ----------------------------------------------------------------------------- status, pending


async def test_status_follows_the_latest_request(world: World) -> None:
    client = world.client()
    await world.send(message(client, "/status"))
    assert world.last_text(client["id"]) == (
        "You have not sent a request yet. Send /request followed by your message."
    )
    request_id = await world.request(client)
    await world.send(message(client, "/status"))
    assert world.last_text(client["id"]).startswith(f"Your request #{request_id} (sent ")
    assert world.last_text(client["id"]).endswith(
        " UTC) is pending review.\nSend /cancel to withdraw a pending request."
    )

    olga = world.admins[0]
    await world.send(
        message(olga, "Reject: incomplete", reply_to=await world.copy(olga, request_id))
    )
    await world.send(message(client, "/status"))
    status = world.last_text(client["id"])
    assert status.startswith(f"Your request #{request_id} was rejected on ")
    assert "Reason: incomplete" in status
    assert status.endswith("You may send a new request with /request.")

    second = await world.request(client)
    await world.tap(olga, "approve", second)
    await world.send(message(client, "/status"))
    assert world.last_text(client["id"]).startswith(f"Your request #{second} was approved on ")


async def test_pending_lists_oldest_first_with_buttons(world: World) -> None:
    ids = [await world.request(world.client(first_name=f"C{n}")) for n in range(3)]
    await world.tap(world.admins[0], "approve", ids[1])
    olga = world.admins[0]
    world.tg.reset()
    await world.send(message(olga, "/pending"))
    sent = world.tg.calls("sendMessage", chat_id=olga["id"])
    assert sent[0].params["text"] == "2 request(s) waiting for a decision, oldest first:"
    (digest,) = sent[1:]  # the two waiting requests in one message, oldest first
    text = digest.params["text"]
    assert text.startswith("📥 <b>2 new requests</b>")
    assert text.index(f"<b>#{ids[0]}</b>") < text.index(f"<b>#{ids[2]}</b>")
    assert f"#{ids[1]}" not in text
    assert keyboard(digest.params) == [
        (f"✅ #{ids[0]}", f"approve:{ids[0]}"),
        (f"❌ #{ids[0]}", f"reject:{ids[0]}"),
        (f"✅ #{ids[2]}", f"approve:{ids[2]}"),
        (f"❌ #{ids[2]}", f"reject:{ids[2]}"),
    ]


async def test_pending_when_nothing_waits(world: World) -> None:
    olga = world.admins[0]
    await world.send(message(olga, "/pending"))
    assert world.last_text(olga["id"]) == "No requests are waiting for a decision."


async def test_pending_is_for_administrators_only(world: World) -> None:
    await world.request(world.client())
    client = world.client()
    await world.send(message(client, "/pending"))
    assert world.last_text(client["id"]) == "You are not authorized to decide on requests."


async def test_decision_from_a_pending_listing_edits_that_copy_too(world: World) -> None:
    request_id = await world.request(world.client())
    olga = world.admins[0]
    await world.send(message(olga, "/pending"))
    await world.tap(olga, "approve", request_id)
    edited = {
        (c.params["chat_id"], c.params["message_id"]) for c in world.tg.calls("editMessageText")
    }
    recorded = await world.db.fetch(
        "SELECT chat_id, message_id FROM admin_notification WHERE request_id = {}", request_id
    )
    assert len(recorded) == 3  # two notifications and the /pending card
    assert edited == {(r["chat_id"], r["message_id"]) for r in recorded}


# ----------------------------------------------------------------------------- languages


async def test_russian_client_gets_russian_texts(world: World) -> None:
    client = world.client(lang="ru")
    await world.send(message(client, "/start"))
    assert world.last_text(client["id"]).startswith("Здравствуйте! Это бот сообщества SOSenki.")
    request_id = await world.request(client)
    assert world.last_text(client["id"]).startswith(f"Ваш запрос #{request_id} получен")
    await world.tap(world.admins[0], "approve", request_id)
    assert world.last_text(client["id"]).startswith(
        f"Отличные новости: ваш запрос #{request_id} одобрен."
    )


async def test_unknown_language_falls_back_to_the_default(world: World) -> None:
    client = world.client(lang="de")
    await world.send(message(client, "/start"))
    assert world.last_text(client["id"]).startswith("Hello!")


# ----------------------------------------------------------------------------- delivery


async def test_same_update_twice_is_processed_once(world: World) -> None:
    client = world.client()
    update = message(client, "/request only once")
    await world.send(update)
    await world.send(update)
    assert await world.db.value("SELECT count(*) FROM client_request") == 1
    assert await world.db.value("SELECT count(*) FROM inbox_update") == 1
    assert len(world.texts(client["id"])) == 1


async def test_every_message_goes_through_the_outbox(world: World) -> None:
    client = world.client()
    request_id = await world.request(client)
    await world.tap(world.admins[0], "approve", request_id)
    outbox = await world.db.fetch("SELECT method, status FROM outbox_message")
    telegram_calls = [c for c in world.tg.calls() if c.method not in ("getMe", "getWebhookInfo")]
    assert len(outbox) == len(telegram_calls)
    assert {r["status"] for r in outbox} == {"sent"}
