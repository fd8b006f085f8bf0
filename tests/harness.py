"""Test harness: the bot as a real `sosekni-ops` process, a database probe, Update JSON."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx

from ops.common import free_port, ops_command

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:TEST-fake-token"
SECRET = "test-webhook-secret_42"
_ids = itertools.count(int(time.time() * 1000) % 10**9 * 100)


def next_id() -> int:
    """A fresh number for update ids and Telegram user ids, unique in this test run."""
    return next(_ids)


def base_env(database_url: str, api_base: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WEBHOOK_"))}
    env.update(
        TELEGRAM_BOT_TOKEN=TOKEN,
        WEBHOOK_SECRET=SECRET,
        DATABASE_URL=database_url,
        TELEGRAM_API_BASE_URL=api_base,
        ADMIN_TELEGRAM_ID="1",
        LOG_LEVEL="INFO",
        SOSEKNI_ENV_FILE="/nonexistent/.env",
    )
    env.update(extra)
    return env


COLUMNS = 200  # the terminal width `sosekni-ops` gets in tests, in a process or in-process


def run_ops(
    *args: str,
    env: dict[str, str],
    timeout: float = 60,
    typed: str | None = None,
    columns: str | None = str(COLUMNS),
    ops: Sequence[str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run `sosekni-ops ARGS` and return the finished process (never raises on exit code).

    `typed` goes to its stdin (None: stdin is at end of file, so no prompt can hang);
    `columns` is the COLUMNS variable (None leaves it unset, as cron does) so that tables
    are not wrapped at a terminal's width; `ops` and `cwd` run another tree's command.
    """
    env = {k: v for k, v in env.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(
        [*(ops or ops_command()), *args],
        env=env,
        cwd=cwd,
        input=typed,
        stdin=subprocess.DEVNULL if typed is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Db:
    """Reads and writes the test database directly, to check what the bot stored."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite_path = url[len("sqlite:///") :] if url.startswith("sqlite:") else None

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """SQL with `{}` placeholders; rows as dicts."""
        if self.sqlite_path is not None:
            return await asyncio.to_thread(self._sqlite, query.replace("{}", "?"), args)
        numbered = query
        for n in range(1, len(args) + 1):
            numbered = numbered.replace("{}", f"${n}", 1)
        conn = await asyncpg.connect(self.url)
        try:
            return [dict(r) for r in await conn.fetch(numbered, *args)]
        finally:
            await conn.close()

    def _sqlite(self, query: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.sqlite_path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                return [dict(r) for r in conn.execute(query, args).fetchall()]
        finally:
            conn.close()

    async def value(self, query: str, *args: Any) -> Any:
        rows = await self.fetch(query, *args)
        return next(iter(rows[0].values())) if rows else None

    async def reset(self, admins: tuple[int, ...] = ()) -> None:
        """Empty every table and make `admins` the active administrators."""
        for table in (
            "admin_notification", "outbox_message", "inbox_update", "client_request",
            "blocked_chat",
        ):  # fmt: skip
            await self.fetch(f"DELETE FROM {table}")
        await self.fetch("DELETE FROM administrator")
        for admin in admins:
            await self.add_admin(admin)

    async def add_admin(self, telegram_id: int, active: bool = True, name: str = "") -> None:
        await self.fetch(
            "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
            "VALUES ({}, {}, {}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            telegram_id,
            name,
            active,
        )

    async def new_admin(
        self, first_name: str = "Olga", username: str | None = "olga"
    ) -> dict[str, Any]:
        """A fresh Telegram user (as `user` makes one), stored as an active administrator."""
        admin = user(next_id(), first_name, username)
        await self.add_admin(admin["id"])
        return admin

    async def settle(self, timeout: float = 30) -> None:
        """Wait until every stored update is processed and every due message sent."""
        deadline = time.monotonic() + timeout
        while True:
            busy = await self.value(
                "SELECT (SELECT count(*) FROM inbox_update WHERE status IN ('new', 'processing'))"
                " + (SELECT count(*) FROM outbox_message WHERE status IN ('pending', 'sending'))"
            )
            if not busy:
                return
            if time.monotonic() > deadline:
                inbox = await self.fetch("SELECT update_id, status, error FROM inbox_update")
                outbox = await self.fetch(
                    "SELECT id, method, chat_id, status, last_error FROM outbox_message"
                )
                raise AssertionError(f"not settled after {timeout}s: {inbox} {outbox}")
            await asyncio.sleep(0.05)


@dataclass
class BotServer:
    """`sosekni-ops serve` as a real process on a free port (the benchmark's servers too).

    `ops` and `cwd` run another checkout's `sosekni-ops` (a before/after benchmark);
    subclasses change `command` and `ready` to run other servers the same way.
    """

    env: dict[str, str]
    workers: int = 1
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    ops: Sequence[str] | None = None
    cwd: Path = ROOT
    poll_s: float = 0.1
    pass_fds: tuple[int, ...] = ()  # descriptors the process inherits (socket activation)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return "server"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and environment."""
        ops = self.ops or ops_command()
        argv = [*ops, "serve", "--port", str(self.port), "--workers", str(self.workers)]
        return argv, self.env

    def start(self, wait_ready: bool = True, timeout: float = 60) -> BotServer:
        if self.log_path is None:
            self.log_path = Path(
                subprocess.check_output(
                    ["mktemp", "/tmp/sosekni-serve-XXXXXX.log"], text=True
                ).strip()
            )
        argv, env = self.command()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=self.pass_fds,
            )  # fmt: skip
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Until `ready()`, polled every `poll_s` seconds; fails if the server exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            if self.ready():
                return
            time.sleep(self.poll_s)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def ready(self) -> bool:
        """/health answers 200 and every worker has logged that its bot is ready."""
        if self.log().count("SoSenkiTestBot ready") < self.workers:
            return False
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the main process, as systemd's KillMode=mixed does; SIGKILL the group late."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)

    async def post(
        self,
        body: dict[str, Any] | bytes | str,
        *,
        secret: str | None = SECRET,
        content_type: str = "application/json",
    ) -> httpx.Response:
        headers = {"content-type": content_type}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        async with httpx.AsyncClient(timeout=30) as client:
            if isinstance(body, dict):
                import json

                body = json.dumps(body)
            return await client.post(f"{self.url}/webhook/telegram", content=body, headers=headers)


# ----------------------------------------------------------------------------- Update JSON


def user(
    user_id: int, first_name: str = "Anna", username: str | None = "anna", lang: str = "en"
) -> dict[str, Any]:
    found: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        found["username"] = username
    if lang:
        found["language_code"] = lang
    return found


def message(
    sender: dict[str, Any],
    text: str,
    *,
    reply_to: dict[str, Any] | None = None,
    update_id: int | None = None,
) -> dict[str, Any]:
    """A private-chat text message update; a leading /command gets its entity."""
    msg: dict[str, Any] = {
        "message_id": next_id() % 2**31,
        "date": int(time.time()),
        "chat": {"id": sender["id"], "type": "private", "first_name": sender["first_name"]},
        "from": sender,
        "text": text,
    }
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0]
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    if reply_to is not None:
        msg["reply_to_message"] = reply_to
    return {"update_id": update_id if update_id is not None else next_id(), "message": msg}


GROUP_ANONYMOUS_BOT = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}


