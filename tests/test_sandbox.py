"""The sandbox (issue 15): the stand-in's people, chats, JSON API, events and webhook delivery,
in-process against a stand-in in a thread and a tiny receiving server; then `sosekni-ops
sandbox` once as a real process tree, from `/request` to the welcome."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from ops.sandbox import bot_environment, group_members
from sosekni.standin import TelegramStandIn
from sosekni.standin.sandbox import Sandbox
from tests.harness import ROOT, free_port, ops_command

SECRET = "sandbox-secret_1"
JSON = "application/json"
WAIT_S = 20.0


class Receiver:
    """A tiny webhook: records each POST (its headers and JSON) and answers the next status
    of `statuses` (200 once they run out)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append((dict(self.headers), json.loads(body)))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook/telegram"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def updates(self) -> list[dict[str, Any]]:
        with self.lock:
            return [update for _, update in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Events(threading.Thread):
    """`GET /sandbox/events`, read in a thread: the events as (name, data, id)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.found: queue.Queue[tuple[str, Any, int]] = queue.Queue()
        self.seen: list[tuple[str, Any, int]] = []
        self.head: httpx.Headers | None = None
        self.ready = threading.Event()
        self.start()
        assert self.ready.wait(10)

    def run(self) -> None:
        with httpx.Client(timeout=None) as client, client.stream("GET", self.url) as answer:
            self.head = answer.headers
            self.ready.set()
            name, data, number = "", "", 0
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = line[len("data: ") :]
                elif line.startswith("id: "):
                    number = int(line[len("id: ") :])
                elif line == "" and name:
                    self.found.put((name, json.loads(data), number))
                    name, data = "", ""

    def next(self, kind: str) -> Any:
        """The next event of `kind` (earlier ones of other kinds are kept in `seen`)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            name, data, number = self.found.get(timeout=max(0.1, deadline - time.monotonic()))
            self.seen.append((name, data, number))
            if name == kind:
                return data


def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S:g}s: {what}")
        time.sleep(0.2)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def web(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<!doctype html><title>sandbox</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    (tmp_path / "app.css").write_text("body{}")
    return tmp_path


@pytest.fixture
def standin(receiver: Receiver, web: Path) -> Iterator[tuple[TelegramStandIn, Sandbox]]:
    telegram = TelegramStandIn()
    sandbox = Sandbox(telegram, 2, web_dir=web, backoff=(0.05, 0.2))
    with telegram:
        sandbox.deliver_to(receiver.url, SECRET)
        yield telegram, sandbox


@pytest.fixture
def api(standin: tuple[TelegramStandIn, Sandbox]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standin[0].base_url, timeout=10) as client:
        yield client


def bot_call(client: httpx.Client, telegram: TelegramStandIn, method: str, **params: Any) -> Any:
    """What the bot does: a Bot API call to the stand-in."""
    answer = client.post(f"/bot{telegram.token}/{method}", json=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def person(person_id: int, name: str, role: str) -> dict[str, Any]:
    return {
        "id": person_id,
        "first_name": name,
        "username": name.lower(),
        "language_code": "en",
        "role": role,
    }


CARD = {"inline_keyboard": [[{"text": "Approve", "callback_data": "approve:7"}]]}


def test_state_has_the_client_and_the_administrators(
    api: httpx.Client, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    state = api.get("/sandbox/state").json()
    assert state["ok"] is True
    assert state["bot"] == {
        "id": standin[0].bot_id,
        "username": standin[0].username,
        "first_name": "SOSenki Test",
    }
    assert state["people"] == [
        person(1001, "Anna", "client"),
        person(101, "Boris", "admin"),
        person(102, "Vera", "admin"),
    ]
    assert state["chats"] == {"1001": [], "101": [], "102": []}


def test_the_page_and_its_files(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>sandbox</title>" in page.text
    assert api.get("/sandbox/app.js").headers["content-type"].startswith("text/javascript")
    assert api.get("/sandbox/app.css").headers["content-type"].startswith("text/css")
    assert api.get("/sandbox/nothing").status_code == 404


def test_without_the_page_a_placeholder_is_served(tmp_path: Path) -> None:
    telegram = TelegramStandIn()
    Sandbox(telegram, 1, web_dir=tmp_path / "missing")
    with telegram, httpx.Client(base_url=telegram.base_url, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and "/sandbox/state" in page.text
        assert client.get("/sandbox/app.js").status_code == 404


def test_send_delivers_the_update_with_the_secret_header(
    api: httpx.Client, receiver: Receiver
) -> None:
    answer = api.post("/sandbox/send", json={"person_id": 1001, "text": "/request plot 12 <b>"})
    assert answer.status_code == 200, answer.text
    sent = answer.json()
    assert sent["ok"] is True
    assert sent["message"] == {
        "message_id": sent["message"]["message_id"],
        "chat_id": 1001,
        "from_bot": False,
        "html": "/request plot 12 &lt;b&gt;",
        "buttons": [],
        "reply_to": None,
        "edited": False,
        "date": sent["message"]["date"],
    }
    wait_until(lambda: receiver.received, "the update delivered")
    headers, update = receiver.received[0]
    assert headers["X-Telegram-Bot-Api-Secret-Token"] == SECRET
    assert headers["Content-Type"] == "application/json"
    assert update["update_id"] == sent["update_id"]
    message = update["message"]
    assert message["message_id"] == sent["message"]["message_id"]
    assert message["from"] == {
        "id": 1001,
        "is_bot": False,
        "first_name": "Anna",
        "username": "anna",
        "language_code": "en",
    }
    assert message["chat"] == {
        "id": 1001,
        "type": "private",
        "first_name": "Anna",
        "username": "anna",
    }
    assert message["text"] == "/request plot 12 <b>"
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 8}]
    assert "reply_to_message" not in message
    chat = api.get("/sandbox/state").json()["chats"]["1001"]
    assert chat == [sent["message"]]


def test_messages_are_delivered_in_order(api: httpx.Client, receiver: Receiver) -> None:
    ids = [
        api.post("/sandbox/send", json={"person_id": 101, "text": f"hello {n}"}).json()["update_id"]
        for n in range(5)
    ]
    wait_until(lambda: len(receiver.received) == 5, "five updates delivered")
    assert [update["update_id"] for update in receiver.updates()] == ids
    assert ids == sorted(ids)
    assert [u["message"]["text"] for u in receiver.updates()] == [f"hello {n}" for n in range(5)]


def test_reply_to_carries_the_whole_message_replied_to(
    api: httpx.Client, receiver: Receiver, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    telegram = standin[0]
    card = bot_call(
        api, telegram, "sendMessage", chat_id=101, text="<b>Access request #7</b> &amp; more",
        parse_mode="HTML", reply_markup=CARD,
    )  # fmt: skip
    answer = api.post(
        "/sandbox/send", json={"person_id": 101, "text": "Approve", "reply_to": card["message_id"]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"]["reply_to"] == card["message_id"]
    replied = wait_until(receiver.updates, "the reply delivered")[0]["message"]["reply_to_message"]
    assert replied["message_id"] == card["message_id"]
    assert replied["from"] == telegram.bot_user()
    assert replied["chat"]["id"] == 101
    assert replied["text"] == "Access request #7 & more"  # as Telegram keeps it: no tags
    assert replied["reply_markup"] == CARD
    shown = api.get("/sandbox/state").json()["chats"]["101"]
    assert shown[0]["html"] == "<b>Access request #7</b> &amp; more"
    assert shown[0]["buttons"] == [[{"text": "Approve", "callback_data": "approve:7", "url": None}]]
    assert shown[0]["from_bot"] is True and shown[1]["from_bot"] is False


def test_a_plain_text_message_of_the_bot_is_escaped(
    api: httpx.Client, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    bot_call(api, standin[0], "sendMessage", chat_id=1001, text="a < b & <i>c</i>")
    bot_call(api, standin[0], "sendMessage", chat_id=-100123, text="not a person's chat")
    chats = api.get("/sandbox/state").json()["chats"]
    assert [m["html"] for m in chats["1001"]] == ["a &lt; b &amp; &lt;i&gt;c&lt;/i&gt;"]
    assert "-100123" not in chats


def test_press_delivers_a_callback_query_and_the_answers_come_as_events(
    api: httpx.Client, receiver: Receiver, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    telegram = standin[0]
    events = Events(f"{telegram.base_url}/sandbox/events")
    assert events.head is not None
    assert events.head["content-type"].startswith("text/event-stream")
    assert "content-length" not in events.head
    card = bot_call(
        api, telegram, "sendMessage", chat_id=102, text="<b>Request #7</b>", parse_mode="HTML",
        reply_markup=CARD,
    )  # fmt: skip
    shown = events.next("message")
    assert shown["chat_id"] == 102 and shown["message"]["html"] == "<b>Request #7</b>"
    pressed = api.post(
        "/sandbox/press",
        json={"person_id": 102, "message_id": card["message_id"], "callback_data": "approve:7"},
    )
    assert pressed.status_code == 200, pressed.text
    update = wait_until(receiver.updates, "the press delivered")[0]
    assert update["update_id"] == pressed.json()["update_id"]
    query = update["callback_query"]
    assert set(query) == {"id", "from", "message", "chat_instance", "data"}
    assert isinstance(query["id"], str) and query["id"]
    assert isinstance(query["chat_instance"], str)
    assert query["from"]["id"] == 102 and query["from"]["first_name"] == "Vera"
    assert query["data"] == "approve:7"
    assert query["message"]["message_id"] == card["message_id"]
    assert query["message"]["reply_markup"] == CARD
    assert query["message"]["text"] == "Request #7"
    delivered = events.next("delivery")
    assert delivered == {"update_id": update["update_id"], "ok": True, "status": 200, "error": None}

    bot_call(api, telegram, "answerCallbackQuery", callback_query_id=query["id"], text="Approved.")
    assert events.next("toast") == {"chat_id": 102, "text": "Approved.", "show_alert": False}
    bot_call(
        api, telegram, "editMessageText", chat_id=102, message_id=card["message_id"],
        text="<b>Request #7</b>\nApproved by Vera", parse_mode="HTML",
    )  # fmt: skip
    edited = events.next("edit")
    assert edited["chat_id"] == 102
    assert edited["message"]["message_id"] == card["message_id"]
    assert edited["message"]["html"] == "<b>Request #7</b>\nApproved by Vera"
    assert edited["message"]["buttons"] == [] and edited["message"]["edited"] is True
    bot_call(
        api, telegram, "editMessageReplyMarkup", chat_id=102, message_id=card["message_id"],
        reply_markup=CARD,
    )  # fmt: skip
    again = events.next("edit")["message"]
    assert again["html"] == "<b>Request #7</b>\nApproved by Vera" and again["buttons"]
    numbers = [number for _, _, number in events.seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert api.get("/sandbox/state").json()["chats"]["102"] == [again]


def test_bad_inputs_are_refused_and_change_nothing(
    api: httpx.Client, receiver: Receiver, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    card = bot_call(api, standin[0], "sendMessage", chat_id=101, text="card", reply_markup=CARD)
    before = api.get("/sandbox/state").json()
    card_id = card["message_id"]
    bad = [
        ("/sandbox/send", {"person_id": 1001, "text": "  "}),
        ("/sandbox/send", {"person_id": 1001}),
        ("/sandbox/send", {"person_id": 999, "text": "hi"}),
        ("/sandbox/send", {"person_id": "1001", "text": "hi"}),
        ("/sandbox/send", {"person_id": 1001, "text": "x" * 4097}),
        ("/sandbox/send", {"person_id": 1001, "text": "🙂" * 2049}),  # 4098 UTF-16 units
        ("/sandbox/send", {"person_id": 1001, "text": "hi", "reply_to": 12345}),
        ("/sandbox/send", {"person_id": 1001, "text": "hi", "reply_to": card["message_id"]}),
        ("/sandbox/press", {"person_id": 101, "message_id": card_id, "callback_data": "x"}),
        ("/sandbox/press", {"person_id": 102, "message_id": card_id, "callback_data": "approve:7"}),
        ("/sandbox/press", {"person_id": 101, "message_id": 999, "callback_data": "approve:7"}),
        ("/sandbox/person", {"person_id": 1001, "first_name": ""}),
        ("/sandbox/person", {"person_id": 1001, "first_name": "Ann", "language_code": "english"}),
        ("/sandbox/person", {"person_id": 1001, "username": "no spaces"}),
        ("/sandbox/person", {"person_id": 5, "first_name": "Who"}),
    ]  # fmt: skip
    for path, body in bad:
        answer = api.post(path, json=body)
        assert answer.status_code == 400, (path, body, answer.text)
        refused = answer.json()
        assert refused["ok"] is False and "\n" not in refused["error"] and refused["error"]
    for raw in (b"not json", b"[1, 2]", b""):
        answer = api.post("/sandbox/send", content=raw, headers={"Content-Type": JSON})
        assert answer.status_code == 400 and answer.json()["ok"] is False
    assert api.get("/sandbox/send").status_code == 405
    assert api.get("/sandbox/state").json() == before
    assert standin[1].pending_count() == 0 and receiver.received == []


def test_a_person_changes_and_the_next_update_says_so(
    api: httpx.Client, receiver: Receiver, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    events = Events(f"{standin[0].base_url}/sandbox/events")
    changed = api.post(
        "/sandbox/person",
        json={"person_id": 1001, "first_name": "Olga", "username": None, "language_code": "ru"},
    )
    assert changed.status_code == 200, changed.text
    olga = {**person(1001, "Olga", "client"), "username": None, "language_code": "ru"}
    assert changed.json() == {"ok": True, "person": olga}
    assert events.next("person") == olga
    assert api.get("/sandbox/state").json()["people"][0] == olga
    api.post("/sandbox/send", json={"person_id": 1001, "text": "/start"})
    message = wait_until(receiver.updates, "the update delivered")[0]["message"]
    assert message["from"] == {
        "id": 1001,
        "is_bot": False,
        "first_name": "Olga",
        "language_code": "ru",
    }
    assert message["chat"] == {"id": 1001, "type": "private", "first_name": "Olga"}
    partly = api.post("/sandbox/person", json={"person_id": 101, "language_code": "pt-BR"})
    assert partly.json()["person"]["first_name"] == "Boris"


def test_a_refused_delivery_is_tried_again(
    api: httpx.Client, receiver: Receiver, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    events = Events(f"{standin[0].base_url}/sandbox/events")
    receiver.statuses = [503, 503]
    sent = api.post("/sandbox/send", json={"person_id": 101, "text": "first"}).json()
    after = api.post("/sandbox/send", json={"person_id": 101, "text": "second"}).json()
    outcomes = [events.next("delivery") for _ in range(4)]
    assert outcomes == [
        {"update_id": sent["update_id"], "ok": False, "status": 503, "error": None},
        {"update_id": sent["update_id"], "ok": False, "status": 503, "error": None},
        {"update_id": sent["update_id"], "ok": True, "status": 200, "error": None},
        {"update_id": after["update_id"], "ok": True, "status": 200, "error": None},
    ]
    assert [u["message"]["text"] for u in receiver.updates()] == ["first"] * 3 + ["second"]
    assert standin[1].pending_count() == 0


def test_an_unreachable_webhook_is_tried_again_until_it_answers(
    api: httpx.Client, receiver: Receiver, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    telegram, sandbox = standin
    closed = f"http://127.0.0.1:{free_port()}/webhook/telegram"
    sandbox.deliver_to(closed, SECRET)
    events = Events(f"{telegram.base_url}/sandbox/events")
    sent = api.post("/sandbox/send", json={"person_id": 1001, "text": "anyone?"}).json()
    failed = events.next("delivery")
    assert failed["update_id"] == sent["update_id"] and failed["ok"] is False
    assert failed["status"] is None and failed["error"].startswith("Connection failed")
    info = bot_call(api, telegram, "getWebhookInfo")
    assert info["last_error_message"].startswith("Connection failed")
    sandbox.deliver_to(receiver.url, SECRET)
    wait_until(receiver.updates, "delivered once the webhook answers")
    assert receiver.updates()[0]["update_id"] == sent["update_id"]


def test_a_new_run_continues_the_ids_of_the_last(tmp_path: Path, receiver: Receiver) -> None:
    """The bot's database outlives a sandbox run: the next run's update ids and message ids
    go on from the last run's (from 1 again, the bot would ignore its updates as seen)."""
    counters = tmp_path / "counters.json"
    seen: list[tuple[int, int]] = []
    for _ in range(2):
        telegram = TelegramStandIn()
        sandbox = Sandbox(telegram, 1, counters=counters)
        with telegram, httpx.Client(base_url=telegram.base_url, timeout=10) as api:
            sandbox.deliver_to(receiver.url, SECRET)
            sent = api.post("/sandbox/send", json={"person_id": 101, "text": "/pending"}).json()
            bot_call(api, telegram, "sendMessage", chat_id=101, text="nothing pending")
            seen.append((sent["update_id"], sent["message"]["message_id"]))
    assert seen[1][0] > seen[0][0]
    assert seen[1][1] == seen[0][1] + 2  # after the first run's message and the bot's answer
    counters.write_text("{not json")
    with pytest.raises(ValueError, match=r"counters\.json"):
        Sandbox(TelegramStandIn(), 1, counters=counters)


def test_the_bot_environment_keeps_no_setting_of_the_operator() -> None:
    operator = {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "DATABASE_URL": "postgresql://prod@db/prod",
        "TELEGRAM_BOT_TOKEN": "1:real",
        "ADMIN_CHAT_ID": "-100",
        "COMMUNITY_CHAT_ID": "-100",
        "SOSEKNI_ENV_FILE": "/etc/sosekni/.env",
        "LISTEN_FDS": "1",
    }
    env = bot_environment(
        operator, token="2:t", secret="s", database_url="sqlite:////x/sandbox.db",
        api_base="http://127.0.0.1:1", admins="101",
    )  # fmt: skip
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/op"
    assert env["DATABASE_URL"] == "sqlite:////x/sandbox.db"
    assert env["TELEGRAM_BOT_TOKEN"] == "2:t" and env["ADMIN_TELEGRAM_ID"] == "101"
    assert env["SOSEKNI_ENV_FILE"] == os.devnull
    assert not {"ADMIN_CHAT_ID", "COMMUNITY_CHAT_ID", "LISTEN_FDS"} & set(env)


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*ops_command(), "sandbox", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_bot_that_ends_by_itself_ends_the_sandbox_with_its_log(tmp_path: Path) -> None:
    """The bot cannot open its database (a directory stands where the file should be): the
    sandbox prints the end of the bot's log and exits 1, leaving no process behind."""
    data = tmp_path / "data"
    (data / "sandbox.db").mkdir(parents=True)
    port = free_port()
    done = subprocess.run(
        [*ops_command(), "sandbox", "--port", str(port), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: the bot exited on its own" in done.stderr
    tail = done.stderr.split("error: the bot exited")[0].strip()
    assert tail and tail.splitlines()[-1] in (data / "bot.log").read_text()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the stand-in let its port go


# ------------------------------------------------------------------ the real process tree


def start_sandbox(port: int, data: Path, work: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`sosekni-ops sandbox` as a process, once it has printed where to open the page."""
    process = subprocess.Popen(
        [*ops_command(), "sandbox", "--port", str(port), "--data-dir", str(data)],
        cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    while not any(line.startswith("open ") for line in lines):
        line = process.stdout.readline()
        if not line:
            process.wait(30)
            raise AssertionError(
                f"the sandbox ended ({process.returncode}): {process.stderr.read()}"
            )
        lines.append(line.strip())
    assert f"open http://127.0.0.1:{port}" in lines
    return process


def stop_sandbox(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_the_sandbox_runs_the_real_bot_from_request_to_welcome(tmp_path: Path) -> None:
    """`sosekni-ops sandbox` as a process: the client's /request reaches the bot, the
    administrators get the card, an approval edits it and welcomes the client; SIGTERM ends
    it with 0. Started again on the same data, the bot still knows the client (and takes
    the new run's updates for new ones). A production-looking `.env` in its working
    directory (and DATABASE_URL in its environment) is neither read nor touched."""
    work = tmp_path / "work"
    work.mkdir()
    production = tmp_path / "production.db"
    dotenv = work / ".env"
    dotenv.write_text(
        f"DATABASE_URL=sqlite:///{production}\nTELEGRAM_BOT_TOKEN=999:production-token\n"
        "ADMIN_TELEGRAM_ID=5\nWEBHOOK_SECRET=production\n"
    )
    written = dotenv.read_bytes()
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WEBHOOK_"))}
    env["DATABASE_URL"] = f"sqlite:///{production}"
    env["COLUMNS"] = "200"
    process = start_sandbox(port, data, work, env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:

            def chats() -> dict[str, list[dict[str, Any]]]:
                return api.get("/sandbox/state").json()["chats"]

            sent = api.post(
                "/sandbox/send", json={"person_id": 1001, "text": "/request I live at plot 12"}
            )
            assert sent.status_code == 200, sent.text
            wait_until(lambda: len(chats()["1001"]) == 2, "the client's confirmation")
            confirmation = chats()["1001"][1]
            assert confirmation["from_bot"] and "has been received" in confirmation["html"]
            wait_until(lambda: chats()["101"] and chats()["102"], "both administrators' cards")
            card = chats()["101"][0]
            assert "I live at plot 12" in card["html"] and "Anna" in card["html"]
            approve = next(
                button["callback_data"]
                for row in card["buttons"]
                for button in row
                if button["callback_data"].startswith("approve:")
            )
            pressed = api.post(
                "/sandbox/press",
                json={"person_id": 101, "message_id": card["message_id"], "callback_data": approve},
            )
            assert pressed.status_code == 200, pressed.text
            wait_until(lambda: chats()["101"][0]["edited"], "the card changed")
            decided = chats()["101"][0]
            assert decided["buttons"] == [] and "Approved" in decided["html"]
            wait_until(lambda: chats()["102"][0]["edited"], "the other card changed")
            wait_until(lambda: len(chats()["1001"]) == 3, "the welcome")
            assert "approved" in chats()["1001"][2]["html"]
            last_id = chats()["1001"][2]["message_id"]
        assert stop_sandbox(process) == 0

        process = start_sandbox(port, data, work, env)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            again = api.post("/sandbox/send", json={"person_id": 1001, "text": "/status"}).json()
            assert again["update_id"] > sent.json()["update_id"]
            assert again["message"]["message_id"] > last_id
            wait_until(lambda: len(chats()["1001"]) == 2, "the answer to /status")
            assert "approved" in chats()["1001"][1]["html"]
        assert stop_sandbox(process) == 0
    finally:
        stop_sandbox(process)
    assert dotenv.read_bytes() == written
    assert not production.exists()
    assert (data / "sandbox.db").exists() and (data / "bot.log").exists()
    assert "production-token" not in (data / "bot.log").read_text()


# ------------------------------------------------------------------ issue 15 review fixes


def raw_exchange(port: int, requests: bytes) -> bytes:
    """Send ``requests`` on one keep-alive connection (the last asks to close) and return
    everything the stand-in answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(requests)
        found = b""
        while chunk := raw.recv(65536):
            found += chunk
    return found


def split_answers(data: bytes, heads: list[bool]) -> list[tuple[str, dict[str, str], bytes]]:
    """The answers in ``data``: (status line, headers, body), framed by Content-Length (none
    read for an answer to HEAD, as the flags in ``heads`` say)."""
    answers = []
    for head_only in heads:
        head, _, data = data.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = 0 if head_only else int(headers["content-length"])
        answers.append((status, headers, data[:length]))
        data = data[length:]
    assert data == b"", data[:200]
    return answers


def test_head_sends_no_body_and_keeps_the_connection_in_step(
    standin: tuple[TelegramStandIn, Sandbox], web: Path
) -> None:
    port = standin[0].port
    host = f"Host: 127.0.0.1:{port}\r\n"
    asked = [
        ("HEAD", "/"),
        ("GET", "/sandbox/app.css"),
        ("HEAD", "/sandbox/app.js"),
        ("HEAD", "/sandbox/app.css"),
        ("DELETE", "/"),
        ("GET", "/sandbox/send"),
        ("POST", "/sandbox/events"),
        ("GET", "/sandbox/app.js"),
    ]
    requests = (
        b"".join(
            f"{method} {path} HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n".encode()
            for method, path in asked[:-1]
        )
        + f"GET /sandbox/app.js HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
    )
    answers = split_answers(raw_exchange(port, requests), [m == "HEAD" for m, _ in asked])
    index, css, js = ((web / name).read_bytes() for name in ("index.html", "app.css", "app.js"))
    assert [status for status, _, _ in answers] == [
        "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK",
        "HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 405 Method Not Allowed",
        "HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK",
    ]  # fmt: skip
    assert answers[0][1]["content-length"] == str(len(index))
    assert answers[0][1]["content-type"] == "text/html; charset=utf-8"
    assert answers[1][2] == css
    assert answers[2][1]["content-length"] == str(len(js))
    assert answers[3][1]["content-length"] == str(len(css))
    assert [answer[1]["allow"] for answer in answers[4:7]] == ["GET, HEAD", "POST", "GET"]
    assert json.loads(answers[4][2])["ok"] is False
    assert answers[7][2] == js


def test_posts_must_be_json_and_the_host_this_machine(
    api: httpx.Client, standin: tuple[TelegramStandIn, Sandbox], receiver: Receiver
) -> None:
    """A site in the operator's browser can post text/plain or a form without a preflight,
    and a rebound DNS name reaches 127.0.0.1 with its own Host: both are refused."""
    port = standin[0].port
    body = json.dumps({"person_id": 1001, "text": "/request hi"})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = api.post("/sandbox/send", content=body, headers=headers)
        assert answer.status_code == 415, answer.text
        assert answer.json()["ok"] is False and "application/json" in answer.json()["error"]
    for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", "localhost"):
        refused = api.post(
            "/sandbox/send", content=body, headers={"Host": host, "Content-Type": JSON}
        )
        assert refused.status_code == 421, (host, refused.text)
        assert api.get("/sandbox/state", headers={"Host": host}).status_code == 421
        assert api.get("/", headers={"Host": host}).status_code == 421
    assert api.get("/sandbox/state").json()["chats"]["1001"] == []
    assert standin[1].pending_count() == 0 and receiver.received == []
    for host in (f"localhost:{port}", f"LOCALHOST:{port}", f"127.0.0.1:{port}"):
        answer = api.post(
            "/sandbox/send", content=body, headers={"Host": host, "Content-Type": JSON}
        )
        assert answer.status_code == 200, (host, answer.text)
    answer = api.post(
        "/sandbox/send", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert answer.status_code == 200, answer.text
    # The Bot API on the same port is not the page's: the bot's own Host is its business.
    me = api.get(f"/bot{standin[0].token}/getMe", headers={"Host": "api.telegram.org"})
    assert me.status_code == 200


def test_a_client_that_does_not_read_its_events_is_cut_off(
    standin: tuple[TelegramStandIn, Sandbox],
) -> None:
    """An /sandbox/events client that never reads: past about a megabyte unsent the stand-in
    closes it (the page would reconnect and reload) instead of buffering every event."""
    telegram, sandbox = standin
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", telegram.port))
    slow.sendall(
        f"GET /sandbox/events HTTP/1.1\r\nHost: 127.0.0.1:{telegram.port}\r\n\r\n".encode()
    )
    wait_until(lambda: sandbox.subscriber_count() == 1, "the stream open")
    text = "<" * 4000  # about 16 kB an event once escaped
    with httpx.Client(base_url=telegram.base_url, timeout=10) as client:
        sent = 0
        while sandbox.subscriber_count() and sent < 2000:  # 32 MB would be far past the bound
            bot_call(client, telegram, "sendMessage", chat_id=1001, text=text)
            sent += 1
    assert sandbox.subscriber_count() == 0, f"still subscribed after {sent} events"
    slow.settimeout(10)
    received = 0
    try:
        while chunk := slow.recv(65536):
            received += len(chunk)
    except ConnectionResetError:
        pass
    finally:
        slow.close()
    assert received < sent * 17_000  # not every event was kept for it


def test_a_subscriber_whose_queue_fills_is_dropped(
    standin: tuple[TelegramStandIn, Sandbox],
) -> None:
    """More events at once than a subscriber's queue holds (1000): its stream ends."""
    telegram, sandbox = standin
    events = Events(f"{telegram.base_url}/sandbox/events")
    wait_until(lambda: sandbox.subscriber_count() == 1, "the stream open")
    loop = telegram.loop
    assert loop is not None
    done = threading.Event()

    def burst() -> None:  # on the stand-in's loop: no event is read in between
        for number in range(1100):
            sandbox.change_person({"person_id": 101, "first_name": f"Boris {number}"})
        done.set()

    loop.call_soon_threadsafe(burst)
    assert done.wait(WAIT_S)
    events.join(WAIT_S)
    assert not events.is_alive()  # the stream ended
    assert sandbox.subscriber_count() == 0
    # The state is whole: the page reloads it on reconnecting.
    with httpx.Client(base_url=telegram.base_url, timeout=10) as client:
        people = client.get("/sandbox/state").json()["people"]
    assert people[1]["first_name"] == "Boris 1099"


def test_a_counters_file_that_cannot_be_written_costs_no_answer(
    tmp_path: Path, receiver: Receiver, web: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk or a read-only data directory: each Bot API call is answered once and
    kept, each person's message delivered; one warning says the counters are not saved."""
    counters = tmp_path / "data" / "counters.json"
    (tmp_path / "data" / "counters.json.tmp").mkdir(parents=True)  # the write fails
    telegram = TelegramStandIn()
    sandbox = Sandbox(telegram, 1, web_dir=web, counters=counters)
    with telegram, httpx.Client(base_url=telegram.base_url, timeout=10) as client:
        sandbox.deliver_to(receiver.url, SECRET)
        for number in range(3):
            bot_call(client, telegram, "sendMessage", chat_id=1001, text=f"hello {number}")
            sent = client.post("/sandbox/send", json={"person_id": 1001, "text": f"hi {number}"})
            assert sent.status_code == 200, sent.text
        wait_until(lambda: len(receiver.received) == 3, "three updates delivered")
        assert len(sandbox.chat(1001)) == 6
        assert [call.method for call in telegram.calls()].count("sendMessage") == 3
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "counters" in r.message]
    assert len(warnings) == 1, caplog.text
    assert not counters.exists()


def test_updates_have_telegrams_shapes(
    api: httpx.Client, receiver: Receiver, standin: tuple[TelegramStandIn, Sandbox]
) -> None:
    """A replied-to message carries no reply of its own; the bot's messages in updates are in
    the person's whole private chat; a bot_command entity only for a real command."""
    telegram = standin[0]
    first = api.post("/sandbox/send", json={"person_id": 1001, "text": "one"}).json()["message"]
    second = api.post(
        "/sandbox/send", json={"person_id": 1001, "text": "two", "reply_to": first["message_id"]}
    ).json()["message"]
    api.post(
        "/sandbox/send", json={"person_id": 1001, "text": "three", "reply_to": second["message_id"]}
    )
    card = bot_call(api, telegram, "sendMessage", chat_id=1001, text="card", reply_markup=CARD)
    api.post(
        "/sandbox/send", json={"person_id": 1001, "text": "four", "reply_to": card["message_id"]}
    )
    pressed = api.post(
        "/sandbox/press",
        json={"person_id": 1001, "message_id": card["message_id"], "callback_data": "approve:7"},
    )
    assert pressed.status_code == 200, pressed.text
    updates = wait_until(lambda: len(receiver.received) == 5 and receiver.updates(), "5 updates")
    anna = {"id": 1001, "type": "private", "first_name": "Anna", "username": "anna"}
    second_update = updates[1]["message"]
    assert second_update["reply_to_message"]["text"] == "one"
    third = updates[2]["message"]["reply_to_message"]
    assert third["text"] == "two" and "reply_to_message" not in third
    to_card = updates[3]["message"]["reply_to_message"]
    assert to_card["chat"] == anna and to_card["from"] == telegram.bot_user()
    assert updates[4]["callback_query"]["message"]["chat"] == anna
    assert updates[4]["callback_query"]["message"]["reply_markup"] == CARD

    texts = {
        "/": None,
        "/ hi": None,
        "hello /start": None,
        "/request plot 12": 8,
        "/start@SOSenkiBot now": 17,
        "/status": 7,
        "/a_b_9\nmore": 6,
        "/st-art": 3,
    }
    for text in texts:
        api.post("/sandbox/send", json={"person_id": 101, "text": text})
    delivered = wait_until(
        lambda: len(receiver.received) == 5 + len(texts) and receiver.updates(), "all"
    )
    for (text, length), update in zip(texts.items(), delivered[5:], strict=True):
        entities = update["message"].get("entities")
        expected = (
            None if length is None else [{"type": "bot_command", "offset": 0, "length": length}]
        )
        assert entities == expected, text


# ------------------------------------------------------------------ the bot's process group


def the_bot(sandbox: subprocess.Popen[str]) -> tuple[int, int, dict[str, str]]:
    """The bot the sandbox started: its pid (= its group), its port and its environment."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == sandbox.pid and b"serve" in argv:
            environ = (entry / "environ").read_bytes().split(b"\0")
            env = dict(item.decode().partition("=")[::2] for item in environ if item)
            return int(entry.name), int(argv[argv.index(b"--port") + 1]), env
    raise AssertionError("the sandbox has no bot")


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` again (as Sanic does: past TIME_WAITs)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
        return True


def kill_group(pgid: int) -> None:
    """Leave no process behind, even when the test failed (0: no bot was found)."""
    if pgid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def wait_gone(pgid: int, port: int) -> None:
    wait_until(lambda: not group_members(pgid), f"the bot's group {pgid} gone")
    wait_until(lambda: port_free(port), f"the bot's port {port} free")


class SandboxRun(NamedTuple):
    process: subprocess.Popen[str]
    port: int  # the sandbox's
    pgid: int
    bot_port: int
    env: dict[str, str]


@contextlib.contextmanager
def sandbox_run(data: Path, work: Path) -> Iterator[SandboxRun]:
    """`sosekni-ops sandbox` and the bot it started; afterwards neither is left running."""
    port = free_port()
    process = start_sandbox(port, data, work, dict(os.environ))
    pgid = 0
    try:
        pgid, bot_port, env = the_bot(process)
        yield SandboxRun(process, port, pgid, bot_port, env)
    finally:
        stop_sandbox(process)
        kill_group(pgid)


def test_a_killed_sandbox_takes_its_bot_along(tmp_path: Path) -> None:
    """SIGKILL leaves the sandbox no say: the kernel's parent-death signal stops the bot, and
    the bot stops its Sanic worker (which would keep the port and the database)."""
    with sandbox_run(tmp_path / "data", tmp_path) as run:
        assert len(group_members(run.pgid)) >= 2  # Sanic's main process and its worker
        run.process.kill()
        run.process.wait(10)
        wait_gone(run.pgid, run.bot_port)


def test_a_bot_killed_alone_ends_the_sandbox_and_its_worker(tmp_path: Path) -> None:
    with sandbox_run(tmp_path / "data", tmp_path) as run:
        os.kill(run.pgid, signal.SIGKILL)  # the main process only: its worker is orphaned
        assert run.process.wait(60) == 1
        assert run.process.stderr is not None
        assert "error: the bot exited on its own" in run.process.stderr.read()
        wait_gone(run.pgid, run.bot_port)


def test_ctrl_c_stops_the_sandbox_and_its_bot(tmp_path: Path) -> None:
    with sandbox_run(tmp_path / "data", tmp_path) as run:
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(60) == 0
        assert run.process.stdout is not None
        assert "stopping the bot…" in run.process.stdout.read()
        wait_gone(run.pgid, run.bot_port)


def test_a_second_ctrl_c_kills_a_bot_that_hangs_and_no_secret_is_printed(tmp_path: Path) -> None:
    """The bot is frozen (SIGSTOP: it cannot act on SIGTERM): the first Ctrl-C says it stops
    the bot and waits, the second kills its group at once. Neither the run's token nor its
    webhook secret is in what the sandbox printed or in the bot's log."""
    data = tmp_path / "data"
    with sandbox_run(data, tmp_path) as run:
        process, pgid = run.process, run.pgid
        assert process.stdout is not None and process.stderr is not None
        token, secret = run.env["TELEGRAM_BOT_TOKEN"], run.env["WEBHOOK_SECRET"]
        assert len(token) > 20 and len(secret) > 20
        with httpx.Client(base_url=f"http://127.0.0.1:{run.port}", timeout=10) as api:
            sent = api.post("/sandbox/send", json={"person_id": 1001, "text": "/request plot 3"})
            assert sent.status_code == 200, sent.text
            wait_until(
                lambda: len(api.get("/sandbox/state").json()["chats"]["1001"]) == 2, "the answer"
            )
        os.killpg(pgid, signal.SIGSTOP)
        process.send_signal(signal.SIGINT)
        while (line := process.stdout.readline()) and "stopping the bot" not in line:
            pass
        assert line.strip() == "stopping the bot…"
        assert group_members(pgid)  # frozen, still there: the sandbox waits for it
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0  # far less than STOP_WAIT_S
        wait_gone(pgid, run.bot_port)
        printed = process.stdout.read() + process.stderr.read()
    log = (data / "bot.log").read_text()
    assert log.strip()  # the bot did log its work
    for where, text in (("the sandbox's output", printed), ("bot.log", log)):
        assert token not in text and token.split(":", 1)[1] not in text, where
        assert secret not in text, where
        assert not re.search(r"\d+:[A-Za-z0-9_-]{20,}", text), where
