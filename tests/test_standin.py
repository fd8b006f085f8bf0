"""The Telegram stand-in (sosekni.standin), exercised through a real python-telegram-bot ``Bot``
and raw HTTP, in a thread of the test process and as a process of its own."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.request import HTTPXRequest

from sosekni.standin import NOT_MODIFIED, FakeTelegram, check_text, parse_html

ROOT = Path(__file__).resolve().parent.parent
USER = 1001
ADMIN_GROUP = -1001234567890


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


def make_bot(fake: FakeTelegram, token: str | None = None, read_timeout: float = 5) -> telegram.Bot:
    return telegram.Bot(
        token or fake.token,
        base_url=f"{fake.base_url}/bot",
        request=HTTPXRequest(read_timeout=read_timeout),
    )


def keyboard(request_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Approve", callback_data=f"approve:{request_id}"),
                InlineKeyboardButton("Reject", callback_data=f"reject:{request_id}"),
            ]
        ]
    )


def keyboard_dict(request_id: int) -> dict[str, object]:
    return {
        "inline_keyboard": [
            [
                {"text": "Approve", "callback_data": f"approve:{request_id}"},
                {"text": "Reject", "callback_data": f"reject:{request_id}"},
            ]
        ]
    }


def retry_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def test_get_me(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        me = await bot.get_me()
        assert me.id == 123456
        assert me.is_bot
        assert me.first_name == "SOSenki Test"
        assert me.username == "SoSenkiTestBot"
        assert me.can_join_groups is True
        assert bot.username == "SoSenkiTestBot"
    assert [call.method for call in fake.calls()] == ["getMe", "getMe"]
    assert all(call.status == 200 for call in fake.calls())


async def test_username_is_configurable() -> None:
    with FakeTelegram(username="OtherBot") as other:
        async with make_bot(other) as bot:
            assert (await bot.get_me()).username == "OtherBot"


async def test_send_message_ids_markup_and_recording(fake: FakeTelegram) -> None:
    before = int(time.time())
    async with make_bot(fake) as bot:
        first = await bot.send_message(USER, "New request #1", reply_markup=keyboard(1))
        second = await bot.send_message(USER, "New request #2", disable_notification=True)
        other = await bot.send_message(ADMIN_GROUP, "For the admins", parse_mode="HTML")

    assert (first.message_id, second.message_id, other.message_id) == (1, 2, 1)
    assert first.chat.id == USER
    assert first.chat.type == "private"
    assert other.chat.id == ADMIN_GROUP
    assert first.from_user is not None and first.from_user.id == 123456
    assert first.text == "New request #1"
    assert first.reply_markup == keyboard(1)
    assert second.reply_markup is None
    assert before <= int(first.date.timestamp()) <= int(time.time())

    sends = fake.calls("sendMessage", chat_id=USER)
    assert len(sends) == 2
    assert sends[0].params == {
        "chat_id": USER,
        "text": "New request #1",
        "reply_markup": keyboard_dict(1),
    }
    assert sends[1].params["disable_notification"] is True
    assert fake.calls("sendmessage", chat_id=ADMIN_GROUP)[0].params["parse_mode"] == "HTML"
    assert fake.sent_texts(USER) == ["New request #1", "New request #2"]
    assert fake.sent_texts(ADMIN_GROUP) == ["For the admins"]
    assert fake.sent_texts(4242) == []


async def test_text_that_looks_like_json_stays_a_string(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        for text in ("42", "true", '{"a": 1}', "null"):
            message = await bot.send_message(USER, text)
            assert message.text == text
    assert fake.sent_texts(USER) == ["42", "true", '{"a": 1}', "null"]


async def test_edit_message_text_and_not_modified(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        sent = await bot.send_message(ADMIN_GROUP, "Request #7: pending", reply_markup=keyboard(7))
        edited = await bot.edit_message_text(
            "Request #7: approved", chat_id=ADMIN_GROUP, message_id=sent.message_id
        )
        assert isinstance(edited, telegram.Message)
        assert edited.text == "Request #7: approved"
        assert edited.message_id == sent.message_id
        assert edited.reply_markup is None  # an edit without reply_markup drops the keyboard
        assert edited.edit_date is not None

        with pytest.raises(BadRequest) as caught:
            await bot.edit_message_text(
                "Request #7: approved", chat_id=ADMIN_GROUP, message_id=sent.message_id
            )
        # PTB strips "Bad Request: " and capitalises what is left.
        assert caught.value.message.startswith("Message is not modified: specified new message")

        # Same text but a different keyboard is a modification.
        await bot.edit_message_text(
            "Request #7: approved",
            chat_id=ADMIN_GROUP,
            message_id=sent.message_id,
            reply_markup=keyboard(8),
        )
        with pytest.raises(BadRequest, match="Message is not modified"):
            await bot.edit_message_reply_markup(
                chat_id=ADMIN_GROUP, message_id=sent.message_id, reply_markup=keyboard(8)
            )
        cleared = await bot.edit_message_reply_markup(
            chat_id=ADMIN_GROUP, message_id=sent.message_id
        )
        assert isinstance(cleared, telegram.Message)
        assert cleared.text == "Request #7: approved"
        assert cleared.reply_markup is None

        # A message the fake never saw (e.g. from a pushed update) can be edited too.
        unknown = await bot.edit_message_text("late edit", chat_id=USER, message_id=99)
        assert isinstance(unknown, telegram.Message)
        assert unknown.message_id == 99

    statuses = [call.status for call in fake.calls("editMessageText")]
    assert statuses == [200, 400, 200, 200]
    failed = fake.calls("editMessageReplyMarkup")[0]
    assert failed.status == 400
    assert failed.params["reply_markup"] == keyboard_dict(8)
    assert failed.params["message_id"] == sent.message_id


async def test_answer_callback_query(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        assert await bot.answer_callback_query("4382938472", text="Done", show_alert=True)
        assert await bot.answer_callback_query("17")
    first, second = fake.calls("answerCallbackQuery")
    assert first.params == {"callback_query_id": "4382938472", "text": "Done", "show_alert": True}
    assert second.params == {"callback_query_id": "17"}  # ids stay strings


async def test_webhook_lifecycle(fake: FakeTelegram) -> None:
    fake.push_update(
        {"message": {"message_id": 1, "date": 0, "chat": {"id": USER, "type": "private"}}}
    )
    async with make_bot(fake) as bot:
        empty = await bot.get_webhook_info()
        assert empty.url == ""
        assert empty.pending_update_count == 1

        assert await bot.set_webhook(
            "https://bot.example.org/telegram/webhook",
            secret_token="s3cr3t_token",
            allowed_updates=["message", "callback_query"],
            max_connections=10,
        )
        info = await bot.get_webhook_info()
        assert info.url == "https://bot.example.org/telegram/webhook"
        assert info.has_custom_certificate is False
        assert info.pending_update_count == 1
        assert info.max_connections == 10
        assert info.allowed_updates == ("message", "callback_query")
        assert info.last_error_date is None
        assert fake.webhook_url() == "https://bot.example.org/telegram/webhook"

        with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
            await bot.get_updates()

        fake.set_webhook_error("Wrong response from the webhook: 502 Bad Gateway", date=1700000000)
        info = await bot.get_webhook_info()
        assert info.last_error_message == "Wrong response from the webhook: 502 Bad Gateway"
        assert info.last_error_date == dtm.datetime.fromtimestamp(1700000000, tz=dtm.UTC)

        assert await bot.delete_webhook(drop_pending_updates=True)
        info = await bot.get_webhook_info()
        assert info.url == ""
        assert info.pending_update_count == 0
        assert info.last_error_message is None

        fake.push_update(
            {"message": {"message_id": 2, "date": 0, "chat": {"id": USER, "type": "private"}}}
        )
        assert await bot.set_webhook("https://bot.example.org/hook", drop_pending_updates=True)
        assert (await bot.get_webhook_info()).pending_update_count == 0

    set_call = fake.calls("setWebhook")[0]
    assert set_call.params == {
        "url": "https://bot.example.org/telegram/webhook",
        "secret_token": "s3cr3t_token",
        "allowed_updates": ["message", "callback_query"],
        "max_connections": 10,
    }
    assert fake.calls("deleteWebhook")[0].params == {"drop_pending_updates": True}
    assert [call.status for call in fake.calls("getUpdates")] == [409]


def callback_update(update_id: int | None = None) -> dict[str, object]:
    update: dict[str, object] = {
        "callback_query": {
            "id": "991",
            "from": {"id": USER, "is_bot": False, "first_name": "Ann"},
            "chat_instance": "ci",
            "data": "approve:1",
        }
    }
    if update_id is not None:
        update["update_id"] = update_id
    return update


async def test_get_updates_queue_and_offsets(fake: FakeTelegram) -> None:
    first = fake.push_update(
        {"message": {"message_id": 1, "date": 0, "chat": {"id": USER, "type": "private"}}}
    )
    second = fake.push_update(callback_update())
    assert (first, second) == (1, 2)
    assert fake.push_update(callback_update(update_id=50)) == 50
    assert fake.push_update(callback_update()) == 51

    async with make_bot(fake) as bot:
        updates = await bot.get_updates()
        assert [u.update_id for u in updates] == [1, 2, 50, 51]
        assert updates[1].callback_query is not None
        assert updates[1].callback_query.data == "approve:1"

        limited = await bot.get_updates(offset=2, limit=2)
        assert [u.update_id for u in limited] == [2, 50]
        assert [u["update_id"] for u in fake.pending_updates()] == [2, 50, 51]  # 1 confirmed

        assert [u.update_id for u in await bot.get_updates(offset=52)] == []
        assert fake.pending_updates() == []

    offsets = [call.params.get("offset") for call in fake.calls("getUpdates")]
    assert offsets == [None, 2, 52]
    assert fake.calls("getUpdates")[1].params["limit"] == 2


class ManualClock:
    """A clock for the fake that moves only when the test moves it.

    The fake measures long-poll timeouts on it, so a test decides when a timeout runs out and
    asserts the order of events instead of elapsed wall-clock time, which a loaded machine
    stretches.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_get_updates_long_poll() -> None:
    clock = ManualClock()
    fake = FakeTelegram(clock=clock).start()
    try:
        # The client's read timeout is generous: only a poll held for ever could reach it.
        async with make_bot(fake, read_timeout=30) as bot:
            # Held while its timeout lasts on the fake's clock, answered empty once it ran out.
            poll = asyncio.create_task(bot.get_updates(timeout=1))
            await asyncio.sleep(0.3)
            assert not poll.done()  # the clock stands still: nothing can have ended it
            while not poll.done():
                clock.advance(0.25)
                await asyncio.wait([poll], timeout=0.1)
            assert poll.result() == ()
            assert clock.now >= 1  # answered no sooner than its whole timeout, on the clock

            # An update pushed meanwhile ends the poll: the clock stands still, so nothing else
            # could (a poll left to its timeout would end in the client's TimedOut).
            poll = asyncio.create_task(bot.get_updates(timeout=8))
            await asyncio.sleep(0.3)
            assert not poll.done()
            fake.push_update(callback_update())
            updates = await poll
            assert [u.update_id for u in updates] == [1]
    finally:
        fake.stop()
    assert fake.calls("getUpdates")[0].params["timeout"] == 1


