"""Where the bot acts and who may be a client: the one rule every update passes first.

The bot acts in private chats only. In a group it stays silent: no help, no decisions, no
`/pending` cards, nothing stored, so no personal data ever lands in a group. Its own
`/start`, `/request`, `/status` and `/cancel` addressed to it there (`/request@Bot`) get one short
pointer to the private chat, a `t.me/<bot>?start=request` deep link. A bare `/start` in a
group gets nothing: with several bots in a group it is as likely meant for another one.

Senders that are chats (`sender_chat`: anonymous administrators, channels) and Telegram's
placeholder users are never clients, wherever they write.

The one other chat is the administrators' group (`ADMIN_CHAT_ID`), where the cards go.
There the bot acts for active administrators only, and only on what belongs there: button
taps (anyone else gets the "not authorized" toast, which nobody else sees), decision
replies to its messages and `/pending`. Everything else in that group, from an
administrator or not, gets nothing: no help, no hints, no client commands, so nothing a
client sends ever lands there but through a card.

`gate` runs before every handler (group -1 in `bot.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import Chat, Message, MessageEntity, Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from sosekni.handlers import person_of, settings_of
from sosekni.handlers.admin import parse_reply
from sosekni.services import admins, requests

log = logging.getLogger(__name__)

TELEGRAM_SERVICE = 777000  # "Telegram": service notifications, channel posts in discussions
GROUP_ANONYMOUS_BOT = 1087968824  # an anonymous group administrator
CHANNEL_BOT = 136817688  # a user writing on behalf of a channel
PLACEHOLDER_USERS = frozenset({TELEGRAM_SERVICE, GROUP_ANONYMOUS_BOT, CHANNEL_BOT})
POINTED_COMMANDS = frozenset({"start", "request", "status", "cancel"})


@dataclass(frozen=True)
class Command:
    """A `/name[@bot] rest` at the start of a message's text or caption."""

    name: str
    rest: str
    addressed: bool  # written as /name@OurBot


ADMIN_GROUP_COMMANDS = frozenset({"pending", "stats"})


def acts_in(chat: Chat, admin_chat_id: int | None = None) -> bool:
    """The chats the bot acts in: private chats and the administrators' group."""
    return chat.type == Chat.PRIVATE or (admin_chat_id is not None and chat.id == admin_chat_id)


async def for_the_admin_group(message: Message, bot_username: str | None, bot_id: int) -> bool:
    """Whether a message in the administrators' group is for the handlers: an active
    administrator's `/pending`, or their Approve / Reject reply to one of the bot's
    messages. Anything else (chatter, other replies, client commands) gets nothing."""
    sender = message.from_user
    if sender is None or not await admins.is_active(sender.id):
        return False
    command = command_of(message, bot_username)
    if command is not None:
        return command.name in ADMIN_GROUP_COMMANDS
    replied = message.reply_to_message
    return (
        message.text is not None
        and replied is not None
        and replied.from_user is not None
        and replied.from_user.id == bot_id
        and parse_reply(message.text) is not None
    )


def from_a_person(message: Message) -> bool:
    """False for a message sent as a chat, by a bot, or by one of Telegram's placeholders."""
    sender = message.from_user
    return (
        message.sender_chat is None
        and sender is not None
        and not sender.is_bot
        and sender.id not in PLACEHOLDER_USERS
    )


def command_of(message: Message, bot_username: str | None) -> Command | None:
    """The command a message (or a photo's or document's caption) starts with; None when it
    starts with none, or with one addressed to another bot."""
    if message.text is not None:
        body, entities = message.text, message.entities
    elif message.caption is not None:
        body, entities = message.caption, message.caption_entities
    else:
        return None
    for entity in entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            name, _, target = body[1 : entity.length].partition("@")
            if target and target.lower() != (bot_username or "").lower():
                return None
            return Command(name.lower(), body[entity.length :].strip(), bool(target))
    return None


def deep_link(bot_username: str | None) -> str:
    """The link that opens the private chat with `/start request`."""
    return f"https://t.me/{bot_username}?start=request"


async def gate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Let through what the handlers may act on; answer or drop everything else here."""
    admin_chat_id = settings_of(context).admin_chat_id
    query = update.callback_query
    if query is not None:
        tapped_in = query.message.chat if query.message is not None else None
        if tapped_in is not None and not acts_in(tapped_in, admin_chat_id):
            log.info("button tapped in chat %s, which the bot does not act in", tapped_in.id)
            await requests.toast(person_of(update, context), query.id, "group_button")
            raise ApplicationHandlerStop
        return
    message = update.message
    if message is None:
        return
    if not from_a_person(message):
        log.info("ignored a message from a chat or a placeholder in chat %s", message.chat.id)
        raise ApplicationHandlerStop
    if message.chat.type == Chat.PRIVATE:
        return
    if acts_in(message.chat, admin_chat_id):
        if await for_the_admin_group(message, context.bot.username, context.bot.id):
            return
        raise ApplicationHandlerStop
    username = context.bot.username
    command = command_of(message, username)
    if command is not None and command.addressed and command.name in POINTED_COMMANDS:
        person = person_of(update, context)
        await requests.point_to_private(message.chat.id, person.language, deep_link(username))
    raise ApplicationHandlerStop
