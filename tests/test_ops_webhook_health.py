"""`sosekni-ops webhook …` and `sosekni-ops health` against the fake Bot API and a live app.

The commands run in-process (`ops_in_process`): they only talk HTTP to the stand-in and the
app. The app is one real server for the module; one health check goes through the real
`sosekni-ops` process as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sosekni.standin import FakeTelegram
from tests.harness import SECRET, TOKEN, BotServer, base_env, free_port, ops_in_process, run_ops

URL = "https://bot.example.org/webhook/telegram"


@pytest.fixture
def env(telegram: FakeTelegram, tmp_path: Path) -> dict[str, str]:
    return base_env(f"sqlite:///{tmp_path / 'bot.db'}", telegram.base_url, WEBHOOK_URL=URL)


def ops(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return ops_in_process(args, env)


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_webhook_set_registers_url_secret_and_update_types(
    env: dict[str, str], telegram: FakeTelegram
) -> None:
    done = ops("webhook", "set", "--drop-pending", env=env)
    assert done.returncode == 0, done.stderr
    (call,) = telegram.calls("setWebhook")
    assert call.params["url"] == URL
    assert call.params["secret_token"] == SECRET
    assert call.params["allowed_updates"] == ["message", "callback_query"]
    assert call.params["max_connections"] == 40
    assert call.params["drop_pending_updates"] is True
    assert URL in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_webhook_set_asks_for_join_requests_with_a_community_chat(
    env: dict[str, str], telegram: FakeTelegram
) -> None:
    done = ops("webhook", "set", env={**env, "COMMUNITY_CHAT_ID": "-1001234500001"})
    assert done.returncode == 0, done.stderr
    (call,) = telegram.calls("setWebhook")
    assert call.params["allowed_updates"] == ["message", "callback_query", "chat_join_request"]
    assert "chat_join_request" in done.stdout


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://bot.example.org/webhook/telegram", "https"),
        ("https://bot.example.org:8080/webhook/telegram", "port 8080"),
    ],
)
def test_webhook_set_refuses_urls_telegram_cannot_deliver_to(
    env: dict[str, str], telegram: FakeTelegram, url: str, words: str
) -> None:
    done = ops("webhook", "set", env={**env, "WEBHOOK_URL": url})
    assert done.returncode == 1
    assert words in one_line(done.stderr)
    assert telegram.calls("setWebhook") == []


@pytest.mark.parametrize("port", [443, 80, 88, 8443])
def test_webhook_set_accepts_telegrams_ports(
    env: dict[str, str], telegram: FakeTelegram, port: int
) -> None:
    url = f"https://bot.example.org:{port}/webhook/telegram"
    assert ops("webhook", "set", env={**env, "WEBHOOK_URL": url}).returncode == 0
    assert telegram.webhook_url() == url


def test_webhook_set_needs_the_secret(env: dict[str, str], telegram: FakeTelegram) -> None:
    done = ops("webhook", "set", env={**env, "WEBHOOK_SECRET": ""})
    assert done.returncode == 1
    assert "WEBHOOK_SECRET" in one_line(done.stderr)


def test_webhook_info_shows_url_pending_count_last_error_and_connections(
    env: dict[str, str], telegram: FakeTelegram
) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    telegram.push_update({"update_id": 1, "message": {"message_id": 1, "date": 1}})
    telegram.set_webhook_error("Wrong response from the webhook: 503", date=1764090000)
    done = ops("webhook", "info", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert URL in out
    assert "pending updates" in out and "│ 1 " in out
    assert "2025-11-25 17:00:00 UTC" in out
    assert "Wrong response from the webhook: 503" in out
    assert "40" in out


def test_webhook_delete(env: dict[str, str], telegram: FakeTelegram) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    done = ops("webhook", "delete", env=env)
    assert done.returncode == 0
    assert telegram.webhook_url() == ""


def test_webhook_commands_say_so_when_the_token_is_rejected(env: dict[str, str]) -> None:
    done = ops("webhook", "info", env={**env, "TELEGRAM_BOT_TOKEN": "999:WRONG-token"})
    assert done.returncode == 1
    assert "rejected TELEGRAM_BOT_TOKEN" in one_line(done.stderr)
    assert "WRONG-token" not in done.stderr


def test_webhook_commands_say_so_when_telegram_is_unreachable(env: dict[str, str]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = ops("webhook", "info", env={**env, "TELEGRAM_API_BASE_URL": nowhere})
    assert done.returncode == 1
    assert "cannot reach the Telegram Bot API" in one_line(done.stderr)
    assert TOKEN not in done.stderr


# ----------------------------------------------------------------------------- health


@pytest.fixture(scope="module")
def live(
    fake_telegram: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotServer]:
    """The app, serving for the whole module on a database of its own."""
    tmp = tmp_path_factory.mktemp("live")
    env = base_env(f"sqlite:///{tmp / 'bot.db'}", fake_telegram.base_url, WEBHOOK_URL=URL)
    server = BotServer(env, log_path=tmp / "serve.log").start()
    yield server
    server.stop()


def health(server: BotServer, **changed: str) -> subprocess.CompletedProcess[str]:
    """`health --json` of the live app, with the app's own settings but for `changed`."""
    return ops("health", "--url", server.url, "--json", env={**server.env, **changed})


