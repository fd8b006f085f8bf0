"""`sandbox`: the real bot and a Telegram stand-in on this machine, driven from a web page.

No token and no network: the stand-in (`sosekni.standin`, the one the tests use) speaks the
Bot API to the bot and serves the page where a client and a few administrators chat with it;
what they do reaches the bot's real `/webhook/telegram` as Telegram would send it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ops.common import console, error_console, fail, free_port, ops_command, plain

# The bot's settings the sandbox gives the child itself: none may come from the operator's
# environment (a production DATABASE_URL above all), nor from a `.env` file.
_SETTINGS_PREFIXES = (
    "TELEGRAM_",
    "WEBHOOK_",
    "DATABASE_",
    "ADMIN_",
    "SERVE_",
    "LOG_",
    "PENDING_",
    "INBOX_",
    "OUTBOX_",
    "COMMUNITY_",
    "INVITE_",
    "BACKUP_",
    "DEPLOY_",
    "REPO_",
    "RESTART_",
    "DEFAULT_LANGUAGE",
    "SOSEKNI_",
    "LISTEN_",
)
HEALTH_WAIT_S = 60.0
STOP_WAIT_S = 10.0  # Sanic's graceful stop takes well under a second; Ctrl-C again ends it
LOG_TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1


def bot_environment(
    base: dict[str, str], *, token: str, secret: str, database_url: str, api_base: str, admins: str
) -> dict[str, str]:
    """The bot's environment: ``base`` without any of the bot's settings, then the sandbox's
    own, with SOSEKNI_ENV_FILE naming no file (so no `.env` is ever read)."""
    env = {name: value for name, value in base.items() if not name.startswith(_SETTINGS_PREFIXES)}
    env.update(
        TELEGRAM_BOT_TOKEN=token,
        WEBHOOK_SECRET=secret,
        DATABASE_URL=database_url,
        TELEGRAM_API_BASE_URL=api_base,
        ADMIN_TELEGRAM_ID=admins,
        LOG_LEVEL="INFO",
        SOSEKNI_ENV_FILE=os.devnull,
        PYTHONUNBUFFERED="1",
    )
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(the log is empty)"


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the bot SIGTERM when the sandbox dies, even by
    SIGKILL (which no handler of ours sees); None elsewhere.

    prctl is looked up here, before the fork: the child, forked from a process with threads
    (the stand-in's), calls one C function and nothing that could wait on a lock. Only the
    bot's main process gets the signal (Linux clears it across fork); Sanic's main process
    stops its workers when it gets SIGTERM, and :func:`_stop_bot` kills what is left.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the sandbox died before prctl: no signal would come
            os._exit(1)

    return preexec


def group_members(pgid: int) -> list[int]:
    """The live processes of the group ``pgid`` (a zombie holds no port or file), from /proc;
    where there is no /proc, ``[pgid]`` while the group can be signalled at all."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat[stat.rindex(")") + 2 :].split()[:3]  # after the name
        if int(group) == pgid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_bot(bot: subprocess.Popen[bytes], wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM the bot's whole process group (as systemd stops the service), wait up to
    ``wait_s`` for it to end, then SIGKILL whatever of the group is left.

    The group, not the process: Sanic serves from a worker process even with one worker, and
    a worker whose main process died keeps the port and the SQLite file. The bot runs in a
    session of its own, so its group id is its pid.
    """
    pgid = bot.pid
    deadline = time.monotonic() + wait_s
    _kill_group(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        bot.wait(max(0.0, deadline - time.monotonic()))
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        bot.wait(10)


def sandbox(
    port: Annotated[
        int, typer.Option(help="Port of the page and the Telegram stand-in.", min=1, max=65535)
    ] = 8000,
    admins: Annotated[int, typer.Option(help="Number of administrators.", min=1, max=10)] = 2,
    data_dir: Annotated[
        Path,
        typer.Option(help="Where the sandbox keeps its database and the bot's log."),
    ] = Path(".sosekni-sandbox"),
) -> None:
    """Run the real bot against a Telegram stand-in and chat with it from a web page.

    No token, no network: the bot (the same `serve` app) runs on a SQLite database of its own
    in --data-dir, the stand-in answers its Bot API calls, and the page at
    http://127.0.0.1:PORT lets a client and the administrators send messages and press buttons.
    Ctrl-C stops both. The database is kept for the next run.

    Example: sosekni-ops sandbox · sosekni-ops sandbox --port 8001 --admins 3
    """
    from sosekni.standin import TelegramStandIn
    from sosekni.standin.botapi import DEFAULT_BOT_ID
    from sosekni.standin.sandbox import Sandbox

    data = data_dir.expanduser().resolve()
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the data directory {data}: {exc.strerror or exc}")
    token = f"{DEFAULT_BOT_ID}:{secrets.token_urlsafe(32)}"
    secret = secrets.token_urlsafe(32)
    standin = TelegramStandIn(token, port=port, username="SOSenkiSandboxBot")
    try:
        people = Sandbox(standin, admins, counters=data / "counters.json")
    except ValueError as exc:
        fail(str(exc))
    try:
        standin.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        fail(f"cannot listen on 127.0.0.1:{port}: {reason}")

    stop = threading.Event()
    bot: subprocess.Popen[bytes] | None = None

    def on_signal(*_: object) -> None:
        # The first Ctrl-C (or SIGTERM) stops the bot gently; a second one while it stops
        # kills the bot's group at once.
        if stop.is_set() and bot is not None:
            _kill_group(bot.pid, signal.SIGKILL)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    log_path = data / "bot.log"
    try:
        bot_port = free_port()
        admin_ids = ",".join(str(p.id) for p in people.people() if p.role == "admin")
        env = bot_environment(
            dict(os.environ),
            token=token,
            secret=secret,
            database_url=f"sqlite:///{data / 'sandbox.db'}",
            api_base=standin.base_url,
            admins=admin_ids,
        )
        argv = [*ops_command(), "serve", "--host", "127.0.0.1", "--port", str(bot_port)]
        console.print(plain(f"starting the bot (its log: {log_path})"), soft_wrap=True)
        with log_path.open("wb") as log:
            bot = subprocess.Popen(
                [*argv, "--workers", "1"],
                env=env,
                cwd=data,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the sandbox; it stops the bot itself
                preexec_fn=_die_with_parent(),  # one prctl call, see there
            )
        health = f"http://127.0.0.1:{bot_port}/health"
        deadline = time.monotonic() + HEALTH_WAIT_S
        while not _healthy(health):
            if bot.poll() is not None:
                _bot_died(bot, log_path)
            if stop.wait(0.1):
                return
            if time.monotonic() > deadline:
                error_console.print(plain(_log_tail(log_path)))
                fail(f"the bot did not answer {health} within {HEALTH_WAIT_S:g} s")
        people.deliver_to(f"http://127.0.0.1:{bot_port}/webhook/telegram", secret)
        names = [p.first_name for p in people.people()]
        console.print(plain(f"open http://127.0.0.1:{standin.port}"), soft_wrap=True)
        console.print(
            plain(
                f"{names[0]} (the client) sends /request <a few words>; "
                f"{', '.join(names[1:])} (administrators) decide. Ctrl-C stops."
            ),
            soft_wrap=True,
        )
        while not stop.wait(0.2):
            if bot.poll() is not None:
                _bot_died(bot, log_path)
    finally:
        if bot is not None:
            if stop.is_set():
                console.print(plain("stopping the bot…"), soft_wrap=True)
            _stop_bot(bot)
        standin.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _bot_died(bot: subprocess.Popen[bytes], log_path: Path) -> None:
    error_console.print(plain(_log_tail(log_path)))
    error_console.print(plain(f"error: the bot exited on its own (status {bot.returncode})"))
    raise typer.Exit(code=1)
