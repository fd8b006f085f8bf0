"""A stop is clean: SIGTERM to `sosekni-ops serve` ends with status 0 and leaves nothing behind.

systemd (KillMode=mixed) sends SIGTERM to the main process only and SIGKILLs whatever is
still in the unit once it has exited, so the server must stop its workers, the Sanic
state manager and the multiprocessing resource tracker itself before it exits. The server
runs in a session of its own; after the main process exits no process of that session may
remain at the moment the main process has exited (seen before it is reaped, as systemd sees
it). Sanic's main process asks its state manager about the workers ten times a second; a
SIGTERM that lands during such a question broke the stop, so one test holds the manager
(SIGSTOP) until the main process waits for its answer, and only then sends SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from sosekni.standin import FakeTelegram
from tests.harness import BotServer, base_env, message, next_id, user

STOPS = 2
STOP_TIMEOUT = 30
NEVER_IN_A_CLEAN_STOP = (
    "Traceback",
    "Experienced exception",
    "Event loop is closed",
    "leaked",
    "Killing",
    "Worker shutdown timed out",
)


def session_processes(session: int) -> list[str]:
    """Live processes (zombies aside) whose session id is `session`, from /proc/*/stat."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # pid (comm) state ppid pgrp session …; comm may hold spaces and parentheses
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(text[: text.rindex(")") + 1])
    return found


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def stop(server: BotServer) -> tuple[int | None, list[str]]:
    """SIGTERM to the main process: its exit status, and what of its session outlived it."""
    assert server.process is not None
    pid = server.process.pid
    seen: list[list[str]] = []

    def watch() -> None:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet
        seen.append(session_processes(pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    server.process.send_signal(signal.SIGTERM)
    watcher.join(STOP_TIMEOUT)
    code = server.stop()  # reaps it (SIGKILLs the session if it never stopped)
    return code, seen[0] if seen else [f"the main process did not exit in {STOP_TIMEOUT}s"]


def assert_clean(n: int, code: int | None, left: list[str], log: str) -> None:
    assert code == 0, f"stop {n}: exit status {code}\n{log}"
    assert left == [], f"stop {n}: left behind {left}\n{log}"
    found = [bad for bad in NEVER_IN_A_CLEAN_STOP if bad in log]
    assert found == [], f"stop {n}: {found}\n{log}"


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_stops_with_status_0_and_leaves_no_process(
    module_database: str, fake_telegram: FakeTelegram, workers: int, tmp_path: Path
) -> None:
    for n in range(1, STOPS + 1):
        server = BotServer(
            base_env(module_database, fake_telegram.base_url),
            workers=workers,
            log_path=tmp_path / f"serve-{n}.log",
        ).start()
        if n == STOPS:  # the last stop comes with an update just acknowledged
            answer = await server.post(message(user(next_id()), "/start"))
            assert answer.status_code == 200
        code, left = stop(server)
        assert_clean(n, code, left, server.log())


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_while_the_main_process_waits_on_sanics_state_manager(
    module_database: str, fake_telegram: FakeTelegram, workers: int, tmp_path: Path
) -> None:
    server = BotServer(
        base_env(module_database, fake_telegram.base_url),
        workers=workers,
        log_path=tmp_path / "serve.log",
    ).start()
    assert server.process is not None
    main = server.process.pid
    worker_pids = {int(p) for p in re.findall(r"Starting worker \[(\d+)\]", server.log())}
    helpers = {
        pid
        for pid in children(main) - worker_pids
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    }
    assert len(helpers) == 1, helpers  # the manager process behind Sanic's worker states
    (manager,) = helpers
    os.kill(manager, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        syscall = Path(f"/proc/{main}/syscall")
        while syscall.read_text().split()[0] != "0":  # read(2): waiting for the manager
            assert time.monotonic() < deadline, "the main process never asked the manager"
            time.sleep(0.01)
        result: list[tuple[int | None, list[str]]] = []
        stopping = threading.Thread(target=lambda: result.append(stop(server)), daemon=True)
        stopping.start()
        while "SIGTERM" not in server.log():  # the handler has run
            assert time.monotonic() < deadline + STOP_TIMEOUT, server.log()
            time.sleep(0.01)
    finally:
        os.kill(manager, signal.SIGCONT)
    stopping.join(STOP_TIMEOUT + 15)
    (outcome,) = result
    assert_clean(1, *outcome, server.log())
