"""A stop is clean: SIGTERM to `sosekni-ops serve` ends with status 0 and leaves nothing behind.

systemd (KillMode=mixed) sends SIGTERM to the main process only and SIGKILLs whatever is
still in the unit once it has exited, so the server must stop its workers, the Sanic
state manager and the multiprocessing resource tracker itself before it exits. The server
runs in a session of its own; after the main process exits no process of that session may
remain. A stop can race with the main process's bookkeeping, so each case stops a few times.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import migrated_database
from tests.fakes.postgres import drop_database
from tests.fakes.telegram import FakeTelegram
from tests.harness import BotServer, base_env, message, next_id, user

STOPS = 3
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


@pytest.fixture(scope="module")
def database_url(
    backend: str,
    fake_telegram: FakeTelegram,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    admin_dsn = request.getfixturevalue("postgres_admin_dsn") if backend == "postgres" else None
    tmp = tmp_path_factory.mktemp(f"shutdown-{backend}")
    url = migrated_database(backend, admin_dsn, tmp, fake_telegram.base_url)
    yield url
    if admin_dsn is not None:
        drop_database(admin_dsn, url)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_stops_with_status_0_and_leaves_no_process(
    database_url: str, fake_telegram: FakeTelegram, workers: int, tmp_path: Path
) -> None:
    for n in range(STOPS):
        server = BotServer(
            base_env(database_url, fake_telegram.base_url),
            workers=workers,
            log_path=tmp_path / f"serve-{n}.log",
        ).start()
        if n == STOPS - 1:  # the last stop comes with an update just acknowledged
            answer = await server.post(message(user(next_id()), "/start"))
            assert answer.status_code == 200
        assert server.process is not None
        code = server.stop()
        left = session_processes(server.process.pid)
        log = server.log()
        assert code == 0, f"stop {n + 1}: exit status {code}\n{log}"
        assert left == [], f"stop {n + 1}: left behind {left}\n{log}"
        found = [bad for bad in NEVER_IN_A_CLEAN_STOP if bad in log]
        assert found == [], f"stop {n + 1}: {found}\n{log}"
