"""Requests that end without a decision: withdrawn by the client (`/cancel`) or expired
(PENDING_EXPIRY_DAYS). One transaction each, with the client's message and the edits of
every administrator's copy, like a decision."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sosekni.db import row_times, sql, utcnow
from sosekni.logs import bind_log
from sosekni.services import cards
from sosekni.services.requests import Person
from sosekni.services.work import unit_of_work
from sosekni.tables import CANCELLED, EXPIRED, PENDING
from sosekni.texts import text

log = logging.getLogger(__name__)

_TIMES = ("submitted_at", "responded_at", "reminded_at", "created_at", "updated_at")


async def cancel(client: Person, chat_id: int, admin_language: str) -> int | None:
    """`/cancel`: the client's pending request becomes `cancelled`; returns its number, or
    None when nothing was pending (the client is told so, nothing else happens).

    The `status = pending` condition makes it race-free against a decision: whichever
    UPDATE comes first wins, the other finds nothing pending.
    """
    lang = client.language
    async with unit_of_work() as work:
        now = utcnow()
        rows = await sql(
            "UPDATE client_request SET status = {}, responded_at = {}, updated_at = {} "
            "WHERE client_telegram_id = {} AND status = {} RETURNING *",
            CANCELLED,
            now,
            now,
            client.telegram_id,
            PENDING,
        )
        if not rows:
            work.message(chat_id, text(lang, "cancel_none"), purpose="reply")
            return None
        request = row_times(rows[0], *_TIMES)
        bind_log(request_id=request["id"])
        log.info("request #%s withdrawn by the client", request["id"])
        work.message(
            chat_id,
            text(lang, "cancelled", id=request["id"]),
            purpose="decision",
            request_id=request["id"],
        )
        await cards.refresh_copies(work, request, admin_language)
        return int(request["id"])


async def expire_due(now: datetime, period: timedelta, admin_language: str) -> list[int]:
    """Requests pending longer than `period` become `expired`; returns their numbers.

    The UPDATE … RETURNING takes each request exactly once, however many workers run this
    at the same moment; the client's message and the copies' edits commit with it.
    """
    cutoff = now - period
    async with unit_of_work() as work:
        rows = await sql(
            "UPDATE client_request SET status = {}, responded_at = {}, updated_at = {} "
            "WHERE status = {} AND submitted_at <= {} RETURNING *",
            EXPIRED,
            now,
            now,
            PENDING,
            cutoff,
        )
        days = f"{period / timedelta(days=1):g}"
        for row in sorted(rows, key=lambda r: r["id"]):
            request = row_times(row, *_TIMES)
            lang = request["client_language"] or admin_language
            work.message(
                request["client_telegram_id"],
                text(lang, "expired", id=request["id"], days=days),
                purpose="decision",
                request_id=request["id"],
            )
            await cards.refresh_copies(work, request, admin_language)
        return sorted(int(r["id"]) for r in rows)
