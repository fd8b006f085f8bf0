"""A stop during start-up's database work waits for it: no SQLite connection is abandoned
to a thread that later calls into a closed event loop ("Event loop is closed" printed by
`poll` when it stopped while the bot was still starting, seen under load)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sosekni.config import load_settings
from sosekni.runtime import Runtime
from tests.harness import TEMPLATES, base_env


def _database_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "connection_worker" in t.name]


def test_a_stop_while_start_up_opens_the_database_leaves_no_thread_calling_a_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = TEMPLATES.sqlite_copy(tmp_path / "bot.db")
    settings = load_settings(base_env(url, "http://127.0.0.1:9"), need_token=True)
    opening = threading.Event()
    connect = sqlite3.connect

    def slow_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        """SQLite's open in aiosqlite's thread, as slow as on a loaded machine."""
        if "connection_worker" in threading.current_thread().name:
            opening.set()
            time.sleep(0.5)
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", slow_connect)
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)

    async def start_then_stop() -> None:
        runtime = Runtime(settings)
        await runtime.start()
        for _ in range(500):  # until start-up is opening the database in its thread
            if opening.is_set():
                break
            await asyncio.sleep(0.01)
        assert opening.is_set(), "start-up never opened the database"
        await runtime.stop(timeout=10)

    asyncio.run(start_then_stop())
    for thread in _database_threads():
        thread.join(timeout=10)
    assert failures == [], [f"{f.exc_type.__name__}: {f.exc_value}" for f in failures]
