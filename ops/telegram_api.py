"""Telegram for operator commands: the bot's own `bot_for`, failures as one line.

python-telegram-bot (with `cryptography` and httpx) takes a third of a second to import, so
it is imported inside these functions: only the commands that talk to Telegram pay for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ops.common import fail
from sosekni.config import Settings

if TYPE_CHECKING:
    from telegram import Bot
    from telegram.error import TelegramError

T = TypeVar("T")


async def call(settings: Settings, work: Callable[[Bot], Awaitable[T]]) -> T:
    """Run `work(bot)`; raise TelegramError subclasses for the caller to word."""
    from sosekni.bot import bot_for

    async with bot_for(settings) as bot:
        return await work(bot)


def explain(exc: TelegramError) -> str:
    """One line that says what to do about a Telegram failure, without the token."""
    from telegram.error import BadRequest, InvalidToken, NetworkError

    if isinstance(exc, InvalidToken):
        return "Telegram rejected TELEGRAM_BOT_TOKEN (check it with @BotFather)"
    if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):  # PTB: a subclass
        return f"cannot reach the Telegram Bot API: {exc.message}"
    return f"Telegram refused: {exc.message}"


def run_telegram(settings: Settings, work: Callable[[Bot], Awaitable[T]]) -> T:
    """`call` from a command, turning every failure into one red line."""
    from telegram.error import TelegramError

    try:
        return asyncio.run(call(settings, work))
    except TelegramError as exc:
        fail(explain(exc), settings)
