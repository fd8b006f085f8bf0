"""Administrators' cards: what a card, a digest or an edit says when it leaves, and what its
delivery records.

Cards are rendered when the sender is about to send them, from the requests' state at that
moment, so a queue that waited behind Telegram's pace never shows a stale state:

* waiting cards for one chat (`notify`, `remind`) become one message: the single card of
  old when one request is left to show, else a digest with a row of buttons per request;
  requests decided meanwhile are left out, and when none is left nothing is sent (the
  administrator has nothing to act on; the decision reached them another way);
* an edit (`edit`) re-renders the whole message it targets from every request it shows:
  several queued edits of one message become one call with the latest state.

After delivery `delivered` records the administrator's copy of every request shown (to edit
it later) and, if a request was decided between rendering and recording, queues an edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sosekni.db import current_engine, is_postgres, row_times, sql, utcnow
from sosekni.render import (
    admin_card,
    decision_keyboard,
    digest_keyboard,
    digest_text,
    outcome_card,
)
from sosekni.services.work import UnitOfWork
from sosekni.tables import PENDING

_TIMES = ("submitted_at", "responded_at")


@dataclass
class Call:
    """A Bot API call rendered for a claimed group of outbox rows."""

    method: str
    payload: dict[str, Any]
    shown: dict[int, str] = field(default_factory=dict)  # request id → its status shown


def _placeholders(values: list[Any]) -> str:
    return ", ".join("{}" for _ in values)


async def _requests(ids: list[int], *, lock: bool = False) -> list[dict[str, Any]]:
    if not ids:
        return []
    suffix = " FOR UPDATE" if lock and is_postgres(current_engine()) else ""
    rows = await sql(
        f"SELECT * FROM client_request WHERE id IN ({_placeholders(ids)}) ORDER BY id{suffix}",
        *ids,
    )
    return [row_times(r, *_TIMES) for r in rows]


def _message(
    requests: list[dict[str, Any]], language: str, *, reminder: bool = False
) -> tuple[str, dict[str, Any] | None]:
    """The text and buttons of a message showing `requests`."""
    if len(requests) == 1:
        (request,) = requests
        if request["status"] == PENDING:
            return admin_card(request, language, reminder=reminder), decision_keyboard(
                request["id"], language
            )
        return outcome_card(request, language), None
    return digest_text(requests, language, reminder=reminder), digest_keyboard(requests, language)


async def compose_cards(rows: list[dict[str, Any]], language: str) -> Call | None:
    """One sendMessage for the waiting cards `rows` of one chat; None if none is pending."""
    ids = sorted({int(r["request_id"]) for r in rows if r["request_id"] is not None})
    pending = [r for r in await _requests(ids) if r["status"] == PENDING]
    if not pending:
        return None
    reminder = all(r["purpose"] == "remind" for r in rows)
    message, keyboard = _message(pending, language, reminder=reminder)
    payload: dict[str, Any] = {"text": message, "parse_mode": "HTML"}
    if keyboard is not None:
        payload["reply_markup"] = keyboard
    return Call("sendMessage", payload, {int(r["id"]): PENDING for r in pending})


async def members(chat_id: int, message_id: int) -> list[int]:
    """The requests an administrator's message shows, by number."""
    rows = await sql(
        "SELECT request_id FROM admin_notification WHERE chat_id = {} AND message_id = {} "
        "ORDER BY request_id",
        chat_id,
        message_id,
    )
    return [int(r["request_id"]) for r in rows]


async def compose_edit(
    chat_id: int, message_id: int, rows: list[dict[str, Any]], language: str
) -> Call | None:
    """One editMessageText showing the message's requests as they are now."""
    requests = await _requests(await members(chat_id, message_id))
    if requests:
        message, keyboard = _message(requests, language)
        payload: dict[str, Any] = {"message_id": message_id, "text": message, "parse_mode": "HTML"}
        if keyboard is not None:
            payload["reply_markup"] = keyboard  # without it Telegram removes the buttons
        return Call("editMessageText", payload, {int(r["id"]): r["status"] for r in requests})
    # A message nobody recorded (written before copies were kept): the newest stored text.
    latest = json.loads(max(rows, key=lambda r: r["id"])["payload"])
    if not latest.get("text"):
        return None
    return Call("editMessageText", latest)


def _queue_edit(
    work: UnitOfWork, chat_id: int, message_id: int, request: dict[str, Any], language: str
) -> None:
    """Queue an edit of one administrator's message after `request` changed.

    The stored text is the request's own card as it is now (what an older sender would send);
    this sender re-renders the whole message when the edit leaves.
    """
    card, keyboard = _message([request], language)  # pending (a mark changed): its buttons
    payload: dict[str, Any] = {"message_id": message_id, "text": card, "parse_mode": "HTML"}
    if keyboard is not None:
        payload["reply_markup"] = keyboard
    work.send(
        "editMessageText",
        payload,
        chat_id=chat_id,
        purpose="edit",
        request_id=request["id"],
    )


async def refresh_copies(work: UnitOfWork, request: dict[str, Any], language: str) -> None:
    """Queue an edit of every administrator's message that shows `request`."""
    copies = await sql(
        "SELECT DISTINCT chat_id, message_id FROM admin_notification WHERE request_id = {} "
        "ORDER BY chat_id, message_id",
        request["id"],
    )
    for copy in copies:
        _queue_edit(work, copy["chat_id"], copy["message_id"], request, language)


async def delivered(
    rows: list[dict[str, Any]], call: Call, message_id: int, language: str
) -> UnitOfWork | None:
    """Inside the sender's transaction: record the copies `call` showed; if one of them was
    decided since it was rendered, queue an edit of the message (the work to announce once
    the transaction commits)."""
    if not call.shown:
        return None
    chat_id = int(rows[0]["chat_id"])
    admin_id = rows[0]["admin_telegram_id"] or chat_id
    now = utcnow()
    current = await _requests(sorted(call.shown), lock=True)
    for request in current:
        await sql(
            "INSERT INTO admin_notification (request_id, admin_telegram_id, chat_id, message_id, "
            "created_at) VALUES ({}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            request["id"],
            admin_id,
            chat_id,
            message_id,
            now,
        )
    changed = [r for r in current if r["status"] != call.shown.get(int(r["id"]))]
    if not changed:
        return None
    work = UnitOfWork()
    _queue_edit(work, chat_id, message_id, changed[0], language)  # one edit shows them all
    await work.insert()
    return work
