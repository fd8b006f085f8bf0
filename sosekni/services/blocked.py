"""Clients who blocked the bot: a 403 marks their chat blocked, holds what is queued for it
and tells the administrators on the request's cards; the client writing again releases it.

Telegram answers 403 to every message to a user who blocked the bot, so retrying is
useless and every later message would fail the same way (and count towards the sender's
budget). The first 403 records `blocked_chat`; messages to that chat wait as `held` rows
(never `failed`: they are still owed), and go out in order once the client writes again,
which means they unblocked the bot. The administrators see it once, on every copy of the
request's card, because a decision they make may never reach the client.

Holding and releasing lock the `blocked_chat` row (Postgres), so a release racing a hold
never leaves a row held for a chat that is no longer blocked.
"""

from __future__ import annotations

import logging
from typing import Any

from sosekni.db import current_engine, is_postgres, row_times, sql, transaction, utcnow
from sosekni.services import admins, cards
from sosekni.services.work import UnitOfWork, notify_sender, outbox_ready

log = logging.getLogger(__name__)

HELD = "held"  # outbox status: waiting for a blocked client to write again
_TIMES = ("submitted_at", "responded_at", "unreachable_at")


def _marks(values: list[Any]) -> str:
    return ", ".join("{}" for _ in values)


async def client_blocked(
    chat_id: int, request_id: int | None, admin_language: str
) -> UnitOfWork | None:
    """Inside the sender's transaction, after a 403 from the private chat `chat_id`: mark
    the chat blocked, hold what is queued for it and queue the edit of every copy of the
    request's card (`request_id`, else the client's latest). None when the chat is an
    administrator's or was already blocked (said once); else the work to announce after
    the commit."""
    if await admins.is_active(chat_id):
        return None
    now = utcnow()
    new = await sql(
        "INSERT INTO blocked_chat (chat_id, blocked_at) VALUES ({}, {}) "
        "ON CONFLICT DO NOTHING RETURNING chat_id",
        chat_id,
        now,
    )
    if not new:
        return None
    held = await sql(
        f"UPDATE outbox_message SET status = '{HELD}' WHERE chat_id = {{}} "
        "AND status = 'pending' RETURNING id",
        chat_id,
    )
    log.warning(
        "chat %s blocked the bot: its messages are held until it writes again (%d held)",
        chat_id,
        len(held),
    )
    if request_id is None:
        latest = await sql(
            "SELECT id FROM client_request WHERE client_telegram_id = {} ORDER BY id DESC LIMIT 1",
            chat_id,
        )
        request_id = int(latest[0]["id"]) if latest else None
    if request_id is None:
        return None
    rows = await sql(
        "UPDATE client_request SET unreachable_at = {} WHERE id = {} AND client_telegram_id = {} "
        "RETURNING *",
        now,
        request_id,
        chat_id,
    )
    if not rows:
        return None
    work = UnitOfWork()
    await cards.refresh_copies(work, row_times(rows[0], *_TIMES), admin_language)
    await work.insert()
    return work


async def hold(ids: list[int]) -> list[int]:
    """The sender could not claim the pending rows `ids`: hold those whose chat is blocked
    (the others changed meanwhile). Returns the held ids."""
    if not ids:
        return []
    lock = " FOR UPDATE" if is_postgres(current_engine()) else ""
    async with transaction():
        chats = await sql(
            "SELECT chat_id FROM blocked_chat WHERE chat_id IN (SELECT chat_id FROM "
            f"outbox_message WHERE id IN ({_marks(ids)}) AND status = 'pending'){lock}",
            *ids,
        )
        if not chats:
            return []
        blocked = [int(c["chat_id"]) for c in chats]
        rows = await sql(
            f"UPDATE outbox_message SET status = '{HELD}' WHERE id IN ({_marks(ids)}) "
            f"AND status = 'pending' AND chat_id IN ({_marks(blocked)}) RETURNING id",
            *ids,
            *blocked,
        )
    return [int(r["id"]) for r in rows]


async def client_returned(chat_id: int, admin_language: str) -> int | None:
    """The client of the private chat `chat_id` wrote: if their chat was blocked, release
    what was held for it (in order, as it was queued) and take the mark off the request's
    cards, in one transaction. Returns how many messages were released, None if the chat was
    not blocked. A read first: almost every update is from a chat that never blocked."""
    if not await sql("SELECT chat_id FROM blocked_chat WHERE chat_id = {}", chat_id):
        return None
    work = UnitOfWork()
    async with transaction():
        gone = await sql("DELETE FROM blocked_chat WHERE chat_id = {} RETURNING chat_id", chat_id)
        if not gone:
            return None  # another worker released it
        released = await sql(
            "UPDATE outbox_message SET status = 'pending', next_attempt_at = {} "
            f"WHERE chat_id = {{}} AND status = '{HELD}' RETURNING id",
            utcnow(),
            chat_id,
        )
        marked = await sql(
            "UPDATE client_request SET unreachable_at = NULL WHERE client_telegram_id = {} "
            "AND unreachable_at IS NOT NULL RETURNING *",
            chat_id,
        )
        for row in marked:
            await cards.refresh_copies(work, row_times(row, *_TIMES), admin_language)
        await work.insert()
        first = min((int(r["id"]) for r in released), default=None)
        if first is not None:
            await notify_sender(first)
    log.info("chat %s wrote again: %d held message(s) released", chat_id, len(released))
    work.announce()
    if first is not None:
        outbox_ready.announce(first)
    return len(released)
