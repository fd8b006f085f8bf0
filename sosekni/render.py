"""How a request looks in Telegram: the administrators' card, its buttons, times."""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from sosekni.tables import APPROVED
from sosekni.texts import text

MESSAGE_MAX = 4096  # characters Telegram accepts in one message, after its HTML is parsed
REASON_IN_CARD_MAX = 500
REASON_IN_MESSAGE_MAX = 3000
_TAG = re.compile(r"<[^>]*>")


def clip(value: str, limit: int) -> str:
    """`value` cut to at most `limit` characters, with an ellipsis when cut."""
    return value if len(value) <= limit else value[: max(limit - 1, 0)] + "…"


def visible_length(html_text: str) -> int:
    """How many characters Telegram counts in an HTML message."""
    return len(html.unescape(_TAG.sub("", html_text)))


def when(moment: datetime | None) -> str:
    """A UTC time for display: 2026-11-25 19:30 UTC."""
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "—"


def client_link(telegram_id: int, first_name: str) -> str:
    name = html.escape(first_name or str(telegram_id))
    return f'<a href="tg://user?id={telegram_id}">{name}</a>'


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
    frame = head + text(language, "admin_card", text="", **values) + tail
    body = clip(request["text"], MESSAGE_MAX - visible_length(frame))
    return head + text(language, "admin_card", text=html.escape(body), **values) + tail


def outcome_card(request: dict[str, Any], language: str) -> str:
    """The card once decided: the request, the outcome and who decided, no buttons."""
    key = "admin_outcome_approved" if request["status"] == APPROVED else "admin_outcome_rejected"
    outcome = text(
        language,
        key,
        admin=html.escape(clip(request.get("admin_name") or "", 100))
        or str(request.get("admin_telegram_id")),
        responded=when(request.get("responded_at")),
    )
    if request.get("reason"):
        reason = clip(request["reason"], REASON_IN_CARD_MAX)
        outcome += text(language, "admin_outcome_reason", reason=html.escape(reason))
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