async def test_a_reset_ends_a_held_poll_which_neither_takes_updates_nor_is_recorded() -> None:
    """A test's killed poller may leave its long poll held; after the next test's reset it
    must not take that test's updates nor show among its calls."""
    clock = ManualClock()  # stands still: only the reset can end the poll
    fake = FakeTelegram(clock=clock).start()
    try:
        async with make_bot(fake, read_timeout=30) as bot:
            held = asyncio.create_task(bot.get_updates(timeout=50))
            await asyncio.sleep(0.3)
            assert not held.done()
            fake.reset()
            fake.push_update(callback_update())
            assert await held == ()
            assert fake.calls() == []
            [update] = await bot.get_updates()  # the update waited for the next poll
            assert update.callback_query is not None
    finally:
        fake.stop()


async def test_wrong_token_is_invalid(fake: FakeTelegram) -> None:
    bot = make_bot(fake, token="654321:WRONG-token")
    with pytest.raises(InvalidToken):
        async with bot:
            pass
    call = fake.calls("getMe")[0]
    assert call.status == 401


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_fail_next_429_is_retry_after(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        fake.fail_next(1, status=429, retry_after=7, method="sendMessage")
        await bot.get_me()  # other methods are not affected
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(USER, "first try")
        assert retry_seconds(caught.value) == 7
        await bot.send_message(USER, "second try")
    assert [c.status for c in fake.calls("sendMessage")] == [429, 200]
    assert fake.sent_texts(USER) == ["second try"]


async def test_fail_next_counts_and_statuses(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        fake.fail_next(2)
        for _ in range(2):
            with pytest.raises(NetworkError, match="Internal Server Error"):
                await bot.send_message(USER, "x")
        await bot.send_message(USER, "y")

        fake.fail_next(1, status=400, description="Bad Request: chat not found")
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(USER, "z")

        fake.fail_next(5, status=502)
        fake.recover()
        await bot.send_message(USER, "after recover")
    assert fake.sent_texts(USER) == ["y", "after recover"]
    assert [c.status for c in fake.calls("sendMessage")] == [500, 500, 200, 400, 200]


async def test_raw_429_body() -> None:
    with FakeTelegram() as fake:
        fake.fail_next(1, status=429, retry_after=3)
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{fake.base_url}/bot{fake.token}/getMe")
        assert response.status_code == 429
        assert response.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        }


async def test_block_chat_is_forbidden(fake: FakeTelegram) -> None:
    fake.block_chat(USER)
    async with make_bot(fake) as bot:
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_message(USER, "hello?")
        await bot.send_message(ADMIN_GROUP, "others still work")
        fake.unblock_chat(USER)
        await bot.send_message(USER, "hello again")
    assert [c.status for c in fake.calls("sendMessage", chat_id=USER)] == [403, 200]
    assert fake.sent_texts(USER) == ["hello again"]


async def test_delay_times_out_and_stop_does_not_hang() -> None:
    fake = FakeTelegram().start()
    try:
        async with make_bot(fake) as bot:
            fake.set_delay(1.5, method="sendMessage")
            with pytest.raises(TimedOut):
                await bot.send_message(USER, "slow", read_timeout=0.3)
            await bot.get_me()  # not delayed
            fake.set_delay(0, method="sendMessage")
            await bot.send_message(USER, "fast", read_timeout=2)
            # The timed-out message was still delivered, as can happen with Telegram.
            await fake.wait_for_async(lambda f: len(f.sent_texts(USER)) == 2, timeout=5)

            # The delay (30 s) outlasts the client's read timeout (20 s): a request stop did not
            # cut would end in TimedOut, and a stop waiting for it would come after that.
            fake.set_delay(30)
            request = asyncio.create_task(bot.get_me(read_timeout=20))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(fake.stop)
            with pytest.raises(NetworkError) as cut:
                await request
            assert not isinstance(cut.value, TimedOut), cut.value
    finally:
        fake.stop()


async def test_stop_and_start_keep_port_and_state(fake: FakeTelegram) -> None:
    base_url = fake.base_url
    async with make_bot(fake) as bot:
        await bot.send_message(USER, "before outage")
        fake.stop()
        with pytest.raises(NetworkError):
            await bot.send_message(USER, "during outage")
        fake.start()
        assert fake.base_url == base_url
        await bot.send_message(USER, "after outage")
    assert fake.sent_texts(USER) == ["before outage", "after outage"]


async def test_long_poll_is_released_by_stop() -> None:
    fake = FakeTelegram().start()
    async with make_bot(fake, read_timeout=20) as bot:
        # A poll left to its timeout would be answered (empty) and one the client gave up on
        # would end in TimedOut: only a stop that cuts it makes a connection error.
        task = asyncio.create_task(bot.get_updates(timeout=10))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(fake.stop)
        with pytest.raises(NetworkError) as cut:
            await task
        assert not isinstance(cut.value, TimedOut), cut.value


async def test_raw_http_encodings(fake: FakeTelegram) -> None:
    url = f"{fake.base_url}/bot{fake.token}"
    markup = json.dumps(keyboard_dict(3))
    async with httpx.AsyncClient() as client:
        # GET with a query string, method name in another case.
        response = await client.get(f"{url}/SENDMESSAGE", params={"chat_id": "5", "text": "q"})
        assert response.status_code == 200
        assert response.json()["result"]["chat"] == {"id": 5, "type": "private"}

        # application/json body with real JSON types.
        response = await client.post(
            f"{url}/sendMessage",
            json={"chat_id": 5, "text": "j", "reply_markup": keyboard_dict(3)},
        )
        assert response.json()["result"]["reply_markup"] == keyboard_dict(3)

        # multipart/form-data, as PTB sends when files are attached.
        response = await client.post(
            f"{url}/sendMessage",
            data={"chat_id": "-100777", "text": "m ü", "reply_markup": markup},
            files={"document": ("a.txt", b"file body", "text/plain")},
        )
        assert response.status_code == 200

        # Hand-written booleans and ints in a query string.
        response = await client.post(
            f"{url}/deleteWebhook", params={"drop_pending_updates": "True"}
        )
        assert response.json() == {"ok": True, "result": True}

        response = await client.post(f"{url}/sendMessage", data={"chat_id": "@news", "text": "c"})
        assert response.json()["result"]["chat"]["type"] == "channel"

        response = await client.post(f"{url}/noSuchMethod")
        assert response.status_code == 404
        assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}

        response = await client.post(f"{fake.base_url}/bot1:bad/getMe")
        assert response.status_code == 401
        assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}

        response = await client.post(f"{url}/sendMessage", data={"chat_id": "5", "text": ""})
        assert response.status_code == 400

    sends = fake.calls("sendMessage")
    assert [c.params["chat_id"] for c in sends] == [5, 5, -100777, "@news", 5]
    assert sends[0].params == {"chat_id": 5, "text": "q"}
    assert sends[1].params["reply_markup"] == keyboard_dict(3)
    assert sends[2].params["text"] == "m ü"
    assert sends[2].params["reply_markup"] == keyboard_dict(3)
    assert sends[2].params["document"]["content"] == b"file body"
    assert fake.calls("deleteWebhook")[0].params == {"drop_pending_updates": True}
    assert fake.calls("noSuchMethod")[0].status == 404
    assert fake.calls("getMe")[0].status == 401


