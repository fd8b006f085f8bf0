"""`sosekni-ops poll`: long polling against the fake Bot API, as a real process.

Updates are queued in the fake with `push_update`; the poller fetches them with getUpdates,
stores them in the inbox and the same handlers and outbox as the webhook's answer them.
"""

from __future__ import annotations

import contextlib
import os
import pkgutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import sosekni.piccolo_migrations
from sosekni.standin import FakeTelegram
from tests.harness import ROOT, TOKEN, Db, base_env, message, next_id, ops_command, run_ops, user

READY = "bot @SoSenkiTestBot ready"
WEBHOOK_REFUSED = (
    "error: Telegram refuses getUpdates while a webhook is set: "
    "run `sosekni-ops webhook delete` first"
)

# `poll`'s default long-poll timeout (`--timeout`), and how long the fake holds getMe when a
# test shows that `poll` does not wait for it: bounds a loaded machine stays well within.
LONG_POLL_S = 25
GET_ME_HELD_S = 300
MIGRATIONS = list(pkgutil.iter_modules(sosekni.piccolo_migrations.__path__))


def confirmation(request_id: int) -> str:
    return (
        f"Your request #{request_id} has been received and is pending review. "
        "You will get a message here as soon as an administrator decides."
    )


@dataclass
class Poller:
    """`sosekni-ops poll` as a real process in its own session, its output in files."""

    env: dict[str, str]
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    runs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> Poller:
        n = len(self.runs)
        with (
            (self.logs / f"poll{n}.out").open("wb") as out,
            (self.logs / f"poll{n}.err").open("wb") as err,
        ):
            self.process = subprocess.Popen(
                [*ops_command(), "poll"],
                env={**self.env, "COLUMNS": "200"},
                cwd=ROOT,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.runs.append(self.process)
        return self

    @property
    def stdout(self) -> str:
        return (self.logs / f"poll{len(self.runs) - 1}.out").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.logs / f"poll{len(self.runs) - 1}.err").read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the bot has started (logged at INFO) and is polling."""
        deadline = time.monotonic() + timeout
        while READY not in self.stderr:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"poll exited with {self.process.returncode}:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"poll not ready after {timeout}s:\n{self.stderr}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> tuple[int | None, float]:
        """The exit code (None if still running after `timeout`) and the seconds it ran."""
        assert self.process is not None
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - self.started

    def interrupt(self, timeout: float = 5) -> tuple[int | None, float]:
        """Ctrl-C: SIGINT to the process; its exit code and how long it took to exit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        code, _ = self.wait(timeout)
        return code, time.monotonic() - sent

    def kill_all(self) -> None:
        for process in self.runs:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@dataclass
class World:
    poller: Poller
    db: Db
    tg: FakeTelegram
    admin: dict[str, Any]

    def client(self) -> dict[str, Any]:
        return user(next_id(), "Anna", "anna")

    async def request_id(self, client: dict[str, Any]) -> int:
        return int(
            await self.db.value(
                "SELECT id FROM client_request WHERE client_telegram_id = {}", client["id"]
            )
        )


@pytest.fixture
def world(telegram: FakeTelegram, tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    admin = user(next_id(), "Olga", "olga_admin")
    env = base_env(url, telegram.base_url, ADMIN_TELEGRAM_ID=str(admin["id"]))
    poller = Poller(env, tmp_path)
    try:
        yield World(poller, Db(url), telegram, admin)
    finally:
        poller.kill_all()


async def test_poll_picks_up_a_request_confirms_it_and_notifies_the_admin_with_buttons(
    world: World,
) -> None:
    client = world.client()
    world.poller.start()

    update_id = world.tg.push_update(message(client, "/request hello"))

    await world.tg.wait_for_async(
        lambda tg: tg.sent_texts(client["id"]) and tg.sent_texts(world.admin["id"]), timeout=30
    )
    await world.db.settle()
    request_id = await world.request_id(client)
    assert world.tg.sent_texts(client["id"]) == [confirmation(request_id)]
    [notified] = world.tg.calls("sendMessage", chat_id=world.admin["id"])
    assert notified.params["text"].startswith(f"<b>Access request #{request_id}</b>")
    assert notified.params["text"].endswith("\n\nhello")
    assert notified.params["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "Approve", "callback_data": f"approve:{request_id}"},
                {"text": "Reject", "callback_data": f"reject:{request_id}"},
            ]
        ]
    }
    stored = await world.db.fetch(
        "SELECT update_id, kind, chat_id, status FROM inbox_update ORDER BY id"
    )
    assert stored == [
        {"update_id": update_id, "kind": "message", "chat_id": client["id"], "status": "done"}
    ]
    request = await world.db.fetch(
        "SELECT client_telegram_id, text, status FROM client_request WHERE id = {}", request_id
    )
    assert request == [{"client_telegram_id": client["id"], "text": "hello", "status": "pending"}]
    copies = await world.db.fetch("SELECT admin_telegram_id, chat_id FROM admin_notification")
    assert copies == [{"admin_telegram_id": world.admin["id"], "chat_id": world.admin["id"]}]
    # ADMIN_TELEGRAM_ID was seeded into the administrators.
    assert await world.db.value(
        "SELECT active FROM administrator WHERE telegram_id = {}", world.admin["id"]
    )


