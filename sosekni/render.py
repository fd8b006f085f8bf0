"""How a request looks in Telegram: the administrators' card, its buttons, times."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from sosekni.tables import APPROVED
from sosekni.texts import text


def when(moment: datetime | None) -> str:
    """A UTC time for display: 2026-11-25 19:30 UTC."""
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "—"


def client_link(telegram_id: int, first_name: str) -> str:
    name = html.escape(first_name or str(telegram_id))
    return f'<a href="tg://user?id={telegram_id}">{name}</a>'


def admin_card(request: dict[str, Any], language: str, *, reminder: bool = False) -> str:
    """The notification text administrators get for a request (HTML)."""
    username = request.get("client_username")
    body = text(
        language,
        "admin_card",
        id=request["id"],
        client_link=client_link(request["client_telegram_id"], request["client_first_name"]),
        username=f"@{html.escape(username)}" if username else text(language, "no_username"),
        client_id=request["client_telegram_id"],
        submitted=when(request["submitted_at"]),
        text=html.escape(request["text"]),
    )
    return (text(language, "admin_card_reminder") + body) if reminder else body


def outcome_card(request: dict[str, Any], language: str) -> str:
    """The card once decided: the request, the outcome and who decided, no buttons."""
    key = "admin_outcome_approved" if request["status"] == APPROVED else "admin_outcome_rejected"
    outcome = text(
        language,
        key,
        admin=html.escape(request.get("admin_name") or str(request.get("admin_telegram_id"))),
        responded=when(request.get("responded_at")),
    )
    if request.get("reason"):
        outcome += text(language, "admin_outcome_reason", reason=html.escape(request["reason"]))
    return admin_card(request, language) + outcome


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
