"""Redelivery, many workers under concurrent load, Telegram's rate limits, reminders."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from datetime import timedelta

from sosekni.db import sql, utcnow
from sosekni.services import requests
from sosekni.services.requests import Person
from sosekni.standin import Call, FakeTelegram
from tests.conftest import StartBot
from tests.harness import (
    Db,
    bot_message,
    callback,
    message,
    next_id,
    user,
)


async def wait_until(db: Db, query: str, timeout: float = 60) -> None:
    """Until `query` (a count) is 0."""
    for _ in range(int(timeout / 0.1)):
        if not await db.value(query):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still non-zero after {timeout}s: {query}")


async def test_the_same_update_sent_100_times_has_one_effect(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    admin = next_id()
    server, db = start_bot(workers=2, ADMIN_TELEGRAM_ID=str(admin))
    client = user(next_id())
    update = message(client, "/request once")
    answers = await asyncio.gather(*(server.post(update) for _ in range(100)))
    assert Counter(a.status_code for a in answers) == Counter({200: 100})
    await db.settle()
    server.stop()
    assert await db.value("SELECT count(*) FROM inbox_update") == 1
    assert await db.value("SELECT count(*) FROM client_request") == 1
    assert len(telegram.sent_texts(client["id"])) == 1
    assert len(telegram.sent_texts(admin)) == 1


async def test_four_workers_and_500_concurrent_updates_keep_every_invariant(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    admins = [user(next_id(), f"Admin{n}", None) for n in range(2)]
    admin_ids = ",".join(str(a["id"]) for a in admins)
    server, db = start_bot(workers=4, ADMIN_TELEGRAM_ID=admin_ids)
    rng = random.Random(7)
    clients = [user(next_id(), f"C{n}", None) for n in range(100)]
    inbox_done = "SELECT count(*) FROM inbox_update WHERE status IN ('new', 'processing')"
    requests_ = [message(c, f"/request I am {c['first_name']}") for c in clients]
    first = (
        requests_
        + rng.sample(requests_, 100)
        + [message(c, "/status") for c in rng.sample(clients, 50)]
    )  # 100 requests, 100 redeliveries, 50 status checks: 250
    rng.shuffle(first)
    answers = await asyncio.gather(*(server.post(u) for u in first))
    assert {a.status_code for a in answers} == {200}
    await wait_until(db, inbox_done)

    ids = {
        r["client_telegram_id"]: r["id"]
        for r in await db.fetch("SELECT id, client_telegram_id FROM client_request")
    }
    taps = []
    for c in clients:  # both administrators decide each request, in opposite ways
        rid = ids[c["id"]]
        for a, action in zip(admins, rng.sample(["approve", "reject"], 2), strict=True):
            taps.append(callback(a, f"{action}:{rid}", bot_message(a["id"], 1, "card")))
    second = (
        taps + rng.sample(taps, 25) + [message(c, "/status") for c in rng.sample(clients, 25)]
    )  # 200 decisions, 25 redelivered taps, 25 status checks: 250
    rng.shuffle(second)
    answers = await asyncio.gather(*(server.post(u) for u in second))
    assert {a.status_code for a in answers} == {200}
    await wait_until(db, inbox_done)
    client_ids = ",".join(str(c["id"]) for c in clients)
    await wait_until(
        db,
        "SELECT count(*) FROM outbox_message WHERE status IN ('pending', 'sending') "
        f"AND (chat_id IN ({client_ids}) OR chat_id IS NULL)",
        timeout=120,
    )
    server.stop()

    unique_updates = {u["update_id"] for u in first + second}
    assert len(unique_updates) == 100 + 50 + 200 + 25
    assert await db.value("SELECT count(*) FROM inbox_update") == len(unique_updates)
    assert await db.value("SELECT count(*) FROM inbox_update WHERE status <> 'done'") == 0
    # one request per client, each decided exactly once by one administrator
    rows = await db.fetch("SELECT * FROM client_request")
    assert len(rows) == 100
    for r in rows:
        assert r["status"] in ("approved", "rejected") and r["response"] == r["status"]
        assert r["admin_telegram_id"] in {a["id"] for a in admins}
        assert r["responded_at"] is not None
    assert await db.value("SELECT count(*) FROM outbox_message WHERE purpose = 'decision'") == 100
    # every client told exactly once of receipt and exactly once of the decision
    for c in clients:
        texts = telegram.sent_texts(c["id"])
        assert sum("has been received" in t for t in texts) == 1, texts
        assert sum(t.startswith(("Good news", "Sorry, your request")) for t in texts) == 1, texts
    # every distinct tap answered once (redelivered ones are not processed again):
    # 100 decisions, 100 "already processed"
    answers_ = Counter(
        "already" if "already processed" in c.params["text"] else "decided"
        for c in telegram.calls("answerCallbackQuery")
    )
    assert answers_ == Counter({"decided": 100, "already": 100})


def window_counts(calls: list[Call], window: float) -> int:
    """The most calls in any `window` seconds."""
    times = sorted(c.at for c in calls)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_a_burst_of_200_notifications_keeps_to_telegrams_limits(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    admins = [next_id() for _ in range(200)]
    server, db = start_bot(workers=2, ADMIN_TELEGRAM_ID=",".join(map(str, admins)))
    client = user(next_id())
    assert (await server.post(message(client, "/request hi"))).status_code == 200
    await db.settle(timeout=60)
    for _ in range(12):  # then ten more messages to one chat
        assert (await server.post(message(client, "/status"))).status_code == 200
    await db.settle(timeout=60)
    server.stop()
    sent = telegram.calls("sendMessage")
    assert len(sent) == 200 + 1 + 12
    # about 30 per second overall: a full bucket of 30, then 30 per second
    for window in (1.0, 2.0, 4.0):
        assert window_counts(sent, window) <= 30 + 30 * window + 2
    # about 1 per second in one chat: a burst of 3, then 1 per second
    to_client = telegram.calls("sendMessage", chat_id=client["id"])
    for window in (1.0, 3.0, 6.0):
        assert window_counts(to_client, window) <= 3 + window + 1


# ----------------------------------------------------------------------------- reminders


async def test_reminders_come_once_per_period_with_a_controlled_clock(bound_database: str) -> None:
    await sql(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "VALUES (500, 'a', {}, {}, {}), (501, 'b', {}, {}, {})",
        *[True, utcnow(), utcnow()] * 2,
    )
    client = Person(telegram_id=42, first_name="Anna", username=None, language="en")
    _, request_id = await requests.submit(client, 42, "Plot 9", "en")
    _, decided_id = await requests.submit(Person(43, "Bo", None, "en"), 43, "Plot 10", "en")
    await sql("UPDATE client_request SET status = 'approved' WHERE id = {}", decided_id)
    t0 = (await sql("SELECT submitted_at FROM client_request WHERE id = {}", request_id))[0]
    start = t0["submitted_at"]
    if isinstance(start, str):
        from sosekni.db import as_utc

        start = as_utc(start)
    day = timedelta(hours=24)

    assert await requests.remind_due(start + day - timedelta(minutes=1), day, "en") == []
    assert await requests.remind_due(start + day, day, "en") == [request_id]
    assert await requests.remind_due(start + day + timedelta(hours=1), day, "en") == []
    assert await requests.remind_due(start + 2 * day - timedelta(seconds=1), day, "en") == []
    assert await requests.remind_due(start + 2 * day, day, "en") == [request_id]

    cards = await sql(
        "SELECT chat_id, payload FROM outbox_message WHERE purpose = 'remind' ORDER BY id"
    )
    assert [c["chat_id"] for c in cards] == [500, 501, 500, 501]
    assert all("Still waiting for a decision" in c["payload"] for c in cards)
    assert all(f"approve:{request_id}" in c["payload"] for c in cards)

    await sql("UPDATE client_request SET status = 'rejected' WHERE id = {}", request_id)
    assert await requests.remind_due(start + 10 * day, day, "en") == []


async def test_concurrent_reminder_runs_announce_once(bound_database: str) -> None:
    await sql(
        "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
        "VALUES (600, 'a', {}, {}, {})",
        True,
        utcnow(),
        utcnow(),
    )
    _, request_id = await requests.submit(Person(44, "Cy", None, "en"), 44, "Plot 11", "en")
    later = utcnow() + timedelta(hours=25)
    results = await asyncio.gather(
        *(requests.remind_due(later, timedelta(hours=24), "en") for _ in range(8))
    )
    assert sorted(results, key=len) == [[]] * 7 + [[request_id]]
    assert (await sql("SELECT count(*) AS n FROM outbox_message WHERE purpose = 'remind'"))[0][
        "n"
    ] == 1


def reminders_of(telegram: FakeTelegram, chat_id: int, request_id: int) -> list[Call]:
    """The reminders of one request sent to one chat, oldest first."""
    return [
        c
        for c in telegram.calls("sendMessage", chat_id=chat_id)
        if "Still waiting" in c.params["text"] and f"request #{request_id}<" in c.params["text"]
    ]


async def test_a_running_server_re_announces_and_stops_after_the_decision(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    admin = user(next_id(), "Olga", None)
    period_s = 2.0
    server, db = start_bot(
        workers=2, ADMIN_TELEGRAM_ID=str(admin["id"]), PENDING_REMINDER_HOURS=str(period_s / 3600)
    )
    client = user(next_id())
    assert (await server.post(message(client, "/request hi"))).status_code == 200
    await db.settle()
    telegram.wait_for(
        lambda f: sum("Still waiting" in t for t in f.sent_texts(admin["id"])) >= 2,
        timeout=20,
    )
    request_id = await db.value("SELECT id FROM client_request")
    copy = await db.value("SELECT message_id FROM admin_notification ORDER BY id DESC LIMIT 1")
    on = bot_message(admin["id"], copy, "card")
    assert (await server.post(callback(admin, f"approve:{request_id}", on))).status_code == 200
    await db.settle()
    reminders_at_decision = len(reminders_of(telegram, admin["id"], request_id))
    # The signal that the reminder loop ran a period after the decision: a request sent
    # now is re-announced one period later, by the same query that would have taken the
    # decided request again (its last reminder came before the decision, so it would be
    # due by then too).
    later = user(next_id())
    assert (await server.post(message(later, "/request later"))).status_code == 200
    await db.settle()
    later_id = await db.value(
        "SELECT id FROM client_request WHERE client_telegram_id = {}", later["id"]
    )
    telegram.wait_for(lambda f: reminders_of(f, admin["id"], later_id), timeout=20)
    await db.settle()
    server.stop()
    reminder_calls = reminders_of(telegram, admin["id"], request_id)
    assert len(reminder_calls) == reminders_at_decision
    gaps = [b.at - a.at for a, b in itertools.pairwise(reminder_calls)]
    assert all(gap >= period_s - 0.5 for gap in gaps), gaps  # once per period, not per worker
    # every copy, reminders included, now shows the decision
    edited = {c.params["message_id"] for c in telegram.calls("editMessageText")}
    recorded = {
        r["message_id"]
        for r in await db.fetch(
            "SELECT message_id FROM admin_notification WHERE request_id = {}", request_id
        )
    }
    assert edited == recorded