async def test_wait_for_and_reset(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        sender = asyncio.create_task(bot.send_message(USER, "eventually"))
        await fake.wait_for_async(lambda f: f.sent_texts(USER) == ["eventually"])
        await sender
    fake.wait_for(lambda f: f.sent_texts(USER)[-1] == "eventually", timeout=1)

    with pytest.raises(AssertionError) as caught:
        fake.wait_for(lambda f: f.sent_texts(USER)[5] == "never", timeout=0.2)
    text = str(caught.value)
    assert "sendMessage -> 200" in text
    assert "IndexError" in text

    fake.fail_next(3)
    fake.block_chat(USER)
    fake.set_webhook_error("boom")
    fake.push_update(callback_update())
    fake.reset()
    assert fake.calls() == []
    async with make_bot(fake) as bot:
        again = await bot.send_message(USER, "fresh")
        assert again.message_id == 1
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 0
        assert info.last_error_message is None
    assert NOT_MODIFIED.startswith("Bad Request: message is not modified")


def test_process_mode_and_bench_records() -> None:
    """``python -m sosekni.standin``: the benchmark's process, its records over /bench/."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    token = "42:PROCESS-token"
    command = [sys.executable, "-m", "sosekni.standin", "--port", "0", "--username", "CliBot"]
    process = subprocess.Popen(
        [*command, "--token", token],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on "), line
        base_url = f"http://127.0.0.1:{int(line.split()[-1])}"
        api = f"{base_url}/bot{token}"
        markup = json.dumps(
            {
                "inline_keyboard": [
                    [
                        {"text": "Approve", "callback_data": "approve:7"},
                        {"text": "Reject", "callback_data": "reject:7"},
                    ],
                    [{"text": "Approve", "callback_data": "approve:9"}],
                ]
            }
        )
        with httpx.Client(base_url=base_url) as client:
            me = client.post(f"{api}/getMe").json()
            assert me["result"]["username"] == "CliBot"
            assert client.get(f"{api}/nope").status_code == 404
            assert client.get(f"{base_url}/bot0:x/getMe").status_code == 401
            sent = client.post(
                f"{api}/sendMessage",
                data={"chat_id": "1002", "text": "Requests #7 and #9", "reply_markup": markup},
            ).json()["result"]
            assert sent["message_id"] == 1
            long_text = "Request #7: approved " + "x" * 60
            client.post(
                f"{api}/editMessageText",
                data={"chat_id": "1002", "message_id": "1", "text": long_text},
            )
            client.post(f"{api}/answerCallbackQuery", data={"callback_query_id": "991"})
            # Telegram's checks hold in this mode too.
            bad = client.post(
                f"{api}/sendMessage", data={"chat_id": "5", "text": "<x>", "parse_mode": "HTML"}
            )
            assert bad.status_code == 400

            calls = client.get("/bench/calls").json()
            assert calls["total"] == 7
            t = [call[0] for call in calls["calls"]]
            assert t == sorted(t) and all(isinstance(at, float) for at in t)
            assert [call[1:] for call in calls["calls"]] == [
                ["getMe", None, None, ""],
                ["nope", None, None, ""],
                ["getMe", None, None, ""],
                ["sendMessage", 1002, None, "Requests #7 and #9"],
                ["editMessageText", 1002, None, long_text[:48]],
                ["answerCallbackQuery", None, "991", ""],
                ["sendMessage", 5, None, "<x>"],
            ]
            details = client.get("/bench/details", params={"since": 3}).json()
            assert details["total"] == 7
            assert [call[1:] for call in details["calls"]] == [
                ["sendMessage", 1002, 1, None, [7, 9], [7, 9], True, "Requests #7 and #9"],
                ["editMessageText", 1002, 1, None, [7], [], False, long_text[:48]],
                ["answerCallbackQuery", None, None, "991", [], [], False, ""],
                ["sendMessage", 5, None, None, [], [], False, "<x>"],
            ]
            assert client.get("/bench/calls", params={"since": 7}).json() == {
                "total": 7,
                "calls": [],
            }
            reset = client.post("/bench/reset")
            assert (reset.status_code, reset.json()) == (200, {"ok": True})
            assert client.get("/bench/calls").json() == {"total": 0, "calls": []}
            # Message ids start again after a reset, as for a fresh Telegram chat.
            again = client.post(f"{api}/sendMessage", data={"chat_id": "1002", "text": "new"})
            assert again.json()["result"]["message_id"] == 1
            assert client.get("/bench/nothing").status_code == 404
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stderr == ""


async def test_application_polls_and_answers(fake: FakeTelegram) -> None:
    from telegram.ext import Application, CallbackQueryHandler, ContextTypes

    async def on_button(update: telegram.Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.message is not None
        await query.answer("Approved")
        await context.bot.send_message(query.message.chat.id, f"got {query.data}")

    application = Application.builder().token(fake.token).base_url(f"{fake.base_url}/bot").build()
    application.add_handler(CallbackQueryHandler(on_button))
    update = callback_update()
    update["callback_query"]["message"] = {  # type: ignore[index]
        "message_id": 5,
        "date": 0,
        "chat": {"id": USER, "type": "private"},
        "text": "Approve?",
    }
    fake.push_update(update)
    async with application:
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=2))
        await application.start()
        try:
            await fake.wait_for_async(lambda f: f.sent_texts(USER) == ["got approve:1"])
        finally:
            await application.updater.stop()
            await application.stop()
    assert fake.calls("answerCallbackQuery")[0].params["text"] == "Approved"
    assert fake.calls("deleteWebhook")  # PTB clears any webhook before polling
    assert fake.pending_updates() == []


async def test_keep_alive_answers_pipelined_requests_in_order() -> None:
    """Two requests in one write on one connection, the first one held by a delay on the
    stand-in's clock: both answered on that connection, in the order asked."""
    clock = ManualClock()
    with FakeTelegram(clock=clock) as fake:
        fake.set_delay(1, method="getMe")
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        try:
            request = (
                "POST /bot{token}/{method} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                "Content-Length: {length}\r\n\r\n{body}"
            )
            body = "chat_id=5&text=second"
            writer.write(
                (
                    request.format(token=fake.token, method="getMe", length=0, body="")
                    + request.format(
                        token=fake.token, method="sendMessage", length=len(body), body=body
                    )
                ).encode()
            )
            await writer.drain()
            await asyncio.sleep(0.3)
            assert fake.calls() == []  # the delay holds getMe, and sendMessage waits its turn
            clock.advance(1)
            answers = []
            for _ in range(2):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                assert b"Connection: keep-alive" in head
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                answers.append(json.loads(await reader.readexactly(length)))
        finally:
            writer.close()
    assert answers[0]["result"]["username"] == fake.username
    assert answers[1]["result"]["text"] == "second"
    assert [call.method for call in fake.calls()] == ["getMe", "sendMessage"]


async def test_invite_links_need_an_administrator_with_the_invite_right(
    fake: FakeTelegram,
) -> None:
    chat = -1009876543210
    expire = int(time.time()) + 3600
    async with make_bot(fake) as bot:
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.create_chat_invite_link(chat, member_limit=1)
        fake.set_bot_member(chat, "left")
        with pytest.raises(Forbidden, match="bot is not a member of the supergroup chat"):
            await bot.create_chat_invite_link(chat, member_limit=1)
        fake.set_bot_member(chat, "administrator", can_invite_users=False)
        with pytest.raises(BadRequest, match="Not enough rights to manage chat invite links"):
            await bot.create_chat_invite_link(chat, member_limit=1)
        fake.set_bot_member(chat, "administrator", can_invite_users=True)
        with pytest.raises(BadRequest, match="Member limit must be between 1 and 99999"):
            await bot.create_chat_invite_link(chat, member_limit=0)
        link = await bot.create_chat_invite_link(
            chat, name="request #7", member_limit=1, expire_date=expire
        )
        assert link.invite_link.startswith("https://t.me/+")
        assert (link.name, link.member_limit, link.is_revoked) == ("request #7", 1, False)
        assert link.creator.id == fake.bot_id and not link.is_primary
        assert int(link.expire_date.timestamp()) == expire
        revoked = await bot.revoke_chat_invite_link(chat, link.invite_link)
        assert revoked.is_revoked and revoked.invite_link == link.invite_link
        with pytest.raises(BadRequest, match="Invite_hash_expired"):
            await bot.revoke_chat_invite_link(chat, "https://t.me/+unknown")
    (stored,) = fake.invite_links(chat)
    assert stored["is_revoked"] is True
    # Our own sender posts JSON: the same answer shape.
    answer = httpx.post(
        f"{fake.base_url}/bot{fake.token}/createChatInviteLink",
        json={"chat_id": chat, "name": "request #8", "member_limit": 1, "expire_date": expire},
    ).json()
    assert answer["ok"] is True and answer["result"]["expire_date"] == expire


async def test_get_chat_member_of_the_bot(fake: FakeTelegram) -> None:
    chat = -1009876543211
    async with make_bot(fake) as bot:
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.get_chat_member(chat, fake.bot_id)
        fake.set_bot_member(chat, "administrator", can_invite_users=True)
        member = await bot.get_chat_member(chat, fake.bot_id)
        assert member.status == "administrator" and member.can_invite_users is True
        assert member.user.id == fake.bot_id
        fake.set_bot_member(chat, "member")
        assert (await bot.get_chat_member(chat, fake.bot_id)).status == "member"
        fake.set_bot_member(chat, "kicked")
        with pytest.raises(Forbidden):
            await bot.get_chat_member(chat, fake.bot_id)


async def test_get_chat_member_of_any_user(fake: FakeTelegram) -> None:
    chat = -1009876543213
    async with make_bot(fake) as bot:
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.get_chat_member(chat, USER)
        fake.set_bot_member(chat, "left")
        with pytest.raises(Forbidden, match="bot is not a member of the supergroup chat"):
            await bot.get_chat_member(chat, USER)
        fake.set_bot_member(chat, "administrator", can_invite_users=True)
        member = await bot.get_chat_member(chat, USER)  # never set: left
        assert (member.status, member.user.id, member.user.is_bot) == ("left", USER, False)
        fake.set_member(chat, USER, "member")
        assert (await bot.get_chat_member(chat, USER)).status == "member"
        fake.set_member(chat, USER, "restricted", is_member=False)
        restricted = await bot.get_chat_member(chat, USER)
        assert restricted.status == "restricted" and restricted.is_member is False
        fake.set_member(chat, USER, "kicked")
        assert (await bot.get_chat_member(chat, USER)).status == "kicked"
        fake.set_member(chat, USER, "creator")
        assert (await bot.get_chat_member(chat, USER)).status == "creator"
        fake.set_member(chat, USER, "administrator")
        admin = await bot.get_chat_member(chat, USER)
        assert admin.status == "administrator" and admin.can_invite_users is False
        # Not the bot's own membership.
        assert (await bot.get_chat_member(chat, fake.bot_id)).status == "administrator"
    # Our own sender posts JSON: the same shapes.
    fake.set_member(chat, USER, "restricted", is_member=True)
    answer = httpx.post(
        f"{fake.base_url}/bot{fake.token}/getChatMember", json={"chat_id": chat, "user_id": USER}
    ).json()
    assert answer["result"]["status"] == "restricted" and answer["result"]["is_member"] is True


async def test_join_requests_are_approved_or_declined_once(fake: FakeTelegram) -> None:
    chat = -1009876543212
    fake.set_bot_member(chat, "administrator", can_invite_users=False)
    fake.add_join_request(chat, USER)
    fake.add_join_request(chat, USER + 1)
    async with make_bot(fake) as bot:
        with pytest.raises(BadRequest, match="Chat_admin_required"):
            await bot.approve_chat_join_request(chat, USER)
        fake.set_bot_member(chat, "administrator", can_invite_users=True)
        assert await bot.approve_chat_join_request(chat, USER) is True
        assert await bot.decline_chat_join_request(chat, USER + 1) is True
        with pytest.raises(BadRequest, match="Hide_requester_missing"):
            await bot.approve_chat_join_request(chat, USER)  # answered already
        with pytest.raises(BadRequest, match="Hide_requester_missing"):
            await bot.decline_chat_join_request(chat, USER + 2)  # never asked
    assert fake.join_request_state(chat, USER) == "approved"
    assert fake.join_request_state(chat, USER + 1) == "declined"
    assert fake.join_request_state(chat, USER + 2) is None


async def test_core_answers_other_content_types_and_streams_until_the_client_goes() -> None:
    """The core's three answers: the JSON tuple (the fast path), a Response of another content
    type, and a Stream written chunk by chunk until the client hangs up (the stream's
    generator is then closed) or the core stops (a stream still open is cut)."""
    from sosekni.standin.server import Core, Response, Stream

    closed: list[str] = []
    first_closed = asyncio.Event()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def events(name: str) -> Any:
        try:
            while True:
                yield await chunks.get()
        finally:
            closed.append(name)
            first_closed.set()

    def handler(method: str, path: str, query: str, content_type: str, body: bytes) -> Any:
        if path == "/page":
            return Response(200, "<p>é</p>".encode(), "text/html; charset=utf-8")
        if path.startswith("/stream"):
            return Stream(events(path))
        return 200, json.dumps({"method": method, "body": body.decode()}).encode()

    core = Core(handler)
    port = await core.open("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            page = await client.get("/page")
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.text == "<p>é</p>"
            posted = await client.post("/x", content=b"hi")
            assert posted.headers["content-type"] == "application/json"
            assert posted.json() == {"method": "POST", "body": "hi"}

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream-1 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: text/event-stream" in head and b"Content-Length" not in head
        chunks.put_nowait(b"data: 1\n\n")
        chunks.put_nowait(b"data: 2\n\n")
        assert await asyncio.wait_for(reader.readexactly(18), 5) == b"data: 1\n\ndata: 2\n\n"
        writer.close()  # the client goes: the stream's generator is closed
        await asyncio.wait_for(first_closed.wait(), 5)
        assert closed == ["/stream-1"]

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream-2 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        await core.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the stop ended the open stream
    writer.close()
    assert closed == ["/stream-1", "/stream-2"]


# ---- Telegram's HTML parse mode ---------------------------------------------------------------
# (text, what Telegram shows): each accepted as Telegram's parser accepts it.
HTML_ACCEPTED = [
    ("plain", "plain"),
    ("<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins>", "bsieun"),
    ("<s>s</s><strike>k</strike><del>d</del><code>c</code><pre>p</pre>", "skdcp"),
    ("<B>upper</b>", "upper"),
    ("<b >spaces</b >", "spaces"),
    ("<b><i><u>nested</u></i></b>", "nested"),
    ('<a href="https://example.org/?a=1&amp;b=2">link</a>', "link"),
    ("<a href='tg://user?id=1'>single quotes</a>", "single quotes"),
    ("<a href=https://example.org>unquoted</a>", "unquoted"),
    ('<a href="https://x.org/?a=1&b=2">bare amp in a value</a>', "bare amp in a value"),
    ('<pre><code class="language-python">x = 1</code></pre>', "x = 1"),
    ('<span class="tg-spoiler">hidden</span><tg-spoiler>too</tg-spoiler>', "hiddentoo"),
    ("<blockquote>q</blockquote><blockquote expandable>e</blockquote>", "qe"),
    ('<blockquote expandable class="x">both</blockquote>', "both"),
    ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "👍"),
    ("&lt;&gt;&amp;&quot;", '<>&"'),
    ("&#65;&#x42;&#X43;&#128077;", "ABC👍"),
    (
        '<b onclick="x()" style="color:red">unknown attributes are ignored</b>',
        "unknown attributes are ignored",
    ),
    ('<a href="javascript:alert(1)">not a link Telegram opens</a>', "not a link Telegram opens"),
    ("line\nbreaks\tand 'quotes\" stay", "line\nbreaks\tand 'quotes\" stay"),
]

# (text, the start of Telegram's reason after "Bad Request: can't parse entities: ").
HTML_REFUSED = [
    ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
    ("<b><i>x</i>", 'Can\'t find end tag corresponding to start tag "b"'),
    ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
    ("</b>x", "Unexpected end tag at byte offset 0"),
    ("<b>x</b></b>", "Unexpected end tag at byte offset 8"),
    ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
    ("<span>x</span>", 'Tag "span" must have class "tg-spoiler"'),
    ('<span class="other">x</span>', 'Tag "span" must have class "tg-spoiler"'),
    ("<a>x</a>", 'Tag "a" must have a non-empty attribute "href"'),
    ('<a href="">x</a>', 'Tag "a" must have a non-empty attribute "href"'),
    ("<tg-emoji>x</tg-emoji>", "Custom emoji entity must contain a valid custom emoji identifier"),
    ('<tg-emoji emoji-id="abc">x</tg-emoji>', "Custom emoji entity must contain"),
    ("<x>", 'Unsupported start tag "x" at byte offset 0'),
    ("ok <br>", 'Unsupported start tag "br" at byte offset 3'),
    ("<script>x</script>", 'Unsupported start tag "script"'),
    ("<!-- note -->", 'Unsupported start tag "" at byte offset 0'),
    ("a < b", 'Unsupported start tag "" at byte offset 2'),
    ("ends with <", "Unclosed start tag at byte offset 10"),
    ("<b", "Unclosed start tag at byte offset 0"),
    ('<a href="x>y</a>', "Unclosed start tag at byte offset 0"),
    ("<b>x</b", "Unclosed end tag at byte offset 4"),
    ('<b ="x">y</b>', 'Empty attribute name in the tag "b" at byte offset 3'),
    ('<b"x">y</b>', 'Unexpected character in the tag "b" at byte offset 2'),
    ("&foo;", 'Unsupported HTML entity or unescaped "&" at byte offset 0'),
    ("&nbsp;", 'Unsupported HTML entity or unescaped "&"'),
    ("Tom & Jerry", 'Unsupported HTML entity or unescaped "&" at byte offset 4'),
    ("&amp", 'Unsupported HTML entity or unescaped "&" at byte offset 0'),
    ("&#1114112;", 'Unsupported HTML entity or unescaped "&"'),
    ("&#xD800;", 'Unsupported HTML entity or unescaped "&"'),
    ("a > b", 'Unescaped ">" at byte offset 2'),
    ("ж <x>", 'Unsupported start tag "x" at byte offset 3'),  # bytes, not characters
]


@pytest.mark.parametrize(("text", "shown"), HTML_ACCEPTED)
def test_html_telegram_accepts(text: str, shown: str) -> None:
    assert parse_html(text) == shown
    check_text(text, "HTML")


@pytest.mark.parametrize(("text", "reason"), HTML_REFUSED)
def test_html_telegram_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_html(text)
    assert str(refused.value).startswith(reason), refused.value
    check_text(text, None)  # the same text without parse_mode is plain text: nothing to parse


async def test_html_refusals_are_telegrams_400(fake: FakeTelegram) -> None:
    async with make_bot(fake) as bot:
        for text, reason in HTML_REFUSED:
            with pytest.raises(BadRequest) as refused:
                await bot.send_message(USER, text, parse_mode="HTML")
            # python-telegram-bot drops "Bad Request: " and capitalises what follows.
            said = str(refused.value).lower()
            assert said.startswith(f"can't parse entities: {reason}".lower()), text
        sent = await bot.send_message(USER, "<b>x</b>", parse_mode="HTML")
        assert sent.message_id == 1  # nothing refused became a message
        with pytest.raises(BadRequest, match=r"(?i)can't parse entities: unmatched end tag"):
            await bot.edit_message_text("<b><i>y</b></i>", USER, sent.message_id, parse_mode="HTML")
    raw = httpx.post(
        f"{fake.base_url}/bot{fake.token}/sendMessage",
        data={"chat_id": str(USER), "text": "<b>open", "parse_mode": "HTML"},
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: can't parse entities: "
        'Can\'t find end tag corresponding to start tag "b"',
    }


@pytest.mark.parametrize(
    ("text", "parse_mode", "accepted"),
    [
        ("x" * 4096, None, True),
        ("x" * 4097, None, False),
        ("ж" * 4096, None, True),  # 8192 bytes of UTF-8, 4096 UTF-16 units
        ("👍" * 2048, None, True),  # 2048 characters past U+FFFF: 4096 UTF-16 units
        ("👍" * 2048 + "x", None, False),
        ("👍" * 2049, "HTML", False),
        ("<b>" + "x" * 4096 + "</b>", "HTML", True),  # tags do not count
        ("&amp;" * 4096, "HTML", True),  # each entity is one character
        ("&amp;" * 4097, "HTML", False),
        ("&#128077;" * 2048, "HTML", True),
        ("&#128077;" * 2048 + "x", "HTML", False),
        ("<b>" + "x" * 4096 + "</b>", None, False),  # without parse_mode the tags are text
    ],
)
def test_the_4096_limit_counts_utf16_units_of_the_parsed_text(
    text: str, parse_mode: str | None, accepted: bool
) -> None:
    if accepted:
        check_text(text, parse_mode)
    else:
        with pytest.raises(Exception, match="Bad Request: message is too long"):
            check_text(text, parse_mode)
