"""`sosekni-ops serve --workers 2` as a real process on Postgres: end to end and under races."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import httpx
import pytest

from sosekni.standin import FakeTelegram
from tests.conftest import StartBot
from tests.harness import (
    BotServer,
    Db,
    bot_message,
    callback,
    message,
    next_id,
    user,
    wait_port_closed,
)


@pytest.fixture
async def running(
    two_workers: tuple[BotServer, Db], telegram: FakeTelegram
) -> tuple[BotServer, Db, FakeTelegram]:
    server, db = two_workers
    await db.settle()
    await db.reset()
    return server, db, telegram


async def post_all(server: BotServer, updates: list[dict]) -> None:
    answers = await asyncio.gather(*(server.post(u) for u in updates))
    assert [a.status_code for a in answers] == [200] * len(updates)


async def test_request_and_approval_end_to_end_with_two_workers(
    running: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = running
    admin = await db.new_admin()
    client = user(next_id(), "Anna", "anna")

    await post_all(server, [message(client, "/request Plot 42")])
    await db.settle()
    request_id = await db.value("SELECT id FROM client_request")
    assert tg.sent_texts(client["id"])[0].startswith(
        f"Your request #{request_id} has been received"
    )
    message_id = await db.value("SELECT message_id FROM admin_notification")
    on = bot_message(admin["id"], message_id, tg.sent_texts(admin["id"])[0])
    await post_all(server, [callback(admin, f"approve:{request_id}", on)])
    await db.settle()

    assert tg.sent_texts(client["id"])[-1].startswith("Good news")
    assert await db.value("SELECT status FROM client_request") == "approved"
    (edit,) = tg.calls("editMessageText")
    assert edit.params["message_id"] == message_id
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{server.url}/health")).json()
    assert health["status"] == "ok"
    assert health["checks"]["database"] == "ok"


async def test_fifty_simultaneous_decisions_give_one_decision_and_one_message(
    running: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = running
    admins = [user(next_id(), f"Admin{n}", None) for n in range(50)]
    for admin in admins:
        await db.add_admin(admin["id"])
    client = user(next_id(), "Anna", "anna")
    await post_all(server, [message(client, "/request Plot 1")])
    await db.settle(timeout=60)
    request_id = await db.value("SELECT id FROM client_request")
    copies = {
        r["chat_id"]: r["message_id"]
        for r in await db.fetch("SELECT chat_id, message_id FROM admin_notification")
    }
    assert len(copies) == 50
    taps = [
        callback(
            a,
            f"{'approve' if n % 2 else 'reject'}:{request_id}",
            bot_message(a["id"], copies[a["id"]], "card"),
        )
        for n, a in enumerate(admins)
    ]
    await post_all(server, taps)
    await db.settle(timeout=60)

    row = (await db.fetch("SELECT * FROM client_request"))[0]
    assert row["status"] in ("approved", "rejected")
    answers = Counter(
        "decided"
        if c.params["text"].startswith(f"Request #{request_id} ")
        and "already" not in c.params["text"]
        else "already"
        for c in tg.calls("answerCallbackQuery")
    )
    assert answers == Counter({"decided": 1, "already": 49})
    assert len(tg.sent_texts(client["id"])) == 2  # confirmation and exactly one decision
    assert len(tg.calls("editMessageText")) == 50  # each copy edited once
    assert await db.value("SELECT count(*) FROM inbox_update WHERE status = 'done'") == 51


async def test_twenty_simultaneous_requests_of_one_client_leave_one_pending(
    running: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, _ = running
    await db.add_admin(next_id())
    client = user(next_id(), "Anna", "anna")
    await post_all(server, [message(client, f"/request try {n}") for n in range(20)])
    await db.settle(timeout=60)
    assert (
        await db.value(
            "SELECT count(*) FROM client_request WHERE client_telegram_id = {}", client["id"]
        )
        == 1
    )
    assert await db.value("SELECT count(*) FROM inbox_update WHERE status = 'done'") == 20
    outbox = await db.fetch("SELECT purpose FROM outbox_message WHERE chat_id = {}", client["id"])
    assert sorted(r["purpose"] for r in outbox) == ["confirm"] + ["reply"] * 19


async def test_sigterm_stops_both_workers_cleanly(start_bot: StartBot) -> None:
    server, _ = start_bot(workers=2)
    assert server.stop(signal.SIGTERM) == 0, server.log()
    wait_port_closed(server.port)
    assert "Traceback" not in server.log()
