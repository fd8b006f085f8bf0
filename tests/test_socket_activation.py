"""`serve` on a listening socket it inherits (systemd socket activation, `sosekni.socket`).

systemd holds the socket while the service restarts: connections wait in the kernel's queue
and the next process accepts them, so a restart refuses no webhook. These tests play
systemd's part (the socket held by the test, passed as descriptor 3 with LISTEN_PID and
LISTEN_FDS) with real server processes; the provisioning test does the same under a real
systemd, through nginx, during a deploy and a rollback.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sosekni.standin import FakeTelegram
from tests.conftest import migrated_copy
from tests.harness import (
    BotServer,
    Db,
    WebhookSender,
    base_env,
    ops_command,
)

# What systemd does between fork and exec: the socket becomes descriptor 3, LISTEN_PID
# names the process itself (kept across exec), LISTEN_FDS counts the sockets.
EXEC_ACTIVATED = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
if fd != 3:
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="sosekni.socket")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def activated(argv: list[str], listener: socket.socket) -> list[str]:
    """`argv` started as systemd starts a socket-activated service with `listener`."""
    return [sys.executable, "-c", EXEC_ACTIVATED, str(listener.fileno()), *argv]


@dataclass(kw_only=True)
class ActivatedServer(BotServer):
    """`sosekni-ops serve` on the test's listening socket instead of a port of its own."""

    listener: socket.socket

    def __post_init__(self) -> None:
        self.port = self.listener.getsockname()[1]
        self.pass_fds = (self.listener.fileno(),)

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command()
        return activated(argv, self.listener), env


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """What `sosekni.socket` is: a listening socket that outlives every server process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    try:
        yield sock
    finally:
        sock.close()


async def test_a_restart_on_the_inherited_socket_refuses_no_webhook(
    request: pytest.FixtureRequest,
    telegram: FakeTelegram,
    listener: socket.socket,
    tmp_path: Path,
) -> None:
    """Two workers stop and two new ones start while updates arrive at 40/s: every POST is
    answered 200, every update is stored and processed once, the old server exits 0."""
    with migrated_copy("postgres", request, tmp_path) as url, contextlib.ExitStack() as stack:
        env = base_env(url, telegram.base_url)

        def server(name: str) -> ActivatedServer:
            made = ActivatedServer(env, workers=2, log_path=tmp_path / f"{name}.log",
                                   listener=listener)  # fmt: skip
            stack.callback(made.stop)
            return made

        old, new = server("old"), server("new")
        sender = WebhookSender(old.url, interval=0.025, keepalive=False)
        stack.callback(sender.finish)
        old.start()
        assert "the socket systemd passed" in old.log()
        sender.start()
        sender.wait_for(20)  # updates flowing to the old server
        assert old.stop() == 0, old.log()
        new.start()
        sender.wait_for(len(sender.answers) + 20)  # and to the new one
        posted = sorted(sender.finish())
        refused = sender.refused()
        assert not refused, f"{len(refused)} of {len(posted)} refused: {refused}"
        db = Db(url)
        await db.settle(60)  # every update handled and its answer sent
        stored = await db.fetch("SELECT update_id, status FROM inbox_update")
        assert sorted(row["update_id"] for row in stored) == posted
        assert {row["status"] for row in stored} == {"done"}
        # Every client got its one answer: each update was handled once.
        chats = [call.params["chat_id"] for call in telegram.calls("sendMessage")]
        assert len(chats) == len(set(chats)) == len(posted)
        assert new.stop() == 0, new.log()
        # The listener outlived both stops: a third process serves on it.
        third = server("third").start()
        assert httpx.get(f"{third.url}/health", timeout=5).status_code == 200


def test_serve_refuses_a_passed_socket_that_does_not_listen(tmp_path: Path) -> None:
    """A socket unit with a datagram or unbound socket: one clear line, no traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as idle:
        env = base_env(f"sqlite:///{tmp_path / 'bot.db'}", "http://127.0.0.1:9")
        done = subprocess.run(
            activated([*ops_command(), "serve"], idle),
            env=env,
            pass_fds=(idle.fileno(),),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not a listening TCP socket" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_ignores_a_socket_passed_to_another_process(
    tmp_path: Path, listener: socket.socket, telegram: FakeTelegram
) -> None:
    """LISTEN_PID names someone else (a variable left in the environment): serve binds its
    own port as without systemd, and its spawned workers do not take the variables either."""
    env = base_env(
        f"sqlite:///{tmp_path / 'bot.db'}",
        telegram.base_url,
        LISTEN_PID="1",
        LISTEN_FDS="1",
    )
    server = BotServer(env, log_path=tmp_path / "serve.log")
    try:
        server.start()
        assert "the socket systemd passed" not in server.log()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0, server.log()
