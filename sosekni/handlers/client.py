"""What clients send: /start, /request, /status, and anything else."""

from __future__ import annotations

from telegram import MessageEntity, Update
from telegram.ext import ContextTypes

from sosekni.handlers import chat_id_of, person_of, settings_of
from sosekni.services import requests


def text_after_command(update: Update) -> str:
    """The text after `/request` or `/request@BotName`, newlines kept."""
    message = update.effective_message
    assert message is not None and message.text is not None
    for entity in message.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return message.text[entity.length :].strip()
    return message.text.partition(" ")[2].strip()


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet and explain /request."""
    await requests.greet(person_of(update, context), chat_id_of(update))


async def request(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Store the client's request and notify the administrators."""
    await requests.submit(
        person_of(update, context),
        chat_id_of(update),
        text_after_command(update),
        settings_of(context).default_language,
    )


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the client's latest request and its state."""
    await requests.status(person_of(update, context), chat_id_of(update))


async def other_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Anything else in a private chat: a short help."""
    person = person_of(update, context)
    await requests.help_for(person, chat_id_of(update))
