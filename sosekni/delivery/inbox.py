"""The inbox: updates stored before the webhook answers, then processed exactly once.

A worker claims rows with a token and a lease (`FOR UPDATE SKIP LOCKED` on Postgres), at
most one row per chat at a time so a chat's updates keep their order across workers. The
handler's own transaction marks its row done (see `services.work`), so a crash either
rolls back both the effect and the mark or commits both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from telegram import Update
from telegram.ext import Application

from sosekni.db import current_engine, is_postgres, sql, utcnow
from sosekni.delivery import BackgroundLoop
from sosekni.delivery.policy import DEFAULT_POLICY, DeliveryPolicy, exponential
from sosekni.logs import log_context
from sosekni.metrics import metrics
from sosekni.services.work import Claim, ClaimLost, Wakeup, current_claim

log = logging.getLogger(__name__)

inbox_ready = Wakeup()


@dataclass
class Outcome:
    """What the handlers of one update reported through PTB's error handler."""

    error: BaseException | None = None


current_outcome: ContextVar[Outcome | None] = ContextVar("current_outcome", default=None)


_INT64 = range(-(2**63), 2**63)
# JSON escapes that decode to characters no database stores: NUL and UTF-16 surrogates
# (a valid pair decodes to one character; what is left after decoding is a lone half).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse(body: bytes | str) -> tuple[str, dict[str, Any]]:
    """A webhook body as the text to store and the JSON object it holds.

    The body must be UTF-8 (a leading byte order mark is dropped) holding a JSON object.
    NUL characters and lone surrogates, which JSON allows as escapes but no database
    stores, become U+FFFD in the object. Raises ValueError saying what is wrong.
    """
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("body is not UTF-8") from None
    body = body.removeprefix("\ufeff")
    try:
        data = json.loads(body)
        if _SUSPECT_ESCAPE.search(body):
            data = _storable(data)
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    except ValueError:
        raise ValueError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a Telegram Update: the body must be a JSON object")
    return body, data


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


_KINDS = frozenset(Update.ALL_TYPES)


def describe(update: Update, data: dict[str, Any]) -> tuple[str, int | None]:
    """The update's kind (`message`, `callback_query`, …) and the chat it belongs to.

    `data` is the JSON object `update` was read from. Raises ValueError when the chat or
    sender id is not a 64-bit integer.
    """
    kind = kind_of(data)
    chat = update.effective_chat
    user = update.effective_user
    for who in (chat, user):
        if who is not None and (type(who.id) is not int or who.id not in _INT64):
            raise ValueError("chat and user ids must be 64-bit integers")
    chat_id = chat.id if chat is not None else (user.id if user is not None else None)
    return kind, chat_id


def kind_of(data: dict[str, Any]) -> str:
    """The update's kind (`message`, `callback_query`, …) from its JSON object alone."""
    return next((key for key in data if key in _KINDS), "empty")


def unreadable(error: BaseException) -> str:
    """Why an update could not be read, as stored in its row's `error`."""
    return f"unreadable: {type(error).__name__}: {error}"[:2000]


async def store(
    update_id: int, payload: str, kind: str, chat_id: int | None, error: str | None = None
) -> bool:
    """Store an update durably; False when this `update_id` was stored before.

    With an `error` (an update the bot cannot read, see `unreadable`) the row is stored as
    `failed` with that reason, so it is kept for the operator and never processed.
    """
    now = utcnow()
    rows = await sql(
        "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, attempts, "
        "next_attempt_at, received_at, error, processed_at) "
        "VALUES ({}, {}, {}, {}, {}, 0, {}, {}, {}, {}) "
        "ON CONFLICT (update_id) DO NOTHING RETURNING id",
        update_id,
        kind[:32],
        chat_id,
        payload,
        "new" if error is None else "failed",
        now,
        now,
        error,
        None if error is None else now,
    )
    if rows and error is None:
        inbox_ready.set()
    return bool(rows)


async def claim(policy: DeliveryPolicy = DEFAULT_POLICY) -> list[dict[str, Any]]:
    """Take due updates (new, or abandoned by a dead worker), oldest first, one per chat.

    Both scans repeat the WHERE of the partial indexes of open rows word for word
    (`inbox_update_open`, `inbox_update_open_chat`): SQLite uses a partial index only then,
    and without them, once ANALYZE has seen a million finished rows, it walks the table.
    """
    now = utcnow()
    token = str(uuid.uuid4())
    skip_locked = " FOR UPDATE SKIP LOCKED" if is_postgres(current_engine()) else ""
    rows = await sql(
        "UPDATE inbox_update SET status = 'processing', claim_token = {}, locked_until = {}, "
        "attempts = attempts + 1 WHERE id IN (SELECT i.id FROM inbox_update i WHERE "
        "(i.status = 'new' OR i.status = 'processing') "
        "AND ((i.status = 'new' AND i.next_attempt_at <= {}) "
        "OR (i.status = 'processing' AND i.locked_until < {})) "
        "AND NOT EXISTS (SELECT 1 FROM inbox_update o WHERE "
        "(o.status = 'new' OR o.status = 'processing') "
        "AND o.chat_id = i.chat_id AND o.id < i.id) "
        f"ORDER BY i.id LIMIT {{}}{skip_locked}) "
        "RETURNING id, update_id, payload, attempts, claim_token",
        token,
        now + timedelta(seconds=policy.inbox_lease_s),
        now,
        now,
        policy.inbox_batch,
    )
    return sorted(rows, key=lambda r: r["id"])


