"""POST /webhook/telegram and GET /health: what each kind of input gets, on both engines.

The input rules are the route's own: they run in-process through Sanic's ASGI interface
(`webhook_app`). What needs the process stays on a real `sosekni-ops serve`: the 503 while
the database is down, and what reaches its log.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from sosekni.standin import FakeTelegram
from tests.conftest import StartBot, WebhookApp
from tests.harness import SECRET, TOKEN, BotServer, Db, base_env, free_port, message, next_id, user


async def stored(db: Db) -> int:
    return int(await db.value("SELECT count(*) FROM inbox_update"))


async def test_valid_update_is_stored_and_acknowledged(
    webhook_app: WebhookApp,
) -> None:
    server, db = webhook_app, webhook_app.db
    update = message(user(next_id()), "/start")
    answer = await server.post(update)
    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    rows = await db.fetch("SELECT update_id, kind, payload FROM inbox_update")
    assert rows[0]["update_id"] == update["update_id"] and rows[0]["kind"] == "message"
    assert json.loads(rows[0]["payload"]) == update


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
async def test_wrong_or_missing_secret_is_403_and_stores_nothing(
    webhook_app: WebhookApp, secret: str | None
) -> None:
    server, db = webhook_app, webhook_app.db
    answer = await server.post(message(user(next_id()), "/start"), secret=secret)
    assert answer.status_code == 403
    assert await stored(db) == 0


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"]
)
async def test_non_json_content_type_is_415(webhook_app: WebhookApp, content_type: str) -> None:
    server, db = webhook_app, webhook_app.db
    answer = await server.post(message(user(next_id()), "/start"), content_type=content_type)
    assert answer.status_code == 415
    assert await stored(db) == 0


async def test_json_with_charset_is_accepted(webhook_app: WebhookApp) -> None:
    server, db = webhook_app, webhook_app.db
    update = message(user(next_id()), "/start")
    answer = await server.post(update, content_type="application/json; charset=utf-8")
    assert answer.status_code == 200
    assert await stored(db) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"update_id": "12"}',
        b'{"update_id": -1}',
        b'{"update_id": 1.5}',
        b'{"update_id": true}',
        b'{"update_id": 99999999999999999999999}',
    ],
)
async def test_body_that_is_no_update_is_400_and_stores_nothing(
    webhook_app: WebhookApp, body: bytes
) -> None:
    server, db = webhook_app, webhook_app.db
    answer = await server.post(body)
    assert answer.status_code == 400, answer.text
    assert await stored(db) == 0


# A body over 1 MiB: 413 and nothing stored is asserted on both engines by
# tests/test_hostile_input.py (Sanic's HTTP server enforces it, so a real process does), and
# its one log line by tests/test_webhook_unreadable.py.


async def test_unsupported_update_kind_is_acknowledged_and_ignored(
    webhook_app: WebhookApp, telegram: FakeTelegram
) -> None:
    server, db, tg = webhook_app, webhook_app.db, telegram
    client = user(next_id())
    edited = message(client, "/request edited")
    edited["edited_message"] = edited.pop("message")
    poll_answer = {
        "update_id": next_id(),
        "poll_answer": {"poll_id": "1", "option_ids": [0], "user": client},
    }
    channel_post = message(client, "/request from a channel")
    channel_post["channel_post"] = channel_post.pop("message")
    channel_post["channel_post"]["chat"] = {"id": -100123, "type": "channel", "title": "news"}
    del channel_post["channel_post"]["from"]
    for update in (edited, poll_answer, channel_post):
        assert (await server.post(update)).status_code == 200
    await db.settle()
    assert await db.value("SELECT count(*) FROM inbox_update") == 0
    assert await db.value("SELECT count(*) FROM client_request") == 0
    assert tg.calls("sendMessage") == []


async def test_health_reports_its_checks(webhook_app: WebhookApp) -> None:
    server = webhook_app
    answer = await server.get("/health")
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["inbox"] == {
        "backlog": 0,
        "oldest_age_seconds": 0.0,
        "overdue_seconds": 0.0,
    }
    assert body["checks"]["outbox"]["backlog"] == 0


async def test_database_unavailable_gives_503_on_webhook_and_health(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/sosekni"
    server = BotServer(base_env(nowhere, fake_telegram.base_url), log_path=tmp_path / "serve.log")
    server.start(wait_ready=False)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(100):
                try:
                    health = await http.get(f"{server.url}/health")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        assert health.status_code == 503
        assert health.json()["failing"] == ["database"]
        answer = await server.post(message(user(next_id()), "/start"))
        assert answer.status_code == 503
    finally:
        server.stop()
    assert "Traceback" not in server.log()


async def test_token_and_secret_never_reach_the_logs(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    admin = next_id()
    server, db = start_bot("sqlite", LOG_LEVEL="DEBUG", ADMIN_TELEGRAM_ID=str(admin))
    client = user(next_id())
    assert (await server.post(message(client, "/request hello"))).status_code == 200
    assert (await server.post(b"{broken", secret="wrong")).status_code == 403
    await db.settle()
    assert telegram.sent_texts(admin)
    server.stop()
    log = server.log()
    assert "DEBUG" in log
    assert TOKEN not in log and TOKEN.split(":")[1] not in log
    assert SECRET not in log