def group_chat(kind: str = "supergroup", *, forum: bool = False) -> dict[str, Any]:
    """A group or supergroup (a forum when `forum`), with a fresh negative id."""
    base = -1_000_000_000_000 if kind == "supergroup" else 0
    chat: dict[str, Any] = {"id": base - next_id() % 10**9, "type": kind, "title": "Neighbours"}
    if forum:
        chat["is_forum"] = True
    return chat


def in_group(
    update: dict[str, Any],
    chat: dict[str, Any],
    *,
    sender_chat: dict[str, Any] | None = None,
    sender: dict[str, Any] | None = None,
    without_sender: bool = False,
    topic: int | None = None,
) -> dict[str, Any]:
    """A `message(...)` update moved into a group `chat`, as Telegram shapes it there.

    `sender_chat` (with `sender`, e.g. GROUP_ANONYMOUS_BOT) posts it on behalf of a chat;
    `without_sender` drops `from`; `topic` puts it in a forum topic, which makes it a reply
    to the topic's first message as every topic message is.
    """
    msg = update["message"]
    msg["chat"] = chat
    if sender is not None:
        msg["from"] = sender
    if without_sender:
        msg.pop("from", None)
    if sender_chat is not None:
        msg["sender_chat"] = sender_chat
    if topic is not None:
        msg["message_thread_id"] = topic
        msg["is_topic_message"] = True
        msg.setdefault(
            "reply_to_message",
            {
                "message_id": topic,
                "date": msg["date"] - 60,
                "chat": chat,
                "from": msg.get("from", GROUP_ANONYMOUS_BOT),
                "message_thread_id": topic,
                "forum_topic_created": {"name": "Plots", "icon_color": 7322096},
                "is_topic_message": True,
            },
        )
    return update