def failed_checks(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The checks `health --json` reported as failing."""
    return [c for c in json.loads(done.stdout)["checks"] if not c["ok"]]


def test_health_passes_when_app_database_telegram_and_webhook_are_fine(
    env: dict[str, str], telegram: FakeTelegram, live: BotServer
) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    done = health(live)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "app",
        "database",
        "telegram",
        "webhook",
        "pending updates",
        "last delivery error",
    ]
    table = run_ops("health", "--url", live.url, env=live.env)  # the real command, once
    assert table.returncode == 0 and "sosekni health" in table.stdout


def test_health_fails_on_a_webhook_url_other_than_webhook_url(
    env: dict[str, str], telegram: FakeTelegram, live: BotServer
) -> None:
    other = {**env, "WEBHOOK_URL": "https://elsewhere.example.org/webhook/telegram"}
    assert ops("webhook", "set", env=other).returncode == 0
    done = health(live)
    assert done.returncode == 1
    failed = {c["name"] for c in failed_checks(done)}
    assert failed == {"webhook"}


def test_health_fails_on_a_delivery_error_within_the_hour(
    env: dict[str, str], telegram: FakeTelegram, live: BotServer
) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    telegram.set_webhook_error("Connection timed out", date=int(time.time()) - 60)
    done = health(live)
    assert done.returncode == 1
    (failed,) = failed_checks(done)
    assert failed["name"] == "last delivery error"
    assert "Connection timed out" in failed["detail"]


def test_health_fails_when_the_app_is_down(env: dict[str, str], telegram: FakeTelegram) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    assert ops("migrate", env=env).returncode == 0
    done = ops("health", "--url", f"http://127.0.0.1:{free_port()}", "--json", env=env)
    assert done.returncode == 1
    failed = {c["name"] for c in failed_checks(done)}
    assert failed == {"app"}


def test_health_fails_when_the_database_is_unreachable(
    env: dict[str, str], telegram: FakeTelegram, live: BotServer
) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    done = health(live, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert done.returncode == 1
    failed = {c["name"] for c in failed_checks(done)}
    assert failed == {"database"}


def test_health_fails_when_telegram_rejects_the_token(
    env: dict[str, str], telegram: FakeTelegram, live: BotServer
) -> None:
    done = health(live, TELEGRAM_BOT_TOKEN="999:WRONG-token")
    assert done.returncode == 1
    failed = failed_checks(done)
    assert [c["name"] for c in failed] == ["telegram"]
    assert "WRONG-token" not in done.stdout


COMMUNITY = -1001234500001


def test_health_checks_the_community_chat_when_it_is_set(
    env: dict[str, str], telegram: FakeTelegram, live: BotServer
) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    telegram.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    done = health(live, COMMUNITY_CHAT_ID=str(COMMUNITY))
    assert done.returncode == 0, done.stdout + done.stderr
    (community,) = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "community chat"]
    assert community["ok"] is True
    member = telegram.calls("getChatMember")[-1].params
    assert (member["chat_id"], member["user_id"]) == (COMMUNITY, telegram.bot_id)


@pytest.mark.parametrize(
    ("status", "can_invite", "said"),
    [
        ("administrator", False, "without the right to invite users"),
        ("member", False, "without admin rights"),
        ("left", False, "Telegram refused: Forbidden: bot is not a member of the supergroup"),
        (None, False, "Telegram refused: Chat not found"),
    ],
)
def test_health_fails_when_the_bot_may_not_invite_to_the_community_chat(
    env: dict[str, str],
    telegram: FakeTelegram,
    live: BotServer,
    status: str | None,
    can_invite: bool,
    said: str,
) -> None:
    assert ops("webhook", "set", env=env).returncode == 0
    if status is not None:
        telegram.set_bot_member(COMMUNITY, status, can_invite_users=can_invite)
    done = health(live, COMMUNITY_CHAT_ID=str(COMMUNITY))
    assert done.returncode == 1
    (failed,) = failed_checks(done)
    assert failed["name"] == "community chat"
    assert said in failed["detail"] and str(COMMUNITY) in failed["detail"]
