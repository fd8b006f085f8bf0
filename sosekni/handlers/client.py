"""What clients send: /start, /request, /status, and anything else."""

from __future__ import annotations

import logging

from telegram import Chat, Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from sosekni.handlers import admin, chat_id_of, person_of, settings_of
from sosekni.handlers.chats import command_of
from sosekni.services import blocked, endings, requests
from sosekni.services.invites import Community
from sosekni.texts import text

log = logging.getLogger(__name__)


def text_after_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> str:
    """The text (or caption) after `/request` or `/request@BotName`, newlines kept."""
    message = update.effective_message
    assert message is not None
    command = command_of(message, context.bot.username)
    return command.rest if command is not None else ""


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet and explain /request; `/start request` (the groups' deep link) explains it at
    once."""
    if text_after_command(update, context) == "request":
        person = person_of(update, context)
        await requests.say(chat_id_of(update), person.language, "request_usage")
        return
    await requests.greet(person_of(update, context), chat_id_of(update))


async def request(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Store the client's request and notify the administrators."""
    await requests.submit(
        person_of(update, context),
        chat_id_of(update),
        text_after_command(update, context),
        settings_of(context).default_language,
        settings_of(context).admin_chat_id,
    )


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the client's latest request and its state."""
    community = Community.of(settings_of(context))
    await requests.status(person_of(update, context), chat_id_of(update), community)


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Withdraw the client's pending request, if any."""
    await endings.cancel(
        person_of(update, context), chat_id_of(update), settings_of(context).default_language
    )


async def other_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Anything else in a private chat: a short help."""
    person = person_of(update, context)
    await requests.help_for(person, chat_id_of(update))


async def caption_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo or document whose caption is a command: answered as the same text would be
    (PTB's CommandHandler reads `text` only)."""
    message = update.effective_message
    assert message is not None
    command = command_of(message, context.bot.username)
    handlers = {
        "start": start,
        "request": request,
        "status": status,
        "cancel": cancel,
        "pending": admin.pending,
        "stats": admin.stats,
    }
    if command is not None and command.name in handlers:
        await handlers[command.name](update, context)
    elif command is not None:
        await other_text(update, context)


async def join_request(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Someone tapped "Request to join" on the community chat: a request like `/request`.
    Join requests to any other chat are not ours to decide and are left alone."""
    join = update.chat_join_request
    assert join is not None
    settings = settings_of(context)
    if settings.community_chat_id is None or join.chat.id != settings.community_chat_id:
        log.info("ignored a join request to chat %s, which is not COMMUNITY_CHAT_ID", join.chat.id)
        return
    link = join.invite_link
    name = (link.name or link.invite_link) if link is not None else ""
    request_text = join.bio or text(settings.default_language, "join_request_text", name=name)
    await requests.submit_join(
        person_of(update, context),
        join.chat.id,
        join.user_chat_id,
        request_text,
        settings.default_language,
        settings.admin_chat_id,
    )


async def returned(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every handler: a person writing to the bot in private (or tapping one of
    its buttons there) has not blocked it, so what was held for their chat goes out now."""
    chat, sender = update.effective_chat, update.effective_user
    if chat is None or sender is None or chat.type != Chat.PRIVATE or chat.id != sender.id:
        return
    try:
        await blocked.client_returned(chat.id, settings_of(context).default_language)
    except Exception as exc:
        # PTB would go on to the handlers, whose answer would then be held: instead the
        # whole update fails here and the inbox tries it again.
        from sosekni.delivery.inbox import current_outcome

        outcome = current_outcome.get()
        if outcome is None:
            raise
        outcome.error = exc
        raise ApplicationHandlerStop from exc
