"""The webhook never refuses a genuine update: what PTB cannot read is kept as failed.

With the right secret the sender is Telegram, and anything but a 2xx makes it send the same
update again and again. Real Update shapes the installed python-telegram-bot cannot read
(a poll without the fields it now demands, a Bot API 6.8 story) are acknowledged, stored
as failed with the reason, logged and counted; only what is not a JSON object, too big or
unauthenticated is refused, each refusal with one log line.

The route's rules run in-process through Sanic's ASGI interface (`webhook_app`); processing
by the workers and the 413 of Sanic's HTTP server need the real `sosekni-ops serve`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest

from sosekni.standin import FakeTelegram
from tests.conftest import WebhookApp
from tests.harness import SECRET, BotServer, Db, message, next_id, user

POLL = {
    "id": "5271439786352984071",
    "question": "Which day suits the meeting?",
    "options": [{"text": "Saturday", "voter_count": 0}, {"text": "Sunday", "voter_count": 0}],
    "total_voter_count": 0,
    "is_closed": False,
    "is_anonymous": True,
    "type": "regular",
    "allows_multiple_answers": False,
}


def poll_message() -> dict[str, Any]:
    update = message(user(next_id()), "x")
    update["message"].pop("text")
    update["message"]["poll"] = POLL
    return update


def story_message() -> dict[str, Any]:  # Bot API 6.8: a forwarded story had no fields
    update = message(user(next_id()), "x")
    update["message"].pop("text")
    update["message"]["story"] = {}
    return update


def reply_to_a_poll() -> dict[str, Any]:
    client = user(next_id())
    polled = poll_message()["message"]
    return message(client, "/request Plot 3", reply_to=polled)


def not_an_object_message() -> dict[str, Any]:
    return {"update_id": next_id(), "message": "not an object"}


def wrongly_typed_fields() -> dict[str, Any]:
    return {"update_id": next_id(), "message": {"message_id": "x", "chat": 3}}


def chat_id_beyond_64_bits() -> dict[str, Any]:
    update = message(user(next_id()), "/start")
    update["message"]["chat"]["id"] = 2**64
    return update


UNREADABLE = {
    "poll without the fields PTB demands": poll_message,
    "Bot API 6.8 story": story_message,
    "reply to a poll": reply_to_a_poll,
    "message that is not an object": not_an_object_message,
    "wrongly typed fields": wrongly_typed_fields,
    "chat id beyond 64 bits": chat_id_beyond_64_bits,
}


def new_log(server: BotServer, before: int) -> list[str]:
    return server.log()[before:].splitlines()


async def metric(server: WebhookApp, name: str) -> float:
    body = (await server.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert found is not None, body
    return float(found.group(1))


@pytest.mark.parametrize("shape", list(UNREADABLE))
async def test_an_update_the_bot_cannot_read_is_acknowledged_and_kept_as_failed(
    webhook_app: WebhookApp,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
    shape: str,
) -> None:
    server, db, tg = webhook_app, webhook_app.db, telegram
    update = UNREADABLE[shape]()
    counted = await metric(server, "sosekni_updates_unreadable_total")
    caplog.clear()
    for _ in range(2):  # Telegram's redelivery is acknowledged too, and not counted again
        answer = await server.post(update)
        assert (answer.status_code, answer.json()) == (200, {"ok": True}), answer.text
    await db.settle()
    rows = await db.fetch("SELECT update_id, status, attempts, error, payload FROM inbox_update")
    assert len(rows) == 1
    row = rows[0]
    assert (row["update_id"], row["status"], row["attempts"]) == (update["update_id"], "failed", 0)
    assert row["error"] and row["error"].startswith("unreadable: ")
    assert json.loads(row["payload"]) == update
    mentions = [r for r in caplog.records if str(update["update_id"]) in r.getMessage()]
    assert len(mentions) == 1 and mentions[0].levelname == "WARNING", mentions
    assert await metric(server, "sosekni_updates_unreadable_total") == counted + 1
    assert tg.calls("sendMessage") == []
    assert await db.value("SELECT count(*) FROM client_request") == 0


async def test_a_message_with_an_entity_type_unknown_to_ptb_is_processed(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    await db.reset(admins=(next_id(),))
    client = user(next_id())
    update = message(client, "/request Plot 42, from 2027-05-01")
    update["message"]["entities"].append({"type": "date_time", "offset": 24, "length": 10})
    assert (await server.post(update)).status_code == 200
    await db.settle()
    assert await db.value("SELECT text FROM client_request") == "Plot 42, from 2027-05-01"
    assert await db.value("SELECT status FROM inbox_update") == "done"
    assert len(tg.sent_texts(client["id"])) == 1


async def test_kinds_the_bot_does_not_handle_are_acknowledged_and_not_stored(
    webhook_app: WebhookApp, telegram: FakeTelegram
) -> None:
    server, db, tg = webhook_app, webhook_app.db, telegram
    someone = user(next_id())
    chat = {"id": -1_000_000_000_000 - next_id() % 10**9, "type": "supergroup", "title": "N"}
    updates = [
        {"update_id": next_id(), "poll": POLL},
        {
            "update_id": next_id(),
            "message_reaction": {
                "chat": chat, "message_id": 5, "user": someone, "date": int(time.time()),
                "old_reaction": [], "new_reaction": [{"type": "emoji", "emoji": "👍"}],
            },
        },
        {"update_id": next_id(), "business_message": poll_message()["message"]},
    ]  # fmt: skip
    for update in updates:
        answer = await server.post(update)
        assert (answer.status_code, answer.json()) == (200, {"ok": True})
    await db.settle()
    assert await db.value("SELECT count(*) FROM inbox_update") == 0
    assert tg.calls("sendMessage") == []


REFUSALS = [
    ("wrong secret", 403, {"secret": "wrong-" + SECRET}),
    ("not JSON", 400, {"body": b"{broken"}),
    ("not an object", 400, {"body": b"[1, 2]"}),
    ("no update_id", 400, {"body": b'{"message": {}}'}),
    ("content type", 415, {"content_type": "text/plain"}),
]
OVER_ONE_MEBIBYTE = b'{"update_id": 1, "x": "' + b"x" * (1024 * 1024) + b'"}'


@pytest.mark.parametrize(("name", "status", "how"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_every_refusal_logs_one_line_with_its_reason(
    webhook_app: WebhookApp,
    caplog: pytest.LogCaptureFixture,
    name: str,
    status: int,
    how: dict[str, Any],
) -> None:
    server, db = webhook_app, webhook_app.db
    how = dict(how)
    body = how.pop("body", message(user(next_id()), "/start"))
    caplog.clear()
    answer = await server.post(body, **how)
    assert answer.status_code == status, answer.text
    lines = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"refused {status}" in lines[0]
    assert SECRET not in lines[0] and "wrong-" not in lines[0]
    assert await db.value("SELECT count(*) FROM inbox_update") == 0


async def test_the_refusal_of_a_body_over_one_mebibyte_logs_one_line_with_its_reason(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    # Sanic's HTTP server refuses the body from its headers, before any route: only the real
    # process enforces it (its ASGI interface leaves the size to the ASGI server).
    server, db, _ = bot
    logged = len(server.log())
    try:
        answer = await server.post(OVER_ONE_MEBIBYTE)
        assert answer.status_code == 413, answer.text
    except httpx.TransportError:
        # Sanic answers 413 from the headers and closes while a client may still be sending
        # the body; the client can then see a reset instead of the answer.
        pass
    lines = [line for line in new_log(server, logged) if "webhook" in line]
    assert len(lines) == 1, lines
    assert "refused 413" in lines[0]
    assert SECRET not in lines[0]
    assert await db.value("SELECT count(*) FROM inbox_update") == 0
