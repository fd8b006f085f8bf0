"""Nothing lost, nothing twice: crashes, Telegram outages and database outages.

Every test runs the bot as a real process and breaks something real: it SIGKILLs the
server, makes the fake Bot API fail or hang, or stops the PostgreSQL server under it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from sosekni import migrations
from sosekni.standin import FakeTelegram
from tests.conftest import StartBot, migrated_copy, running_bot
from tests.fakes.postgres import ThrowawayCluster, create_database
from tests.harness import (
    BotServer,
    Db,
    PacedBotServer,
    base_env,
    message,
    next_id,
    on_database,
    user,
)

# The paced server's backoff: 0.2, 0.4, 0.8, 1.6 s where production waits 1, 2, 4, 8 s.
BACKOFF_SCALE = 0.2
BACKOFF_BASE_S = 1.0 * BACKOFF_SCALE


def kill_group(server: BotServer) -> None:
    """SIGKILL the server and all its workers at once: a crash, no clean-up runs."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


@pytest.fixture
def postgres_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database (a copy of the session's template: `test_migrations.py`
    tests `migrate`)."""
    with migrated_copy("postgres", request, tmp_path) as url:
        yield url


async def until(db: Db, query: str, timeout: float = 30) -> None:
    """Wait for the bot to get somewhere (`query` gives a truthy value) instead of sleeping
    through a guess of how long it takes."""
    deadline = time.monotonic() + timeout
    while not await db.value(query):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {query}")
        await asyncio.sleep(0.05)


def texts_by_chat(tg: FakeTelegram, chats: list[int]) -> dict[int, list[str]]:
    return {chat: tg.sent_texts(chat) for chat in chats}


# ----------------------------------------------------------------------------- crashes


async def test_acknowledged_updates_survive_a_kill_before_processing(
    postgres_db: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    admin = next_id()
    env = base_env(postgres_db, telegram.base_url, ADMIN_TELEGRAM_ID=str(admin))
    telegram.set_delay(30, method="getMe")  # the bot cannot get ready: updates wait in the inbox
    server = BotServer(env, workers=2, log_path=tmp_path / "first.log").start(wait_ready=False)
    db = Db(postgres_db)
    clients = [user(next_id(), f"C{n}", None) for n in range(10)]
    try:
        for _ in range(100):
            try:
                answers = await asyncio.gather(
                    *(server.post(message(c, f"/request from {c['first_name']}")) for c in clients)
                )
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
        assert [a.status_code for a in answers] == [200] * 10
        assert await db.value("SELECT count(*) FROM inbox_update WHERE status = 'new'") == 10
    finally:
        kill_group(server)
    assert await db.value("SELECT count(*) FROM client_request") == 0

    telegram.recover()
    again = BotServer(env, workers=2, log_path=tmp_path / "second.log").start()
    try:
        await db.settle()
    finally:
        again.stop()
    assert await db.value("SELECT count(*) FROM inbox_update WHERE status = 'done'") == 10
    assert await db.value("SELECT count(*) FROM client_request") == 10
    for c in clients:
        (confirmation,) = telegram.sent_texts(c["id"])
        assert "has been received" in confirmation
    # Every request reached the administrator once (in digests: fewer messages than requests).
    shown = telegram.shown_requests(admin)
    assert sorted(shown) == sorted(r["id"] for r in await db.fetch("SELECT id FROM client_request"))
    assert len(telegram.sent_texts(admin)) < 10


async def test_a_kill_in_the_middle_of_sending_resends_only_calls_in_flight(
    postgres_db: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    admin = next_id()
    env = base_env(postgres_db, telegram.base_url, ADMIN_TELEGRAM_ID=str(admin))
    server = BotServer(env, log_path=tmp_path / "first.log").start()
    db = Db(postgres_db)
    clients = [user(next_id(), f"C{n}", None) for n in range(12)]
    hang_s = 5
    telegram.set_delay(hang_s, method="sendMessage")  # calls hang: some in flight at the kill
    try:
        for c in clients:
            assert (await server.post(message(c, "/request hi"))).status_code == 200
        for _ in range(100):  # until a digest of cards is in flight too
            if await db.value(
                "SELECT count(*) FROM outbox_message WHERE status = 'sending' "
                "AND purpose = 'notify'"
            ):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        kill_group(server)
    killed_at = time.time()
    in_flight = {
        r["id"] for r in await db.fetch("SELECT id FROM outbox_message WHERE status = 'sending'")
    }
    queued = {
        r["id"] for r in await db.fetch("SELECT id FROM outbox_message WHERE status = 'pending'")
    }
    assert in_flight and queued
    telegram.recover()

    again = BotServer(env, log_path=tmp_path / "second.log").start()
    try:
        await db.settle(timeout=60)
    finally:
        again.stop()
    # The calls the dead process left hanging are answered (and recorded) `hang_s` after they
    # came: count only once all are. The restart above nearly always took longer already.
    await asyncio.sleep(max(0.0, killed_at + hang_s + 0.5 - time.time()))
    rows = await db.fetch(
        "SELECT id, chat_id, payload, status, purpose, request_id FROM outbox_message"
    )
    assert {r["status"] for r in rows} == {"sent"}
    cards = [r for r in rows if r["purpose"] == "notify"]
    assert {r["id"] for r in cards} & in_flight, "no digest was in flight at the kill"
    assert {r["id"] for r in cards} & queued, "no card was still queued at the kill"

    delivered = Counter(
        (c.params["chat_id"], c.params["text"])
        for c in telegram.calls("sendMessage")
        if c.status == 200
    )
    shown = Counter(telegram.shown_requests(admin))
    for row in rows:
        if row["purpose"] == "notify":  # cards leave in digests: count the requests shown
            times = shown[row["request_id"]]
        else:
            times = delivered[(row["chat_id"], json.loads(row["payload"])["text"])]
        if row["id"] in in_flight:
            assert 1 <= times <= 2, row
        else:
            assert times == 1, row  # queued or sent: never twice


# ----------------------------------------------------------------------------- Telegram outages


@pytest.fixture(scope="module")
def paced_server(
    request: pytest.FixtureRequest,
    fake_telegram: FakeTelegram,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BotServer, Db, int]]:
    """One bot for the outage tests, backing off 5 times faster than in production (a
    test hook, see `PacedBotServer`), started once: each test empties its tables."""
    tmp = tmp_path_factory.mktemp("paced")
    admin = next_id()
    paced = functools.partial(PacedBotServer, backoff_scale=BACKOFF_SCALE)
    with (
        migrated_copy("postgres", request, tmp) as url,
        running_bot(
            url,
            fake_telegram.base_url,
            tmp / "serve.log",
            runner=paced,
            ADMIN_TELEGRAM_ID=str(admin),
        ) as (server, db),
    ):
        yield server, db, admin


@pytest.fixture
async def running(
    paced_server: tuple[BotServer, Db, int], telegram: FakeTelegram
) -> AsyncIterator[tuple[BotServer, Db, FakeTelegram, int]]:
    """The paced bot with empty tables, a clean fake Bot API and an administrator of this
    test's own (calls a previous test left hanging in the fake never count here)."""
    server, db, _ = paced_server
    await db.settle(timeout=60)
    admin = next_id()
    await db.reset(admins=(admin,))
    telegram.reset()
    yield server, db, telegram, admin


