"""The python-telegram-bot Application and its handler table, in one place."""

from __future__ import annotations

from telegram import Bot, MessageEntity, Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatJoinRequestHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from sosekni.config import Settings
from sosekni.updates import ALLOWED_UPDATES as ALLOWED_UPDATES  # re-exported (bench/peer.py)

MESSAGES = filters.UpdateType.MESSAGE  # edited messages and channel posts are ignored
CAPTION_COMMAND = filters.CaptionEntity(MessageEntity.BOT_COMMAND)


def api_urls(settings: Settings) -> tuple[str, str]:
    """The Bot API and file URLs under TELEGRAM_API_BASE_URL (a local Bot API server or a
    test double answers there): the one rule both builders below follow."""
    base = settings.telegram_api_base_url
    return f"{base}/bot", f"{base}/file/bot"


def application_builder(settings: Settings) -> ApplicationBuilder:
    """PTB's builder pointed at TELEGRAM_API_BASE_URL with the bot token."""
    base_url, base_file_url = api_urls(settings)
    return (
        Application.builder()
        .token(settings.require_token())
        .base_url(base_url)
        .base_file_url(base_file_url)
    )


def bot_for(settings: Settings) -> Bot:
    """A plain Bot for one-off calls (the operator's `webhook` and `health` commands).

    Not the Application's bot: that one is built for the handlers (a connection pool sized
    for the inbox); a command makes one or two calls and should not build an Application.
    """
    base_url, base_file_url = api_urls(settings)
    return Bot(settings.require_token(), base_url=base_url, base_file_url=base_file_url)


def with_handlers(application: Application, settings: Settings) -> Application:
    """The bot's settings and handler table on a built application."""
    application.bot_data["settings"] = settings
    add_handlers(application)
    return application


def build_application(settings: Settings) -> Application:
    """An Application without an Updater: updates come from our inbox, not from PTB."""
    return with_handlers(application_builder(settings).updater(None).build(), settings)


def add_handlers(application: Application) -> None:
    """The handler table, behind `chats.gate` (group -1): the one place that decides which
    chats and senders the handlers below ever see (private chats, persons). Before it,
    `client.returned` (group -2) releases what was held for a client who blocked the bot.

    The handlers (and through them the services and the database layer) are imported here,
    not at the top: `bot_for` serves operator commands that must not load them.
    """
    from sosekni.delivery.inbox import on_handler_error
    from sosekni.handlers import admin, chats, client

    application.add_handler(TypeHandler(Update, client.returned), group=-2)
    application.add_handler(TypeHandler(Update, chats.gate), group=-1)
    application.add_handlers(
        [
            CommandHandler("start", client.start, filters=MESSAGES),
            CommandHandler("request", client.request, filters=MESSAGES),
            CommandHandler("status", client.status, filters=MESSAGES),
            CommandHandler("cancel", client.cancel, filters=MESSAGES),
            CommandHandler("pending", admin.pending, filters=MESSAGES),
            CommandHandler("stats", admin.stats, filters=MESSAGES),
            CallbackQueryHandler(admin.decision_button, pattern=admin.CALLBACK_PATTERN),
            CallbackQueryHandler(admin.unknown_button),
            MessageHandler(MESSAGES & filters.REPLY & filters.TEXT & ~filters.COMMAND, admin.reply),
            MessageHandler(MESSAGES & filters.TEXT, client.other_text),
            MessageHandler(MESSAGES & CAPTION_COMMAND, client.caption_command),
            ChatJoinRequestHandler(client.join_request),
        ]
    )
    application.add_error_handler(on_handler_error)
