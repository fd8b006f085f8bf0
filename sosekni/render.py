"""How a request looks in Telegram: the administrators' card, its buttons, times."""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from sosekni.tables import PENDING
from sosekni.texts import text

MESSAGE_MAX = 4096  # UTF-16 units Telegram accepts in one message, after its HTML is parsed
REASON_IN_CARD_MAX = 500
REASON_IN_MESSAGE_MAX = 3000
NAME_IN_DIGEST_MAX = 64
REASON_IN_DIGEST_MAX = 100
# How much of each request's text a digest shows: the first length that fits one message.
DIGEST_EXCERPTS = (200, 120, 60, 20, 0)
_TAG = re.compile(r"<[^>]*>")


def units(value: str) -> int:
    """How long Telegram finds `value`: UTF-16 code units, so an emoji past U+FFFF counts 2
    (its 4096 limit is in these units, not in characters)."""
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def clip(value: str, limit: int) -> str:
    """`value` cut to at most `limit` UTF-16 units (Telegram's measure), with an ellipsis when
    cut; never inside a character."""
    if units(value) <= limit:
        return value
    room, kept = max(limit - 1, 0), 0  # the ellipsis is one unit
    for count, char in enumerate(value):
        kept += 2 if ord(char) > 0xFFFF else 1
        if kept > room:
            return value[:count] + "…"
    return value  # not reached: the whole is longer than limit


def visible_length(html_text: str) -> int:
    """How long Telegram finds an HTML message once parsed: UTF-16 units of its text."""
    return units(html.unescape(_TAG.sub("", html_text)))


def when(moment: datetime | None) -> str:
    """A UTC time for display: 2026-11-25 19:30 UTC."""
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "—"


def client_link(telegram_id: int, first_name: str) -> str:
    name = html.escape(first_name or str(telegram_id))
    return f'<a href="tg://user?id={telegram_id}">{name}</a>'


NOT_TOLD = "not_told"  # client_request.join_notice: the decision never reached the person


def admin_card(
    request: dict[str, Any], language: str, *, reminder: bool = False, tail: str = ""
) -> str:
    """The notification text administrators get for a request (HTML), then `tail`.

    The request's text is shortened when the whole would not fit one Telegram message.
    """
    username = request.get("client_username")
    values = {
        "id": request["id"],
        "client_link": client_link(request["client_telegram_id"], request["client_first_name"]),
        "username": f"@{html.escape(username)}" if username else text(language, "no_username"),
        "client_id": request["client_telegram_id"],
        "submitted": when(request["submitted_at"]),
    }
    head = text(language, "admin_card_reminder") if reminder else ""
    tail = unreachable_note(request, language) + tail
    frame = head + text(language, "admin_card", text="", **values) + tail
    body = clip(request["text"], MESSAGE_MAX - visible_length(frame))
    return head + text(language, "admin_card", text=html.escape(body), **values) + tail


def unreachable_note(request: dict[str, Any], language: str) -> str:
    """The line a card gets while its client has blocked the bot: a decision may not reach
    them."""
    return "\n\n" + text(language, "client_unreachable") if request.get("unreachable_at") else ""


def outcome_card(request: dict[str, Any], language: str) -> str:
    """The card once decided, withdrawn or expired: the request, the outcome and who decided,
    no buttons."""
    outcome = text(
        language,
        f"admin_outcome_{request['status']}",
        admin=_decider(request),
        responded=when(request.get("responded_at")),
    )
    if request.get("reason"):
        reason = clip(request["reason"], REASON_IN_CARD_MAX)
        outcome += text(language, "admin_outcome_reason", reason=html.escape(reason))
    if request.get("join_notice") == NOT_TOLD:
        outcome += text(language, "admin_join_not_told")
    return admin_card(request, language, tail=outcome)


def decision_keyboard(request_id: int, language: str) -> dict[str, Any]:
    return {
        "inline_keyboard": [
            [
                {
                    "text": text(language, "button_approve"),
                    "callback_data": f"approve:{request_id}",
                },
                {"text": text(language, "button_reject"), "callback_data": f"reject:{request_id}"},
            ]
        ]
    }


def _decider(request: dict[str, Any]) -> str:
    return html.escape(clip(request.get("admin_name") or "", 100)) or str(
        request.get("admin_telegram_id")
    )


def digest_block(request: dict[str, Any], language: str, excerpt: int) -> str:
    """One request in a digest: number, client, username, time, the start of its text, and
    the outcome once decided."""
    username = request.get("client_username")
    name = clip(request["client_first_name"] or "", NAME_IN_DIGEST_MAX)
    block = text(
        language,
        "digest_block",
        id=request["id"],
        client_link=client_link(request["client_telegram_id"], name),
        username=f"@{html.escape(username)}" if username else text(language, "no_username"),
        submitted=when(request["submitted_at"]),
    )
    if excerpt:
        block += "\n" + html.escape(clip(request["text"], excerpt))
    if request.get("unreachable_at"):
        block += "\n" + text(language, "client_unreachable")
    if request["status"] != PENDING:
        block += "\n" + text(
            language,
            f"digest_outcome_{request['status']}",
            admin=_decider(request),
            responded=when(request.get("responded_at")),
        )
        if request.get("reason"):
            reason = html.escape(clip(request["reason"], REASON_IN_DIGEST_MAX))
            block += text(language, "admin_outcome_reason", reason=reason)
        if request.get("join_notice") == NOT_TOLD:
            block += text(language, "digest_join_not_told")
    return block


def digest_text(requests: list[dict[str, Any]], language: str, *, reminder: bool = False) -> str:
    """Several requests in one message (HTML): a header, then one block per request.

    Each request's text is cut to the longest excerpt with which the whole fits Telegram.
    """
    waiting = sum(1 for r in requests if r["status"] == PENDING)
    if waiting < len(requests):
        header = text(language, "digest_header_progress", count=len(requests), waiting=waiting)
    else:
        key = "digest_header_reminder" if reminder else "digest_header"
        header = text(language, key, count=len(requests))
    for excerpt in DIGEST_EXCERPTS:
        body = "\n\n".join(digest_block(r, language, excerpt) for r in requests)
        message = f"{header}\n\n{body}"
        if visible_length(message) <= MESSAGE_MAX:
            break
    return message


def digest_keyboard(requests: list[dict[str, Any]], language: str) -> dict[str, Any] | None:
    """A row of ✅ #N / ❌ #N per request still pending; None when none is."""
    rows = [
        [
            {
                "text": text(language, "digest_button_approve", id=r["id"]),
                "callback_data": f"approve:{r['id']}",
            },
            {
                "text": text(language, "digest_button_reject", id=r["id"]),
                "callback_data": f"reject:{r['id']}",
            },
        ]
        for r in requests
        if r["status"] == PENDING
    ]
    return {"inline_keyboard": rows} if rows else None
