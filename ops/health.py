"""`health [--url URL] [--json]`: the running app, the database and Telegram, in one table."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from ops.common import console, health_url, plain, settings_or_fail, where
from ops.telegram_api import explain
from sosekni.config import Settings
from sosekni.logs import Redactor

# httpx, python-telegram-bot and Piccolo are imported inside the checks:
# `sosekni-ops --help` and the other commands load this module and should not pay for them.

ERROR_WINDOW_S = 3600
TIMEOUT_S = 10.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


async def check_app(url: str) -> Check:
    import httpx

    target = url if url.rstrip("/").endswith("/health") else url.rstrip("/") + "/health"
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
            answer = await http.get(target)
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        return Check("app", False, f"{target}: {type(exc).__name__}: {exc}")
    if answer.status_code != 200:
        return Check("app", False, f"{target}: {answer.status_code}, failing {body.get('failing')}")
    checks = body.get("checks", {})
    inbox = checks.get("inbox", {}).get("backlog")
    outbox = checks.get("outbox", {}).get("backlog")
    backlog = f"inbox {inbox}, outbox {outbox}"
    return Check("app", True, f"{target}: ok ({backlog})")


async def check_database(settings: Settings) -> Check:
    from sosekni import migrations
    from sosekni.db import bind, close_pool, engine_for, sql

    engine = engine_for(settings.database_url)
    bind(engine)
    try:
        await asyncio.wait_for(sql("SELECT 1 AS one"), TIMEOUT_S)
        missing = [m.migration_id for m in await migrations.status() if not m.applied]
    except Exception as exc:
        return Check("database", False, f"{where(settings)}: {type(exc).__name__}: {exc}")
    finally:
        await close_pool(engine)
    if missing:
        return Check(
            "database", False, f"{where(settings)}: {len(missing)} migration(s) not applied"
        )
    return Check("database", True, f"{where(settings)}: reachable, migrations applied")


async def check_telegram(settings: Settings) -> list[Check]:
    from telegram.error import TelegramError

    from sosekni.bot import bot_for

    try:
        async with bot_for(settings) as bot:
            me = bot.bot
            info = await bot.get_webhook_info()
            community = await check_community(bot, settings)
    except TelegramError as exc:
        return [Check("telegram", False, explain(exc))]
    checks = [Check("telegram", True, f"getMe: @{me.username} (id {me.id})")]
    if settings.webhook_url and info.url != settings.webhook_url:
        checks.append(
            Check("webhook", False, f"registered URL {info.url or '(none)'} is not WEBHOOK_URL")
        )
    elif not settings.webhook_url:
        checks.append(
            Check("webhook", not info.url, f"WEBHOOK_URL unset; registered: {info.url or 'none'}")
        )
    else:
        checks.append(Check("webhook", True, f"{info.url}"))
    checks.append(Check("pending updates", True, str(info.pending_update_count)))
    last = info.last_error_date
    if last is not None and time.time() - last.timestamp() < ERROR_WINDOW_S:
        checks.append(
            Check(
                "last delivery error",
                False,
                f"{last:%Y-%m-%d %H:%M:%S} UTC: {info.last_error_message}",
            )
        )
    else:
        checks.append(Check("last delivery error", True, "none in the last hour"))
    if community is not None:
        checks.append(community)
    return checks


async def check_community(bot: Any, settings: Settings) -> Check | None:
    """COMMUNITY_CHAT_ID set: the bot must be an administrator there with the right to
    invite users, or approvals come without a link (getChatMember of the bot)."""
    from telegram.error import TelegramError

    chat_id = settings.community_chat_id
    if chat_id is None:
        return None
    try:
        member = await bot.get_chat_member(chat_id, bot.bot.id)
    except TelegramError as exc:
        return Check("community chat", False, f"{chat_id}: {explain(exc)}")
    if member.status == "creator" or (
        member.status == "administrator" and getattr(member, "can_invite_users", False)
    ):
        return Check("community chat", True, f"{chat_id}: administrator with the invite right")
    missing = "the right to invite users" if member.status == "administrator" else "admin rights"
    return Check(
        "community chat",
        False,
        f"{chat_id}: the bot is {member.status}, without {missing}; "
        "make it an administrator with the right to invite users",
    )


def health(
    url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the running app (its /health is checked; "
            "default: http://SERVE_HOST:SERVE_PORT/health of the settings)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for monitoring systems.")
    ] = False,
) -> None:
    """Check the running app's /health, the database, Telegram getMe, the webhook and (with
    COMMUNITY_CHAT_ID) the bot's rights in the community chat.

    Exits 0 only when every check passes.

    Without --url it checks http://SERVE_HOST:SERVE_PORT/health of the settings.

    Examples: sosekni-ops health · sosekni-ops health --url http://127.0.0.1:8080 --json
    """
    settings = settings_or_fail(need_admins=False, need_token=True)
    url = url or health_url(settings)

    async def run_all() -> list[Check]:
        app, database, telegram = await asyncio.gather(
            check_app(url), check_database(settings), check_telegram(settings)
        )
        return [app, database, *telegram]

    checks = asyncio.run(run_all())
    redact = Redactor(settings.secrets)
    healthy = all(c.ok for c in checks)
    if as_json:
        shown = [{**asdict(c), "detail": redact(c.detail)} for c in checks]
        print(json.dumps({"ok": healthy, "checks": shown}))
    else:
        table = Table("check", "result", "detail", title="sosekni health")
        for c in checks:
            result = "[green]ok[/]" if c.ok else "[bold red]FAIL[/]"
            table.add_row(c.name, result, plain(redact(c.detail)))
        console.print(table)
    if not healthy:
        raise typer.Exit(code=1)
