"""The outbox sender in-process on a fake clock: real database, real fake Bot API over HTTP.

The sender's clock is injected, so a backoff of seconds or a `retry_after` of minutes is
crossed by moving the clock, never by sleeping. Each test calls `pump` (what the loop does
after a wakeup) and waits for the calls it started.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sosekni.db import sql
from sosekni.delivery.lease import lease_for
from sosekni.delivery.outbox import OutboxSender
from sosekni.delivery.policy import DeliveryPolicy
from sosekni.services import queues, requests
from sosekni.services.requests import Answer, Decided, Person
from sosekni.services.work import unit_of_work
from sosekni.standin import FakeTelegram

ADMINS = (7001, 7002)
POLICY = DeliveryPolicy()


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time() + 5  # ahead of every row the test writes

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def database(bound_database: str) -> str:
    """A migrated database of either engine, bound, with ADMINS its administrators."""
    for admin in ADMINS:
        await sql(
            "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
            "VALUES ({}, 'a', {}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            admin,
            True,
        )
    return bound_database


@pytest.fixture
async def sender(database: str, telegram: FakeTelegram) -> AsyncIterator[OutboxSender]:
    clock = FakeClock()
    found = OutboxSender(
        f"{telegram.base_url}/bot{telegram.token}",
        "en",
        lease_for(database),
        POLICY,
        clock=clock,
        jitter=lambda: 0.5,
    )
    assert await found._lead()
    yield found
    await found.finish()
    await found.close()


async def calls_done(sender: OutboxSender) -> None:
    """Wait for the calls in flight and for their completion callbacks to run."""
    while sender.tasks:
        await asyncio.wait(set(sender.tasks))
        await asyncio.sleep(0)


async def pump(sender: OutboxSender) -> int:
    """One round of the loop; wait for the calls it started. How many it started."""
    sender._last_full = -1e18  # look at the whole queue each round
    started = await sender.pump()
    await calls_done(sender)
    return started


async def run_for(sender: OutboxSender, seconds: float, step: float = 0.1) -> None:
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    end = clock.now + seconds
    while clock.now < end:
        await pump(sender)
        clock.advance(step)


async def queue_message(chat_id: int, text: str) -> None:
    async with unit_of_work() as work:
        work.message(chat_id, text, purpose="reply")


async def row(text: str) -> dict[str, Any]:
    for found in await sql("SELECT * FROM outbox_message ORDER BY id"):
        if json.loads(found["payload"]).get("text") == text:
            return found
    raise AssertionError(f"no outbox row with {text!r}")


def due_in(found: dict[str, Any], clock: FakeClock) -> float:
    from sosekni.db import as_utc

    return as_utc(found["next_attempt_at"]).timestamp() - clock.now


def person(telegram_id: int, name: str = "Olga") -> Person:
    return Person(telegram_id=telegram_id, first_name=name, username=None, language="en")


def shown_ids(params: dict[str, Any]) -> list[int]:
    markup = params.get("reply_markup") or {"inline_keyboard": []}
    return [
        int(b["callback_data"].split(":")[1])
        for line in markup["inline_keyboard"]
        for b in line
        if b["callback_data"].startswith("approve:")
    ]


# ----------------------------------------------------------------------------- backoff


async def test_a_failed_call_backs_off_on_the_clock_and_is_sent_when_due(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    telegram.fail_next(2, status=500, method="sendMessage")
    await queue_message(4001, "hello")

    await pump(sender)  # attempt 1 fails: back off 1 s (jitter fixed at the middle)
    assert due_in(await row("hello"), clock) == pytest.approx(1.0, abs=0.01)
    await pump(sender)
    assert len(telegram.calls("sendMessage")) == 1  # not due yet: nothing sent

    clock.advance(1.01)
    await pump(sender)  # attempt 2 fails: back off 2 s
    found = await row("hello")
    assert found["status"] == "pending" and found["attempts"] == 2
    assert due_in(found, clock) == pytest.approx(2.0, abs=0.01)

    clock.advance(2.01)
    await pump(sender)
    assert (await row("hello"))["status"] == "sent"
    assert telegram.sent_texts(4001) == ["hello"]


async def test_retry_after_holds_that_chat_and_not_the_others(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    telegram.fail_next(1, status=429, retry_after=60, method="sendMessage")
    await queue_message(4001, "first to A")
    await pump(sender)  # Telegram: wait a minute
    await queue_message(4001, "second to A")
    await queue_message(4002, "to B")
    await pump(sender)
    assert telegram.sent_texts(4002) == ["to B"]
    assert telegram.sent_texts(4001) == []
    assert due_in(await row("first to A"), clock) == pytest.approx(60, abs=0.01)

    clock.advance(59)
    await pump(sender)
    assert telegram.sent_texts(4001) == []
    clock.advance(1.01)
    await pump(sender)
    await pump(sender)
    assert telegram.sent_texts(4001) == ["first to A", "second to A"]  # in order


# ----------------------------------------------------------------------------- digests


async def submit_many(count: int) -> list[int]:
    ids = []
    for n in range(count):
        client = Person(50_000 + n, f"Client {n}", f"client{n}", "en")
        _, request_id = await requests.submit(client, client.telegram_id, f"Plot {n}", "en")
        assert request_id is not None
        ids.append(request_id)
    return ids


async def test_a_burst_reaches_each_administrator_as_a_few_digests_each_request_once(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    ids = await submit_many(25)
    await run_for(sender, 4.0)
    for admin in ADMINS:
        sent = telegram.calls("sendMessage", chat_id=admin)
        assert len(sent) == 3  # 10 + 10 + 5
        shown = [n for call in sent for n in shown_ids(call.params)]
        assert sorted(shown) == ids  # every request exactly once
        assert sent[0].params["text"].startswith("📥 <b>10 new requests</b>")
        copies = await sql("SELECT count(*) AS n FROM admin_notification WHERE chat_id = {}", admin)
        assert copies[0]["n"] == 25
    # Every client had the confirmation.
    assert all(len(telegram.sent_texts(50_000 + n)) == 1 for n in range(25))


async def test_queued_edits_of_one_digest_go_as_one_edit_with_every_outcome(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    ids = await submit_many(3)
    await run_for(sender, 1.0)
    for request_id in ids:
        outcome = await requests.decide(
            person(ADMINS[0]), request_id, "approved", Answer(ADMINS[0], "cb"), "en"
        )
        assert outcome is Decided.DECIDED
    await run_for(sender, 0.5)
    for admin in ADMINS:
        (edit,) = telegram.calls("editMessageText", chat_id=admin)
        text = edit.params["text"]
        assert text.count("✅ <b>Approved</b> by Olga") == 3
        assert "reply_markup" not in edit.params  # nothing left to decide: no buttons


async def test_a_card_still_queued_when_its_request_is_decided_is_not_sent(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    (request_id,) = await submit_many(1)
    await requests.decide(person(ADMINS[0]), request_id, "rejected", Answer(ADMINS[0]), "en")
    await run_for(sender, 2.0)
    for admin in ADMINS:
        texts = telegram.sent_texts(admin)
        assert not any("Access request" in t for t in texts), texts
    statuses = await sql(
        "SELECT status FROM outbox_message WHERE purpose = 'notify' AND request_id = {}",
        request_id,
    )
    assert {r["status"] for r in statuses} == {"dropped"}
    assert telegram.sent_texts(50_000) == [
        f"Your request #{request_id} has been received and is pending review. "
        "You will get a message here as soon as an administrator decides.",
        f"Sorry, your request #{request_id} has been rejected. "
        "You may send a new request with /request.",
    ]


async def test_a_decision_while_its_card_is_on_the_way_edits_the_card_after(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    (request_id,) = await submit_many(1)
    sender.clock.advance(1.0)  # type: ignore[attr-defined]
    telegram.set_delay(1.0, method="sendMessage")  # the card is in flight for a second
    sender._last_full = -1e18
    await sender.pump()
    assert sender.tasks
    await asyncio.sleep(0.3)  # rendered and on its way (the fake answers after 1 s)
    outcome = await requests.decide(
        person(ADMINS[0]), request_id, "approved", Answer(ADMINS[0], "cb"), "en"
    )
    assert outcome is Decided.DECIDED
    await calls_done(sender)
    telegram.set_delay(0)
    await run_for(sender, 0.5)
    for admin in ADMINS:
        (card,) = [c for c in telegram.calls("sendMessage", chat_id=admin)]
        assert shown_ids(card.params) == [request_id]  # rendered while pending
        edits = telegram.calls("editMessageText", chat_id=admin)
        assert len(edits) == 1
        assert "✅ <b>Approved</b>" in edits[0].params["text"]


async def test_text_replies_to_a_digest_name_the_request(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    ids = await submit_many(3)
    await run_for(sender, 1.0)
    admin = ADMINS[1]
    (digest,) = telegram.calls("sendMessage", chat_id=admin)
    message_id = (
        await sql("SELECT message_id FROM admin_notification WHERE chat_id = {} LIMIT 1", admin)
    )[0]["message_id"]

    async def reply(named: int | None, response: str = "approved", reason: str | None = None):
        return await requests.decide_by_reply(
            person(admin, "Ivan"), admin, message_id, None, response, "en", reason, named_id=named
        )

    assert await reply(None) is Decided.NOT_FOUND  # a bare Approve: which one?
    assert await reply(ids[1], "rejected", "no plot") is Decided.DECIDED
    assert await reply(999_999) is Decided.NOT_FOUND  # not in this message
    await run_for(sender, 3.0)  # four messages to one chat: the burst, then one a second
    texts = telegram.sent_texts(admin)
    assert any(
        re.search(rf"say which one, e\.g\. <code>Approve {ids[0]}</code>", t) for t in texts
    ), texts
    assert any("Request #999999 is not in the message you replied to" in t for t in texts)
    rows = await sql("SELECT id, status, reason FROM client_request ORDER BY id")
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("pending", None),
        ("rejected", "no plot"),
        ("pending", None),
    ]
    # The digest shows the outcome in its block and keeps the other rows' buttons.
    (edit,) = telegram.calls("editMessageText", chat_id=admin)
    assert edit.params["message_id"] == message_id
    assert shown_ids(edit.params) == [ids[0], ids[2]]
    assert "❌ <b>Rejected</b> by Ivan" in edit.params["text"]
    assert "Reason: no plot" in edit.params["text"]
    assert edit.params["text"].startswith("📥 <b>3 requests</b> · 2 waiting")
    del digest


async def test_a_telegram_outage_during_a_burst_delays_digests_and_loses_or_doubles_nothing(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    telegram.fail_next(1000, status=502)  # Telegram is down
    ids = await submit_many(12)
    await run_for(sender, 20.0, step=0.5)  # retries back off: 1, 2, 4, 8 s …
    failures = len(telegram.calls("sendMessage"))
    assert failures > 14 and all(c.status == 502 for c in telegram.calls("sendMessage"))
    assert not await sql("SELECT id FROM outbox_message WHERE status <> 'pending'")

    telegram.recover()
    await run_for(sender, 40.0, step=0.5)
    statuses = await sql("SELECT status, count(*) AS n FROM outbox_message GROUP BY status")
    assert {r["status"]: r["n"] for r in statuses} == {"sent": 12 + 2 * 12}
    for admin in ADMINS:
        assert sorted(telegram.shown_requests(admin)) == ids  # each once, none lost
    for n in range(12):
        assert len(telegram.sent_texts(50_000 + n)) == 1


# ----------------------------------------------------------------------------- stuck chats


async def until_finished(sender: OutboxSender, text: str, rounds: int) -> dict[str, Any]:
    """Pump, then move the clock to the row's next try, until it leaves `pending`."""
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    for _ in range(rounds):
        await pump(sender)
        found = await row(text)
        if found["status"] != "pending":
            return found
        clock.advance(max(due_in(found, clock), 0.0) + 0.01)
    return await row(text)