async def test_server_errors_are_retried_with_growing_backoff_then_delivered_once(
    running: tuple[BotServer, Db, FakeTelegram, int],
) -> None:
    server, db, tg, _admin = running
    client = user(next_id())
    tg.fail_next(4, status=500, method="sendMessage")
    assert (await server.post(message(client, "/start"))).status_code == 200
    await db.settle(timeout=60)
    attempts = tg.calls("sendMessage", chat_id=client["id"])
    assert [c.status for c in attempts] == [500, 500, 500, 500, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    # The n-th wait is base * 2**n with +-25 % jitter: never shorter than its lower bound
    # (no retry storm; the bounds double), and longer than the wait two before it, whatever
    # the jitter (x4 nominal, x2.4 at worst) and however loaded the machine.
    for n, gap in enumerate(gaps):
        assert gap >= 0.75 * BACKOFF_BASE_S * 2**n, gaps
    for earlier, later in zip(gaps, gaps[2:], strict=False):
        assert later > earlier, gaps
    assert len(tg.sent_texts(client["id"])) == 1


async def test_retry_after_is_honoured(running: tuple[BotServer, Db, FakeTelegram, int]) -> None:
    server, db, tg, _ = running
    client = user(next_id())
    # Telegram's retry_after, not the bot's backoff (10x the paced server's first backoff)
    tg.fail_next(1, status=429, retry_after=2, method="sendMessage")
    assert (await server.post(message(client, "/start"))).status_code == 200
    await db.settle(timeout=30)
    first, second = tg.calls("sendMessage", chat_id=client["id"])
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 2
    assert len(tg.sent_texts(client["id"])) == 1


async def test_a_hanging_api_delays_messages_and_loses_none(
    running: tuple[BotServer, Db, FakeTelegram, int],
) -> None:
    server, db, tg, _admin = running
    tg.set_delay(8, method="sendMessage")  # longer than the client's read timeout
    clients = [user(next_id()) for _ in range(3)]
    for c in clients:
        assert (await server.post(message(c, "/request hi"))).status_code == 200
    await until(db, "SELECT count(*) FROM outbox_message WHERE last_error LIKE '%TimedOut%'")
    tg.recover()
    await db.settle(timeout=90)
    for c in clients:
        assert 1 <= len(tg.sent_texts(c["id"])) <= 2  # a timed-out call may have landed too
    assert await db.value("SELECT count(*) FROM outbox_message WHERE status <> 'sent'") == 0


async def test_refused_messages_fail_with_reason_and_hold_nothing_up(
    running: tuple[BotServer, Db, FakeTelegram, int],
) -> None:
    server, db, tg, admin = running
    blocked, gone, fine = user(next_id()), user(next_id()), user(next_id())
    tg.block_chat(blocked["id"])
    tg.block_chat(gone["id"], status=400, description="Bad Request: chat not found")
    for c in (blocked, gone, fine):
        assert (await server.post(message(c, "/request hi"))).status_code == 200
    await db.settle(timeout=30)
    failed = {
        r["chat_id"]: r["last_error"]
        for r in await db.fetch(
            "SELECT chat_id, last_error FROM outbox_message WHERE status = 'failed'"
        )
    }
    assert failed == {
        blocked["id"]: "Forbidden: Forbidden: bot was blocked by the user",
        gone["id"]: "BadRequest: Chat not found",
    }
    for chat in (blocked["id"], gone["id"]):
        assert len(tg.calls("sendMessage", chat_id=chat)) == 1  # not retried
    assert tg.sent_texts(fine["id"])
    assert len(tg.shown_requests(admin)) == 3  # every request still reached the administrator
    # the client writing again (they unblocked the bot) releases the chat
    tg.unblock_chat(blocked["id"])
    assert (await server.post(message(blocked, "/status"))).status_code == 200
    await db.settle()
    assert tg.sent_texts(blocked["id"])[-1].startswith("Your request #")


# ----------------------------------------------------------------------------- database outage


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    with ThrowawayCluster() as pg:
        yield pg


async def test_database_outage_gives_503_and_recovers_without_restart(
    cluster: ThrowawayCluster, start_bot: StartBot, telegram: FakeTelegram
) -> None:
    url = create_database(cluster.dsn)
    admin = next_id()
    await asyncio.to_thread(on_database, url, migrations.forwards)  # it runs its own loop
    server, db = start_bot(url=url, workers=2, ADMIN_TELEGRAM_ID=str(admin))
    client = user(next_id())
    assert (await server.post(message(client, "/request before"))).status_code == 200
    await db.settle()

    cluster.stop()
    update = message(user(next_id()), "/request during the outage")
    assert (await server.post(update)).status_code == 503
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{server.url}/health")
    assert health.status_code == 503 and health.json()["failing"] == ["database"]

    cluster.start()
    for _ in range(100):  # Telegram redelivers until it gets a 200
        answer = await server.post(update)
        if answer.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert answer.status_code == 200
    await db.settle(timeout=60)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server.url}/health")).status_code == 200
    sender = update["message"]["from"]["id"]
    assert telegram.sent_texts(sender)[0].startswith("Your request #")
    assert len(telegram.shown_requests(admin)) == 2
    assert server.process is not None and server.process.poll() is None
