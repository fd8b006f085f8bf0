"""What administrators send: button taps, text replies, /pending, /stats."""

from __future__ import annotations

import re

from telegram import Update
from telegram.ext import ContextTypes

from sosekni.handlers import chat_id_of, person_of, settings_of
from sosekni.services import requests
from sosekni.services import stats as stats_service
from sosekni.services.requests import Answer
from sosekni.tables import APPROVED, REJECTED

CALLBACK_PATTERN = re.compile(r"^(approve|reject):(\d{1,18})$")
_REPLY = re.compile(
    r"\s*(?P<word>approve|reject)(?:\s*#?(?P<id>\d{1,18})\b)?\s*(?::(?P<reason>.*))?",
    re.IGNORECASE | re.DOTALL,
)
_REQUEST_NUMBER = re.compile(r"#(\d{1,18})")
RESPONSES = {"approve": APPROVED, "reject": REJECTED}


def parse_reply(text: str) -> tuple[str, int | None, str | None] | None:
    """`Approve`, `Reject`, `Reject: reason`, optionally naming a request (`Approve 12`,
    `Reject #12: reason`), any case → (response, request number, reason); else None."""
    match = _REPLY.fullmatch(text)
    if match is None:
        return None
    reason = (match.group("reason") or "").strip() or None
    named = int(match.group("id")) if match.group("id") else None
    return RESPONSES[match.group("word").lower()], named, reason


async def decision_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Approve or Reject tapped on a notification."""
    query = update.callback_query
    assert query is not None and query.data is not None
    match = CALLBACK_PATTERN.match(query.data)
    assert match is not None
    await requests.decide(
        person_of(update, context),
        int(match.group(2)),
        RESPONSES[match.group(1)],
        Answer(chat_id=chat_id_of(update), callback_query_id=query.id),
        settings_of(context).default_language,
    )


async def unknown_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button we no longer know: answer it so the client stops spinning."""
    query = update.callback_query
    assert query is not None
    await requests.answer_unknown_button(person_of(update, context), query.id)


async def reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A text reply to a message: a decision when it says Approve / Reject, else a hint."""
    message = update.effective_message
    assert message is not None and message.text is not None
    replied = message.reply_to_message
    assert replied is not None
    person = person_of(update, context)
    parsed = parse_reply(message.text)
    if parsed is None:
        await requests.hint(person, chat_id_of(update))
        return
    hint_id = None
    if replied.from_user is not None and replied.from_user.id == context.bot.id:
        found = _REQUEST_NUMBER.search(replied.text or "")
        hint_id = int(found.group(1)) if found else None
    response, named, reason = parsed
    await requests.decide_by_reply(
        person,
        chat_id_of(update),
        replied.message_id,
        hint_id,
        response,
        settings_of(context).default_language,
        reason,
        named_id=named,
    )


async def pending(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List pending requests, oldest first, each with its buttons."""
    await requests.list_pending(
        person_of(update, context), chat_id_of(update), settings_of(context).default_language
    )


async def stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Requests by status, time to decision and decisions per administrator."""
    await stats_service.answer(person_of(update, context), chat_id_of(update))