async def test_a_redelivered_update_is_processed_once(world: World) -> None:
    client = world.client()
    update = message(client, "/request hello")
    world.poller.start()
    world.tg.push_update(update)
    await world.tg.wait_for_async(lambda tg: tg.sent_texts(client["id"]), timeout=30)
    await world.db.settle()
    assert world.poller.interrupt()[0] == 0

    # A restarted poller has no offset: Telegram hands the same update over again.
    world.tg.push_update(update)
    world.tg.push_update(message(client, "/status"))
    world.poller.start()

    await world.tg.wait_for_async(lambda tg: len(tg.sent_texts(client["id"])) >= 2, timeout=30)
    await world.db.settle()
    request_id = await world.request_id(client)
    confirmed, status = world.tg.sent_texts(client["id"])
    assert confirmed == confirmation(request_id)
    assert status.startswith(f"Your request #{request_id} (sent ")
    assert status.endswith(") is pending review.\nSend /cancel to withdraw a pending request.")
    assert len(world.tg.sent_texts(world.admin["id"])) == 1
    assert await world.db.value("SELECT count(*) FROM client_request") == 1
    assert (
        await world.db.value(
            "SELECT count(*) FROM inbox_update WHERE update_id = {}", update["update_id"]
        )
        == 1
    )
    assert world.tg.pending_updates() == []


async def test_sigint_stops_poll_with_exit_0_without_waiting_out_the_long_poll(
    world: World,
) -> None:
    # Started and long-polling (the fake answers getUpdates only when an update comes, or
    # after the poll's 25 s long-poll timeout).
    world.poller.start().wait_ready()

    # A bound, not a speed measure: exiting before the 25 s long poll could answer proves
    # Ctrl-C cuts the pending getUpdates short; a load spike cannot make it fail.
    code, _ = world.poller.interrupt(timeout=LONG_POLL_S - 5)

    assert code == 0, world.poller.stderr
    assert world.tg.calls("getUpdates") == []  # the pending long poll was never answered
    assert world.poller.stdout.splitlines() == [
        f"applied {len(MIGRATIONS)} migration(s) to {world.db.url}",
        "polling Telegram for updates; Ctrl-C stops",
    ]
    assert "Traceback" not in world.poller.stderr
    assert "error" not in world.poller.stderr.lower()


# ----------------------------------------------------------------------------- webhook set


@dataclass
class Refused:
    code: int | None
    get_me_answered: int  # getMe answers the fake gave before `poll` exited
    stdout: str
    stderr: str
    webhook_after: str
    sent: int


@contextlib.contextmanager
def poll_refused(tmp: Path, get_me_delay: float) -> Iterator[Refused]:
    """`poll` started while the bot has a webhook, Telegram taking `get_me_delay` seconds to
    answer getMe, until it exits (or `GET_ME_HELD_S / 5` passed).

    A fake Bot API of its own: stopping it releases a getMe answer still held, so nothing
    reaches another test's fake.
    """
    with FakeTelegram(token=TOKEN) as fake:
        answer = httpx.post(
            f"{fake.base_url}/bot{TOKEN}/setWebhook",
            data={"url": "https://bot.example.org/webhook/telegram"},
            timeout=10,
        )
        assert answer.json() == {"ok": True, "result": True}
        fake.set_delay(get_me_delay, "getMe")
        env = base_env(f"sqlite:///{tmp / 'bot.db'}", fake.base_url, LOG_LEVEL="WARNING")
        poller = Poller(env, tmp).start()
        try:
            code, _ = poller.wait(GET_ME_HELD_S / 5)
            yield Refused(
                code,
                len(fake.calls("getMe")),
                poller.stdout,
                poller.stderr,
                fake.webhook_url(),
                len(fake.calls("sendMessage")),
            )
        finally:
            poller.kill_all()


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refused]:
    """Telegram slow to answer getMe (within PTB's timeout, so no retry is logged)."""
    with poll_refused(tmp_path_factory.mktemp("poll-webhook"), 3) as outcome:
        yield outcome


@pytest.fixture(scope="module")
def refused_never_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refused]:
    """Telegram never answers getMe while `poll` runs: the bot never starts."""
    with poll_refused(tmp_path_factory.mktemp("poll-held"), GET_ME_HELD_S) as outcome:
        yield outcome


def test_poll_while_a_webhook_is_set_exits_1_telling_to_delete_it(refused: Refused) -> None:
    assert refused.code == 1, refused.stderr
    assert refused.stderr.splitlines() == [WEBHOOK_REFUSED]
    assert "Traceback" not in refused.stdout + refused.stderr
    # The webhook is left alone and nothing was sent.
    assert refused.webhook_after == "https://bot.example.org/webhook/telegram"
    assert refused.sent == 0


def test_poll_while_a_webhook_is_set_exits_without_waiting_for_the_bot_to_start(
    refused_never_started: Refused,
) -> None:
    # It exited (the wait is a bound, not a speed measure) while getMe was still held: the
    # refusal waits neither for the bot's start-up nor for its retries. (What it prints is
    # the test above's: a getMe held past PTB's timeout may add a retry warning.)
    assert refused_never_started.code == 1, refused_never_started.stderr
    assert refused_never_started.get_me_answered == 0


def test_the_command_poll_suggests_exists() -> None:
    done = run_ops("webhook", "delete", "--help", env=base_env("sqlite:///x.db", "http://x"))
    assert done.returncode == 0, done.stderr
    assert "Usage: sosekni-ops webhook delete" in done.stdout
