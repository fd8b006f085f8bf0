"""`/health` and the bot's start-up: a bot Telegram refuses is unhealthy, a slow one is starting.

The rule: the `bot` check fails (503) once a start-up attempt failed for a reason that
waiting does not cure (Telegram refused the token, migrations missing, …) and until an
attempt succeeds; while the database is down (its own check fails) or Telegram cannot be
reached (network error, 5xx, 429) the bot is "starting" and /health stays 200 if nothing
else fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from sosekni.standin import FakeTelegram
from tests.conftest import migrated_database
from tests.harness import BotServer, base_env

REFUSED_TOKEN = "654321:REFUSED-token-of-another-bot"


def health_once(server: BotServer) -> httpx.Response | None:
    try:
        return httpx.get(f"{server.url}/health", timeout=5)
    except httpx.HTTPError:
        return None


def wait_until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen after {timeout}s")
        time.sleep(0.1)


def test_a_bot_whose_token_telegram_refuses_is_unhealthy(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = migrated_database("sqlite", None, tmp_path, fake_telegram.base_url)
    env = base_env(url, fake_telegram.base_url, TELEGRAM_BOT_TOKEN=REFUSED_TOKEN)
    server = BotServer(env, log_path=tmp_path / "serve.log").start(wait_ready=False)
    try:
        wait_until(lambda: "start-up failed" in server.log(), "a failed start-up attempt")
        answer = health_once(server)
        assert answer is not None
    finally:
        server.stop()
    body = answer.json()
    assert answer.status_code == 503, body
    assert body["failing"] == ["bot"]
    assert body["checks"]["bot"] == "start-up failed: InvalidToken"
    assert body["checks"]["database"] == "ok"
    assert REFUSED_TOKEN.split(":")[1] not in answer.text
    assert REFUSED_TOKEN.split(":")[1] not in server.log()


def test_a_bot_that_cannot_reach_telegram_yet_is_starting_and_then_ready(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = migrated_database("sqlite", None, tmp_path, fake_telegram.base_url)
    fake_telegram.reset()
    fake_telegram.fail_next(10**6, status=502, method="getMe")
    server = BotServer(base_env(url, fake_telegram.base_url), log_path=tmp_path / "serve.log")
    try:
        server.start(wait_ready=False)
        refused = lambda: len(fake_telegram.calls("getMe")) >= 2  # noqa: E731
        wait_until(refused, "a second start-up attempt")
        answer = health_once(server)
        assert answer is not None
        assert (answer.status_code, answer.json()["checks"]["bot"]) == (200, "starting")
        fake_telegram.recover()
        server.wait_ready()
        ready = health_once(server)
        assert ready is not None and ready.json()["checks"]["bot"] == "ready"
    finally:
        fake_telegram.recover()
        server.stop()