async def test_a_group_that_became_a_supergroup_gets_its_queue_there(
    sender: OutboxSender, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = -4001, -1_000_000_004_001
    telegram.migrate_chat(old, new)
    await queue_message(old, "one")
    await queue_message(old, "two")
    async with unit_of_work() as work:  # a call whose stored parameters name the chat too
        work.send("sendMessage", {"chat_id": old, "text": "three"}, chat_id=old, purpose="reply")
    await sql(
        "INSERT INTO admin_notification (request_id, admin_telegram_id, chat_id, message_id, "
        "created_at) VALUES (1, {}, {}, 5, CURRENT_TIMESTAMP)",
        ADMINS[0],
        old,
    )

    await run_for(sender, 3.0)

    assert telegram.sent_texts(new) == ["one", "two", "three"]
    assert len(telegram.calls(chat_id=old)) == 1  # one answer told; the rest went straight
    for text in ("one", "two", "three"):
        found = await row(text)
        assert (found["status"], found["chat_id"]) == ("sent", new)
    assert json.loads((await row("three"))["payload"])["chat_id"] == new
    copies = await sql("SELECT chat_id FROM admin_notification")
    assert [c["chat_id"] for c in copies] == [new]
    assert any(
        r.levelname == "WARNING" and f"became the supergroup {new}" in r.getMessage()
        for r in caplog.records
    )


async def test_a_message_failing_forever_is_given_up_and_its_chat_moves_on(
    sender: OutboxSender, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    started = clock.now
    telegram.fail_next(10**6, status=500, method="sendMessage")  # never recovers by itself
    await queue_message(4001, "stuck")
    await queue_message(4001, "next")

    found = await until_finished(sender, "stuck", rounds=POLICY.max_attempts + 5)

    assert found["status"] == "failed"
    assert found["attempts"] == POLICY.max_attempts
    assert found["last_error"].startswith(f"gave up (1.0 h old, {POLICY.max_attempts} attempt")
    assert "Internal Server Error (500)" in found["last_error"]
    assert clock.now - started < POLICY.max_age_s  # the attempts' bound came first (~1 h)
    assert len(telegram.calls("sendMessage", chat_id=4001)) == POLICY.max_attempts
    assert any(
        r.levelname == "ERROR" and "failed for good" in r.getMessage() for r in caplog.records
    )
    telegram.recover()
    await until_finished(sender, "next", rounds=3)
    assert telegram.sent_texts(4001) == ["next"]
    assert (await row("next"))["status"] == "sent"


async def test_a_message_held_by_429s_is_given_up_by_age_and_429s_are_not_attempts(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    telegram.fail_next(10**6, status=429, retry_after=3600, method="sendMessage")
    await queue_message(4001, "paced")

    found = await until_finished(sender, "paced", rounds=30)

    assert found["status"] == "failed"
    assert found["attempts"] == 0  # Telegram set the pace; the message never failed
    assert found["last_error"].startswith("gave up (24.0 h old, 0 attempt(s)): RetryAfter")
    assert len(telegram.calls("sendMessage")) == 25  # one an hour, the last at 24 h


def test_the_default_bounds_give_up_after_20_attempts_or_a_day() -> None:
    assert (POLICY.max_attempts, POLICY.max_age_s) == (20, 24 * 3600)
    assert not POLICY.exhausted(19, 3600)
    assert POLICY.exhausted(20, 60)
    assert POLICY.exhausted(1, 24 * 3600)


async def test_a_failed_message_the_operator_retries_is_sent_at_the_next_look(
    sender: OutboxSender, telegram: FakeTelegram
) -> None:
    # (a 403 would mark the chat blocked: held until the client writes, test_blocked_clients)
    telegram.fail_next(
        1, status=400, description="Bad Request: chat not found", method="sendMessage"
    )
    await queue_message(4001, "again")
    await pump(sender)
    found = await row("again")
    assert found["status"] == "failed"

    assert await queues.retry(queues.OUTBOX, int(found["id"])) is queues.Retried.QUEUED
    await pump(sender)  # the loop's full look every poll_interval_s finds it

    assert (await row("again"))["status"] == "sent"
    assert telegram.sent_texts(4001) == ["again"]