async def _finish_without_effect(row: dict[str, Any]) -> None:
    done = await sql(
        "UPDATE inbox_update SET status = 'done', processed_at = {}, claim_token = NULL "
        "WHERE id = {} AND claim_token = {} RETURNING id",
        utcnow(),
        row["id"],
        row["claim_token"],
    )
    if done:
        metrics.inc("updates_processed")


async def _release(row: dict[str, Any], error: BaseException, policy: DeliveryPolicy) -> None:
    """Put a failed update back for a later attempt, or give up after `inbox_max_attempts`."""
    attempts = int(row["attempts"])
    reason = f"{type(error).__name__}: {error}"[:2000]
    if attempts >= policy.inbox_max_attempts:
        log.error("update %s failed %d times, giving up: %s", row["update_id"], attempts, reason)
        failed = await sql(
            "UPDATE inbox_update SET status = 'failed', error = {}, claim_token = NULL, "
            "processed_at = {} WHERE id = {} AND claim_token = {} RETURNING id",
            reason,
            utcnow(),
            row["id"],
            row["claim_token"],
        )
        if failed:
            metrics.inc("updates_failed")
        return
    delay = exponential(
        attempts + 1, policy.backoff_base_s, policy.inbox_max_backoff_s, random.random()
    )
    log.warning(
        "update %s failed (attempt %d), retrying in %.1fs: %s",
        row["update_id"],
        attempts,
        delay,
        reason,
    )
    await sql(
        "UPDATE inbox_update SET status = 'new', error = {}, claim_token = NULL, "
        "next_attempt_at = {} WHERE id = {} AND claim_token = {}",
        reason,
        utcnow() + timedelta(seconds=delay),
        row["id"],
        row["claim_token"],
    )


async def on_handler_error(update: object, context: Any) -> None:
    """PTB error handler: hand the exception to the inbox worker processing this update."""
    outcome = current_outcome.get()
    if outcome is not None:
        outcome.error = context.error
    else:
        log.error("handler failed outside the inbox", exc_info=context.error)


async def process(
    application: Application, row: dict[str, Any], policy: DeliveryPolicy = DEFAULT_POLICY
) -> None:
    """Run one claimed update through the PTB application."""
    claim_ = Claim(row_id=row["id"], update_id=row["update_id"], token=row["claim_token"])
    outcome = Outcome()
    tokens = (
        current_claim.set(claim_),
        current_outcome.set(outcome),
        log_context.set({"update_id": row["update_id"]}),
    )
    started = time.perf_counter()
    try:
        update = Update.de_json(parse(row["payload"])[1], application.bot)
        await application.process_update(update)
    except Exception as exc:  # a payload PTB cannot read: keep it, marked failed
        outcome.error = exc
    finally:
        current_claim.reset(tokens[0])
        current_outcome.reset(tokens[1])
        if claim_.finished:  # the handler's transaction marked it done
            metrics.inc("updates_processed")
        metrics.observe_latency(time.perf_counter() - started)
    try:
        if isinstance(outcome.error, ClaimLost):
            log.info("update %s was already processed by another worker", row["update_id"])
        elif outcome.error is not None:
            await _release(row, outcome.error, policy)
        elif not claim_.finished:
            log.debug("update %s needed no action", row["update_id"])
            await _finish_without_effect(row)
    finally:
        log_context.reset(tokens[2])


class InboxWorker(BackgroundLoop):
    """The per-process loop that claims and processes stored updates."""

    name = "inbox"

    def __init__(
        self,
        application: Application,
        policy: DeliveryPolicy = DEFAULT_POLICY,
        ready: asyncio.Event | None = None,
    ) -> None:
        super().__init__(inbox_ready, ready)
        self.application = application
        self.policy = policy
        self.poll_interval_s = policy.poll_interval_s

    async def run_once(self) -> int:
        rows = await claim(self.policy)
        if rows:
            await asyncio.gather(*(process(self.application, row, self.policy) for row in rows))
        return len(rows)