def with_caption(update: dict[str, Any], media: str = "photo") -> dict[str, Any]:
    """A `message(...)` update turned into a photo or document whose caption is the text."""
    msg = update["message"]
    msg["caption"] = msg.pop("text")
    if "entities" in msg:
        msg["caption_entities"] = msg.pop("entities")
    if media == "photo":
        msg["photo"] = [
            {"file_id": "AgAC-small", "file_unique_id": "AQAD1", "width": 90, "height": 67},
            {"file_id": "AgAC-big", "file_unique_id": "AQAD2", "width": 1280, "height": 960},
        ]
    else:
        msg["document"] = {
            "file_id": "BQAC-doc",
            "file_unique_id": "AgAD3",
            "file_name": "plot-42.pdf",
            "mime_type": "application/pdf",
        }
    return update


def bot_message(chat_id: int, message_id: int, text: str, bot_id: int = 123456) -> dict[str, Any]:
    """A message the bot sent, as it appears in `reply_to_message`."""
    return {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private"},
        "from": {
            "id": bot_id,
            "is_bot": True,
            "first_name": "SOSenki Test",
            "username": "SoSenkiTestBot",
        },
        "text": text,
    }


def callback(
    sender: dict[str, Any],
    data: str,
    on_message: dict[str, Any],
    update_id: int | None = None,
    query_id: str | None = None,
) -> dict[str, Any]:
    """A tap on a button of `on_message`; `query_id` names the callback query to answer."""
    return {
        "update_id": update_id if update_id is not None else next_id(),
        "callback_query": {
            "id": query_id if query_id is not None else str(next_id()),
            "from": sender,
            "chat_instance": "ci-1",
            "data": data,
            "message": on_message,
        },
    }


def wait_port_closed(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)


def ensure_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not on PATH")
    return found


def iter_lines(text: str) -> Iterator[str]:
    yield from (line for line in text.splitlines() if line.strip())


T = TypeVar("T")


