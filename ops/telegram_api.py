"""A Bot for operator commands: the configured token and API base, failures as one line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram import Bot
from telegram.error import InvalidToken, NetworkError, TelegramError

from ops.common import fail
from sosekni.config import Settings

T = TypeVar("T")


def bot_for(settings: Settings) -> Bot:
    base = settings.telegram_api_base_url
    return Bot(settings.require_token(), base_url=f"{base}/bot", base_file_url=f"{base}/file/bot")


async def call(settings: Settings, work: Callable[[Bot], Awaitable[T]]) -> T:
    """Run `work(bot)`; raise TelegramError subclasses for the caller to word."""
    async with bot_for(settings) as bot:
        return await work(bot)


def explain(exc: TelegramError) -> str:
    if isinstance(exc, InvalidToken):
        return "Telegram rejected TELEGRAM_BOT_TOKEN (check it with @BotFather)"
    if isinstance(exc, NetworkError):
        return f"cannot reach the Telegram Bot API: {exc.message}"
    return f"Telegram refused: {exc.message}"


def run_telegram(settings: Settings, work: Callable[[Bot], Awaitable[T]]) -> T:
    """`call` from a command, turning every failure into one red line."""
    try:
        return asyncio.run(call(settings, work))
    except TelegramError as exc:
        fail(explain(exc), settings)
