"""The outbox sender: delivers queued Bot API calls with rate limits and retries.

Rows are claimed with a token and a lease (`FOR UPDATE SKIP LOCKED` on Postgres), one per
chat at a time so a chat's messages keep their order. Only a call in flight when the
process dies can be sent twice; every other row is either sent and marked or not sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from datetime import timedelta
from typing import Any

from telegram import Bot
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from sosekni.db import (
    current_engine,
    is_postgres,
    row_times,
    sql,
    transaction,
    utcnow,
)
from sosekni.delivery import BackgroundLoop
from sosekni.delivery.botapi import BotApi
from sosekni.delivery.lease import SenderLease
from sosekni.render import outcome_card
from sosekni.services.work import outbox_ready
from sosekni.tables import PENDING

log = logging.getLogger(__name__)


LEASE = timedelta(seconds=60)
BATCH = 30
POLL_INTERVAL_S = 0.5
MAX_BACKOFF_S = 300.0
GLOBAL_RATE = 30.0  # messages per second, all chats together
CHAT_RATE = 1.0  # messages per second in one chat
CHAT_BURST = 3
LEASE_RETRY_S = 2.0


class RateLimiter:
    """Token buckets: about 30/s overall and 1/s per chat, with small bursts."""

    def __init__(
        self, rate: float = GLOBAL_RATE, chat_rate: float = CHAT_RATE, chat_burst: int = CHAT_BURST
    ) -> None:
        self.rate, self.chat_rate, self.chat_burst = rate, chat_rate, chat_burst
        self._global = (float(rate), time.monotonic())
        self._chats: dict[int, tuple[float, float]] = {}
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Telegram said 429: nothing leaves this process until `seconds` have passed."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    @staticmethod
    def _take(bucket: tuple[float, float], rate: float, burst: float) -> tuple[float, float]:
        tokens, stamp = bucket
        now = time.monotonic()
        tokens = min(burst, tokens + (now - stamp) * rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
        return tokens, wait

    async def acquire(self, chat_id: int | None) -> None:
        while True:
            async with self._lock:
                now = time.monotonic()
                wait = self._paused_until - now
                g_tokens, g_wait = self._take(self._global, self.rate, self.rate)
                c_tokens, c_wait = 1.0, 0.0
                if chat_id is not None:
                    bucket = self._chats.get(chat_id, (float(self.chat_burst), now))
                    c_tokens, c_wait = self._take(bucket, self.chat_rate, self.chat_burst)
                wait = max(wait, g_wait, c_wait)
                if wait <= 0:
                    self._global = (g_tokens - 1, now)
                    if chat_id is not None:
                        self._chats[chat_id] = (c_tokens - 1, now)
                        if len(self._chats) > 10_000:
                            self._forget_idle(now)
                    return
            await asyncio.sleep(wait)

    def _forget_idle(self, now: float) -> None:
        full = self.chat_burst / self.chat_rate
        self._chats = {c: b for c, b in self._chats.items() if now - b[1] < full}


async def claim(batch: int = BATCH) -> list[dict[str, Any]]:
    """Take due messages (pending, or abandoned by a dead worker), oldest first, one per chat."""
    now = utcnow()
    skip_locked = " FOR UPDATE SKIP LOCKED" if is_postgres(current_engine()) else ""
    rows = await sql(
        "UPDATE outbox_message SET status = 'sending', claim_token = {}, locked_until = {}, "
        "attempts = attempts + 1 WHERE id IN (SELECT m.id FROM outbox_message m WHERE "
        "((m.status = 'pending' AND m.next_attempt_at <= {}) "
        "OR (m.status = 'sending' AND m.locked_until < {})) "
        "AND NOT EXISTS (SELECT 1 FROM outbox_message p WHERE p.chat_id = m.chat_id "
        "AND p.id < m.id AND p.status IN ('pending', 'sending')) "
        f"ORDER BY m.id LIMIT {{}}{skip_locked}) RETURNING *",
        str(uuid.uuid4()),
        now + LEASE,
        now,
        now,
        batch,
    )
    return sorted(rows, key=lambda r: r["id"])


def retry_seconds(exc: RetryAfter) -> float:
    """Telegram's `retry_after` in seconds (PTB gives an int or a timedelta)."""
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def backoff(attempts: int) -> float:
    """Exponential backoff with jitter: about 1, 2, 4 … seconds, at most five minutes."""
    return min(MAX_BACKOFF_S, 2 ** max(attempts - 1, 0)) * (0.75 + random.random() / 2)


