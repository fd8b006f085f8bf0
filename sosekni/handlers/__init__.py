"""PTB handlers: read the Telegram input, call one service. No SQL here."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from sosekni.config import Settings
from sosekni.services.requests import Person
from sosekni.texts import pick_language


def settings_of(context: ContextTypes.DEFAULT_TYPE) -> Settings:
    return context.application.bot_data["settings"]


def person_of(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Person:
    """The sender, with the text language their Telegram client asks for."""
    user = update.effective_user
    assert user is not None
    return Person(
        telegram_id=user.id,
        first_name=user.full_name,
        username=user.username,
        language=pick_language(user.language_code, settings_of(context).default_language),
    )


def chat_id_of(update: Update) -> int:
    chat = update.effective_chat
    user = update.effective_user
    if chat is not None:
        return chat.id
    assert user is not None
    return user.id