def on_database(url: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` with the application's engine bound to `url`, outside any event loop (as
    a `sosekni-ops` command does), and close the pool after."""
    from sosekni.db import bind, close_pool, engine_for, open_pool

    async def main() -> T:
        engine = engine_for(url)
        bind(engine)
        await open_pool(engine, 2)
        try:
            return await work()
        finally:
            await close_pool(engine)

    return asyncio.run(main())


# ----------------------------------------------------------------------------- paced server


@dataclass
class PacedBotServer(BotServer):
    """A `BotServer` whose retry backoff is `backoff_scale` times the default.

    The fault tests watch a real process back off after Telegram errors; at the default pace
    that is 1 + 2 + 4 + 8 seconds of waiting. The pace is no product setting, so this runs
    the same app factory and Sanic worker model as `sosekni-ops serve` through the
    benchmark's wrapper (`python -m bench.serve`), which reads `BENCH_BACKOFF_SCALE`.
    """

    backoff_scale: float = 0.2

    def command(self) -> tuple[list[str], dict[str, str]]:
        port, workers = str(self.port), str(self.workers)
        argv = [sys.executable, "-m", "bench.serve", "--port", port, "--workers", workers]
        return argv, {**self.env, "BENCH_BACKOFF_SCALE": str(self.backoff_scale)}


# ----------------------------------------------------------------------------- migrated templates


def _blocking(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from sync code, in a worker thread when an event loop runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result()  # type: ignore[arg-type]


def migrate_in_process(url: str) -> None:
    """Apply every migration to `url` in this process, as `sosekni-ops migrate` does.

    The engine a test may have bound is bound again afterwards, so making a template in the
    middle of a test leaves the services pointing where they pointed.
    """
    from sosekni import migrations
    from sosekni.db import bind, close_pool, current_engine, engine_for, open_pool

    previous = current_engine()

    async def main() -> None:
        engine = engine_for(url)
        bind(engine)
        await open_pool(engine, 2)
        try:
            await migrations.forwards()
        finally:
            await close_pool(engine)

    try:
        _blocking(main)
    finally:
        bind(previous)


def clone_database(admin_dsn: str, template_url: str, prefix: str = "sosekni_test") -> str:
    """A new Postgres database created from `template_url` (which must be idle)."""
    from tests.fakes.postgres import create_database

    url = create_database(admin_dsn, prefix)
    new, template = (urlsplit(u).path.lstrip("/") for u in (url, template_url))

    async def clone() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=15)
        try:
            await conn.execute(f'DROP DATABASE "{new}"')
            await conn.execute(f'CREATE DATABASE "{new}" TEMPLATE "{template}"')
        finally:
            await conn.close()

    _blocking(clone)
    return url


class MigratedTemplates:
    """One migrated database per engine for the whole session; test databases are copies.

    Migrating costs a few hundred milliseconds in process and more as a `sosekni-ops`
    subprocess; copying a file or `CREATE DATABASE … TEMPLATE` costs little. The migrations
    run in process, once per engine (per Postgres server); `tests/test_migrations.py` keeps
    testing the real `migrate` command on databases of its own.
    """

    def __init__(self, prefix: str = "sosekni_template") -> None:
        self.prefix = prefix
        self._root: Path | None = None
        self._sqlite: Path | None = None
        self._postgres: dict[str, str] = {}  # admin DSN -> template URL
        self._lock = threading.Lock()

    def sqlite_template(self) -> Path:
        """The migrated SQLite file, made on first use."""
        with self._lock:
            if self._sqlite is None:
                self._root = Path(tempfile.mkdtemp(prefix="sosekni-template-"))
                path = self._root / "template.db"
                migrate_in_process(f"sqlite:///{path}")
                self._sqlite = path
            return self._sqlite

    def postgres_template(self, admin_dsn: str) -> str:
        """The migrated Postgres template database on `admin_dsn`'s server, made on first use."""
        from tests.fakes.postgres import create_database

        with self._lock:
            if admin_dsn not in self._postgres:
                url = create_database(admin_dsn, prefix=self.prefix)
                migrate_in_process(url)
                self._postgres[admin_dsn] = url
            return self._postgres[admin_dsn]

    def url(self, kind: str, admin_dsn: str | None) -> str:
        """The template of `kind` itself, for helpers that make their own copies of it."""
        if kind == "postgres":
            assert admin_dsn is not None, "a Postgres template needs the admin DSN"
            return self.postgres_template(admin_dsn)
        return f"sqlite:///{self.sqlite_template()}"

    def sqlite_copy(self, path: Path) -> str:
        """A migrated SQLite database at `path` (a copy of the template, private 0600)."""
        from sosekni.db import create_sqlite_file

        template = self.sqlite_template()
        create_sqlite_file(str(path))  # 0600 as the bot makes it; copyfile keeps the mode
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    def postgres_copy(self, admin_dsn: str, prefix: str = "sosekni_test") -> str:
        """A new Postgres database created from the template (`CREATE DATABASE … TEMPLATE`)."""
        template = self.postgres_template(admin_dsn)
        with self._lock:  # a template must be idle while it is copied
            return clone_database(admin_dsn, template, prefix)

    def copy(self, kind: str, admin_dsn: str | None, where: Path) -> str:
        """A migrated database of `kind` ("sqlite": a file in `where`; "postgres": on
        `admin_dsn`'s server) of its own; the caller drops a Postgres one."""
        if kind == "postgres":
            assert admin_dsn is not None, "a Postgres copy needs the admin DSN"
            return self.postgres_copy(admin_dsn)
        return self.sqlite_copy(where / "bot.db")

    def drop_postgres(self, admin_dsn: str) -> None:
        """Drop the template on `admin_dsn`'s server (before that server goes away)."""
        from tests.fakes.postgres import drop_database

        url = self._postgres.pop(admin_dsn, None)
        if url is not None:
            drop_database(admin_dsn, url)

    def remove_sqlite(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = self._sqlite = None


TEMPLATES = MigratedTemplates()


# ----------------------------------------------------------------------------- CLI in-process


@contextlib.contextmanager
def kept_logging() -> Iterator[None]:
    """Undo, on leaving, the root logging a `sosekni-ops` command configures in-process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def ops_in_process(args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`sosekni-ops ARGS` in this process with exactly `env`, shaped as a finished process.

    Variables of this process that `env` lacks are removed for the run; the logging the
    command configures is undone after. An exception that escapes the command is appended
    to stderr as the real process would print it, so "no traceback" still means none.
    """
    from typer.testing import CliRunner

    from ops.cli import app

    exact: dict[str, str | None] = {**dict.fromkeys(os.environ), **env, "COLUMNS": str(COLUMNS)}
    with kept_logging():
        done = CliRunner().invoke(app, list(args), env=exact)
    stderr = done.stderr
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        stderr += "".join(traceback.format_exception(done.exception))
    return subprocess.CompletedProcess(["sosekni-ops", *args], done.exit_code, done.stdout, stderr)


def join_request(
    sender: dict[str, Any],
    chat_id: int,
    *,
    bio: str | None = None,
    link_name: str | None = "Website",
    update_id: int | None = None,
) -> dict[str, Any]:
    """A `chat_join_request` update: `sender` tapped "Request to join" on a link of the
    supergroup `chat_id` (a link that creates join requests, named `link_name`)."""
    request: dict[str, Any] = {
        "chat": {"id": chat_id, "type": "supergroup", "title": "SOSenki community"},
        "from": sender,
        "user_chat_id": sender["id"],
        "date": int(time.time()),
        "invite_link": {
            "invite_link": "https://t.me/+AbCdEfGhIjKl...",
            "creator": {"id": 1, "is_bot": False, "first_name": "Owner"},
            "creates_join_request": True,
            "is_primary": False,
            "is_revoked": False,
        },
    }
    if link_name is not None:
        request["invite_link"]["name"] = link_name
    if bio is not None:
        request["bio"] = bio
    return {
        "update_id": update_id if update_id is not None else next_id(),
        "chat_join_request": request,
    }


# ----------------------------------------------------------------------------- traffic


class WebhookSender(threading.Thread):
    """Posts a `/help` update from a new client every `interval` seconds, as Telegram would,
    and records each update's answer (a status code, or the error that ended the call).

    `keepalive=False` opens a new connection for each update; `local_address` and `verify`
    go to httpx (a source address nginx lets through, a self-signed certificate).
    """

    def __init__(
        self,
        url: str,
        interval: float,
        *,
        keepalive: bool = True,
        local_address: str | None = None,
        verify: bool = True,
        secret: str = SECRET,
    ) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.secret = secret
        self.interval = interval
        self.keepalive = keepalive
        self.transport = httpx.HTTPTransport(local_address=local_address, verify=verify)
        self.stopping = threading.Event()
        self.answers: dict[int, int | str] = {}
        self.chats: dict[int, int] = {}  # update id -> the client's chat

    def run(self) -> None:
        headers = {
            "X-Telegram-Bot-Api-Secret-Token": self.secret,
            "content-type": "application/json",
        }
        if not self.keepalive:
            headers["Connection"] = "close"
        next_at = time.monotonic()
        with httpx.Client(transport=self.transport, timeout=30) as client:
            while not self.stopping.is_set():
                update = message(user(next_id()), "/help")
                self.chats[update["update_id"]] = update["message"]["chat"]["id"]
                try:
                    answer = client.post(
                        f"{self.url}/webhook/telegram", content=json.dumps(update), headers=headers
                    )
                    self.answers[update["update_id"]] = answer.status_code
                except httpx.HTTPError as exc:
                    self.answers[update["update_id"]] = type(exc).__name__
                next_at += self.interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def wait_for(self, count: int, timeout: float = 60) -> None:
        """Until `count` updates have been answered (or refused)."""
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            if time.monotonic() > deadline or not self.is_alive():
                raise AssertionError(f"{len(self.answers)} updates sent, not {count}")
            time.sleep(0.05)

    def finish(self) -> dict[int, int | str]:
        """Stop sending; the answers by update id."""
        self.stopping.set()
        if self.is_alive():
            self.join(60)
        return self.answers

    def refused(self) -> dict[int, int | str]:
        return {uid: answer for uid, answer in self.answers.items() if answer != 200}