class OutboxSender(BackgroundLoop):
    """Delivers queued messages, in the one process that holds the sender lease."""

    name = "outbox"
    poll_interval_s = POLL_INTERVAL_S

    def __init__(
        self,
        bot: Bot,
        admin_language: str,
        lease: SenderLease,
        limiter: RateLimiter | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        super().__init__(outbox_ready, ready)
        self.bot = bot
        self.api = BotApi(bot.base_url)
        self.admin_language = admin_language
        self.lease = lease
        self.limiter = limiter or RateLimiter()
        self.leading = False
        self._next_try = 0.0

    async def _lead(self) -> bool:
        """Hold the sender lease, or try to take it at most every LEASE_RETRY_S."""
        if self.leading and await self.lease.still_held():
            return True
        if self.leading:
            self.log.warning("outbox: lost the sender lease")
            self.leading = False
        if time.monotonic() < self._next_try:
            return False
        self._next_try = time.monotonic() + LEASE_RETRY_S
        if not await self.lease.acquire():
            return False
        # The previous sender is gone: what it held is ours to send (only its in-flight
        # call may have reached Telegram already).
        taken = await sql(
            "UPDATE outbox_message SET status = 'pending', claim_token = NULL "
            "WHERE status = 'sending' RETURNING id"
        )
        self.log.info("outbox: this worker sends now (%d message(s) taken over)", len(taken))
        self.leading = True
        return True

    async def run_once(self) -> int:
        if not await self._lead():
            return 0
        rows = await claim()
        if rows:
            await asyncio.gather(*(self.deliver(row) for row in rows))
        return len(rows)

    async def deliver(self, row: dict[str, Any]) -> None:
        payload = json.loads(row["payload"])
        if row["chat_id"] is not None:
            payload["chat_id"] = row["chat_id"]
        await self.limiter.acquire(row["chat_id"])
        try:
            result = await self.api.call(row["method"], payload)
        except RetryAfter as exc:
            delay = retry_seconds(exc)
            self.limiter.pause(delay)
            await self._retry(row, f"RetryAfter: {delay:g}s", delay)
        except BadRequest as exc:
            if "message is not modified" in exc.message.lower():
                await self._sent(row, None)
            else:
                await self._fail(row, f"BadRequest: {exc.message}")
        except Forbidden as exc:
            await self._fail(row, f"Forbidden: {exc.message}")
        except TelegramError as exc:
            await self._retry(row, f"{type(exc).__name__}: {exc.message}", backoff(row["attempts"]))
        except Exception as exc:  # anything else is treated as transient: never drop a message
            await self._retry(row, f"{type(exc).__name__}: {exc}", backoff(row["attempts"]))
        else:
            await self._sent(row, result)

    async def _retry(self, row: dict[str, Any], reason: str, delay: float) -> None:
        log.warning(
            "outbox %s (%s) not sent, retry in %.1fs: %s", row["id"], row["method"], delay, reason
        )
        await sql(
            "UPDATE outbox_message SET status = 'pending', last_error = {}, claim_token = NULL, "
            "next_attempt_at = {} WHERE id = {} AND claim_token = {}",
            reason[:2000],
            utcnow() + timedelta(seconds=delay),
            row["id"],
            row["claim_token"],
        )

    async def _fail(self, row: dict[str, Any], reason: str) -> None:
        log.error(
            "outbox %s (%s to %s) failed for good: %s",
            row["id"],
            row["method"],
            row["chat_id"],
            reason,
        )
        await sql(
            "UPDATE outbox_message SET status = 'failed', last_error = {}, claim_token = NULL "
            "WHERE id = {} AND claim_token = {}",
            reason[:2000],
            row["id"],
            row["claim_token"],
        )

    async def _sent(self, row: dict[str, Any], result: Any) -> None:
        now = utcnow()
        mark = (
            "UPDATE outbox_message SET status = 'sent', sent_at = {}, claim_token = NULL, "
            "last_error = NULL WHERE id = {} AND claim_token = {}"
        )
        if row["purpose"] not in ("notify", "remind") or not isinstance(result, dict):
            await sql(mark, now, row["id"], row["claim_token"])  # one statement: no BEGIN/COMMIT
            return
        async with transaction():  # the mark and the administrator's copy together
            await sql(mark, now, row["id"], row["claim_token"])
            await self._record_notification(row, int(result["message_id"]), now)

    async def _record_notification(self, row: dict[str, Any], message_id: int, now: Any) -> None:
        """Remember an administrator's copy; if the request was decided meanwhile, edit it."""
        lock = " FOR UPDATE" if is_postgres(current_engine()) else ""
        found = await sql(f"SELECT * FROM client_request WHERE id = {{}}{lock}", row["request_id"])
        await sql(
            "INSERT INTO admin_notification (request_id, admin_telegram_id, chat_id, message_id, "
            "created_at) VALUES ({}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            row["request_id"],
            row["admin_telegram_id"] or row["chat_id"],
            row["chat_id"],
            message_id,
            now,
        )
        if found and found[0]["status"] != PENDING:
            request = row_times(found[0], "submitted_at", "responded_at")
            payload = {
                "message_id": message_id,
                "text": outcome_card(request, self.admin_language),
                "parse_mode": "HTML",
            }
            await sql(
                "INSERT INTO outbox_message (method, chat_id, payload, purpose, request_id, "
                "status, attempts, next_attempt_at, created_at) "
                "VALUES ('editMessageText', {}, {}, 'edit', {}, 'pending', 0, {}, {})",
                row["chat_id"],
                json.dumps(payload, ensure_ascii=False),
                row["request_id"],
                now,
                now,
            )
            outbox_ready.set()

    async def close(self) -> None:
        await self.lease.release()
        await self.api.close()
