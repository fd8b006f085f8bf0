"""Client requests: submit, status, decide, list pending. One transaction per call."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sosekni.db import row_times, sql, utcnow
from sosekni.logs import bind_log
from sosekni.render import (
    REASON_IN_MESSAGE_MAX,
    admin_card,
    clip,
    decision_keyboard,
    when,
)
from sosekni.services import admins, cards, invites
from sosekni.services.invites import Community
from sosekni.services.work import UnitOfWork, unit_of_work
from sosekni.tables import (
    APPROVED,
    CANCELLED,
    EXPIRED,
    MAX_REQUEST_TEXT,
    PENDING,
    REJECTED,
    ClientRequest,
)
from sosekni.texts import text

log = logging.getLogger(__name__)

_TIMES = (
    "submitted_at",
    "responded_at",
    "reminded_at",
    "created_at",
    "updated_at",
    "invite_expires_at",
    "invite_created_at",
)
PENDING_PAGE = 20


@dataclass(frozen=True)
class Person:
    """Whoever sent the update, as Telegram describes them."""

    telegram_id: int
    first_name: str
    username: str | None
    language: str

    @property
    def display_name(self) -> str:
        if self.username:
            return f"{self.first_name} (@{self.username})" if self.first_name else self.username
        return self.first_name or str(self.telegram_id)


@dataclass(frozen=True)
class Answer:
    """Where a short answer goes: a callback query's toast, else a message to the chat."""

    chat_id: int
    callback_query_id: str | None = None


class Submitted(StrEnum):
    CREATED = "created"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    ALREADY_PENDING = "already_pending"
    ALREADY_APPROVED = "already_approved"


class Decided(StrEnum):
    DECIDED = "decided"
    ALREADY_PROCESSED = "already_processed"
    NOT_AUTHORIZED = "not_authorized"
    NOT_FOUND = "not_found"


def _request(row: dict[str, Any]) -> dict[str, Any]:
    return row_times(row, *_TIMES)


def _answer(work: UnitOfWork, answer: Answer, message: str, *, alert: bool = False) -> None:
    if answer.callback_query_id is not None:
        payload: dict[str, Any] = {"callback_query_id": answer.callback_query_id, "text": message}
        if alert:
            payload["show_alert"] = True
        work.send("answerCallbackQuery", payload, chat_id=None, purpose="callback")
    else:
        work.message(answer.chat_id, message, purpose="reply")


async def say(chat_id: int, language: str, key: str, **values: object) -> None:
    """Send one fixed text (greeting, help, hint)."""
    async with unit_of_work() as work:
        work.message(chat_id, text(language, key, **values), purpose="reply")


async def greet(person: Person, chat_id: int) -> None:
    """`/start`: the greeting, plus the administrators' commands for an administrator."""
    async with unit_of_work() as work:
        message = text(person.language, "start")
        if await admins.is_active(person.telegram_id):
            message += "\n\n" + text(person.language, "help_admin")
        work.message(chat_id, message, purpose="reply")


async def submit(
    client: Person,
    chat_id: int,
    request_text: str,
    admin_language: str,
    admin_chat_id: int | None = None,
) -> tuple[Submitted, int | None]:
    """`/request <text>`: store it once, confirm, notify every active administrator (or the
    administrators' group `admin_chat_id`, once)."""
    request_text = request_text.strip()
    lang = client.language
    async with unit_of_work() as work:
        if not request_text:
            work.message(chat_id, text(lang, "request_usage"), purpose="reply")
            return Submitted.EMPTY, None
        if len(request_text) > MAX_REQUEST_TEXT:
            work.message(
                chat_id, text(lang, "request_too_long", limit=MAX_REQUEST_TEXT), purpose="reply"
            )
            return Submitted.TOO_LONG, None
        approved = await sql(
            "SELECT id FROM client_request WHERE client_telegram_id = {} AND status = {} "
            "ORDER BY id DESC LIMIT 1",
            client.telegram_id,
            APPROVED,
        )
        if approved:
            work.message(
                chat_id, text(lang, "already_approved", id=approved[0]["id"]), purpose="reply"
            )
            return Submitted.ALREADY_APPROVED, approved[0]["id"]
        # Checked first so that the ordinary refusal draws no number from the id sequence
        # (Postgres draws one even for an INSERT that ends in DO NOTHING).
        pending = await _pending_of(client.telegram_id)
        if pending is not None:
            _already_pending(work, chat_id, lang, pending)
            return Submitted.ALREADY_PENDING, pending["id"]
        now = utcnow()
        # The partial unique index decides under concurrency: a second pending row conflicts.
        rows = await sql(
            "INSERT INTO client_request (client_telegram_id, client_username, client_first_name, "
            "client_language, text, status, submitted_at, created_at, updated_at) "
            "VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING RETURNING *",
            client.telegram_id,
            client.username,
            client.first_name,
            lang,
            request_text,
            PENDING,
            now,
            now,
            now,
        )
        if not rows:  # a concurrent request of the same client won
            pending = await _pending_of(client.telegram_id)
            _already_pending(work, chat_id, lang, pending or {"id": "?", "submitted_at": None})
            return Submitted.ALREADY_PENDING, pending["id"] if pending else None
        request = await _stored(work, rows[0], chat_id, lang, admin_language, admin_chat_id)
        return Submitted.CREATED, request["id"]


async def _stored(
    work: UnitOfWork,
    row: dict[str, Any],
    chat_id: int,
    lang: str,
    admin_language: str,
    admin_chat_id: int | None,
) -> dict[str, Any]:
    """A request just stored, by `/request` or a join request: the client's confirmation to
    `chat_id` and the administrators' cards, in the caller's transaction."""
    request = _request(row)
    bind_log(request_id=request["id"])
    log.info("request #%s stored for client %s", request["id"], request["client_telegram_id"])
    work.message(
        chat_id,
        text(lang, "request_received", id=request["id"]),
        purpose="confirm",
        request_id=request["id"],
    )
    for admin_id in await notified_chats(admin_chat_id):
        _notify(work, admin_id, request, admin_language)
    return request


JOIN_APPROVE, JOIN_DECLINE = "approveChatJoinRequest", "declineChatJoinRequest"


def _answer_join(
    work: UnitOfWork, chat_id: int, user_id: int, response: str, request_id: int
) -> None:
    method = JOIN_APPROVE if response == APPROVED else JOIN_DECLINE
    work.send(method, {"user_id": user_id}, chat_id=chat_id, purpose="join", request_id=request_id)


async def submit_join(
    client: Person,
    join_chat_id: int,
    user_chat_id: int,
    request_text: str,
    admin_language: str,
    admin_chat_id: int | None = None,
) -> tuple[Submitted, int | None]:
    """A Telegram join request to the community chat: a request like `/request`, answered
    through `user_chat_id`. Someone approved before is let in at once; a pending request
    takes the join request along (its decision answers it too)."""
    lang = client.language
    request_text = request_text.strip()[:MAX_REQUEST_TEXT] or "—"
    async with unit_of_work() as work:
        approved = await sql(
            "SELECT id FROM client_request WHERE client_telegram_id = {} AND status = {} "
            "ORDER BY id DESC LIMIT 1",
            client.telegram_id,
            APPROVED,
        )
        if approved:
            request_id = int(approved[0]["id"])
            log.info("join request of %s approved at once (#%s)", client.telegram_id, request_id)
            _answer_join(work, join_chat_id, client.telegram_id, APPROVED, request_id)
            work.message(
                user_chat_id, text(lang, "already_approved", id=request_id), purpose="reply"
            )
            return Submitted.ALREADY_APPROVED, request_id
        pending = await _pending_of(client.telegram_id)
        rows = []
        if pending is None:
            now = utcnow()
            rows = await sql(
                "INSERT INTO client_request (client_telegram_id, client_username, "
                "client_first_name, client_language, text, status, submitted_at, created_at, "
                "updated_at, join_chat_id) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}) "
                "ON CONFLICT DO NOTHING RETURNING *",
                client.telegram_id,
                client.username,
                client.first_name,
                lang,
                request_text,
                PENDING,
                now,
                now,
                now,
                join_chat_id,
            )
        if not rows:
            pending = pending or await _pending_of(client.telegram_id)
            if pending is None:  # decided in between: the person asks again
                raise RuntimeError("the pending request was decided meanwhile; retry")
            await sql(
                "UPDATE client_request SET join_chat_id = {} WHERE id = {}",
                join_chat_id,
                pending["id"],
            )
            _already_pending(work, user_chat_id, lang, pending)
            return Submitted.ALREADY_PENDING, pending["id"]
        request = await _stored(work, rows[0], user_chat_id, lang, admin_language, admin_chat_id)
        return Submitted.CREATED, request["id"]


async def notified_chats(admin_chat_id: int | None) -> list[int]:
    """Where a request's card goes: the administrators' group once when there is one (one
    message per request, not one per administrator), else each active administrator."""
    return [admin_chat_id] if admin_chat_id is not None else await admins.active_ids()


async def _pending_of(client_telegram_id: int) -> dict[str, Any] | None:
    rows = await sql(
        "SELECT id, submitted_at FROM client_request WHERE client_telegram_id = {} AND status = {}",
        client_telegram_id,
        PENDING,
    )
    return _request(rows[0]) if rows else None


def _already_pending(work: UnitOfWork, chat_id: int, lang: str, existing: dict[str, Any]) -> None:
    work.message(
        chat_id,
        text(lang, "already_pending", id=existing["id"], submitted=when(existing["submitted_at"])),
        purpose="reply",
    )


def _notify(
    work: UnitOfWork,
    admin_id: int,
    request: dict[str, Any],
    language: str,
    *,
    reminder: bool = False,
    purpose: str = "notify",
) -> None:
    work.message(
        admin_id,
        admin_card(request, language, reminder=reminder),
        purpose=purpose,
        request_id=request["id"],
        admin_telegram_id=admin_id,
        payload={"reply_markup": decision_keyboard(request["id"], language)},
    )


async def status(client: Person, chat_id: int, community: Community | None = None) -> str | None:
    """`/status`: the client's latest request and its state; returns that state. An approved
    client also gets their community link while it is valid, or a fresh one."""
    lang = client.language
    async with unit_of_work() as work:
        rows = await sql(
            "SELECT * FROM client_request WHERE client_telegram_id = {} ORDER BY id DESC LIMIT 1",
            client.telegram_id,
        )
        if not rows:
            work.message(chat_id, text(lang, "status_none"), purpose="reply")
            return None
        request = _request(rows[0])
        values = {
            "id": request["id"],
            "submitted": when(request["submitted_at"]),
            "responded": when(request["responded_at"]),
        }
        if request["status"] == PENDING:
            message = text(lang, "status_pending", **values)
            message += "\n" + text(lang, "help_cancel")
        elif request["status"] == APPROVED:
            message = text(lang, "status_approved", **values)
            if community is not None and request.get("join_chat_id") is None:
                # (Let in through their join request, they need no link.)
                line = await _status_link(work, community, request, lang)
                if line is not None:
                    message += "\n\n" + line
        elif request["status"] in (CANCELLED, EXPIRED):
            message = text(lang, f"status_{request['status']}", **values)
            message += "\n" + text(lang, "status_rejected_again")
        else:
            key = "status_rejected_reason" if request["reason"] else "status_rejected"
            reason = html.escape(clip(request["reason"] or "", REASON_IN_MESSAGE_MAX))
            message = text(lang, key, reason=reason, **values)
            message += "\n" + text(lang, "status_rejected_again")
        work.message(chat_id, message, purpose="reply")
        return str(request["status"])


async def _status_link(
    work: UnitOfWork, community: Community, request: dict[str, Any], lang: str
) -> str | None:
    """The valid link; or, for an expired one, None while Telegram is asked whether the
    client joined through it (the answer follows); else a fresh one on its way."""
    if invites.valid_link(request, utcnow()) is not None:
        return invites.link_line(lang, request)
    pending = await invites.in_flight(int(request["id"]))
    if pending == invites.MEMBER:
        return None
    if pending is None:
        if request.get("invite_link"):
            invites.queue_check(work, community, request)
            return None
        await invites.renew(work, community, request)
    return text(lang, "status_link_coming")


async def decide(
    admin: Person,
    request_id: int,
    response: str,
    answer: Answer,
    admin_language: str,
    reason: str | None = None,
    community: Community | None = None,
) -> Decided:
    """Approve or reject: the first decision wins; every copy is edited; the client is told."""
    async with unit_of_work() as work:
        return await _decide(
            work, admin, request_id, response, answer, admin_language, reason, community
        )


async def decide_by_reply(
    admin: Person,
    chat_id: int,
    replied_message_id: int,
    request_id_hint: int | None,
    response: str,
    admin_language: str,
    reason: str | None = None,
    named_id: int | None = None,
    community: Community | None = None,
) -> Decided:
    """A text reply `Approve` / `Reject[: reason]` to a notification, or `Approve 12` /
    `Reject 12: reason` naming one request of a digest."""
    answer = Answer(chat_id=chat_id)
    lang = admin.language
    async with unit_of_work() as work:
        if not await admins.is_active(admin.telegram_id):
            _answer(work, answer, text(lang, "not_authorized"))
            return Decided.NOT_AUTHORIZED
        shown = await cards.members(chat_id, replied_message_id)
        if named_id is not None:
            if shown and named_id not in shown:
                ids = ", ".join(f"#{n}" for n in shown)
                _answer(work, answer, text(lang, "reply_wrong_request", id=named_id, ids=ids))
                return Decided.NOT_FOUND
            request_id: int | None = named_id
        elif len(shown) > 1:
            _answer(work, answer, text(lang, "digest_reply_hint", id=shown[0]))
            return Decided.NOT_FOUND
        else:
            request_id = shown[0] if shown else request_id_hint
        if request_id is None:
            _answer(work, answer, text(lang, "reply_unknown_request"))
            return Decided.NOT_FOUND
        return await _decide(
            work, admin, request_id, response, answer, admin_language, reason, community
        )


async def _decide(
    work: UnitOfWork,
    admin: Person,
    request_id: int,
    response: str,
    answer: Answer,
    admin_language: str,
    reason: str | None,
    community: Community | None = None,
) -> Decided:
    if response not in (APPROVED, REJECTED):
        raise ValueError(f"response must be {APPROVED} or {REJECTED}, not {response!r}")
    lang = admin.language
    bind_log(request_id=request_id)
    if not await admins.is_active(admin.telegram_id):
        log.info("refused a decision by %s: not an active administrator", admin.telegram_id)
        _answer(work, answer, text(lang, "not_authorized"), alert=True)
        return Decided.NOT_AUTHORIZED
    reason = (reason or "").strip() or None
    now = utcnow()
    rows = await sql(
        "UPDATE client_request SET status = {}, response = {}, admin_telegram_id = {}, "
        "admin_name = {}, reason = {}, responded_at = {}, updated_at = {} "
        "WHERE id = {} AND status = {} RETURNING *",
        response,
        response,
        admin.telegram_id,
        admin.display_name,
        reason,
        now,
        now,
        request_id,
        PENDING,
    )
    if not rows:
        found = await sql("SELECT * FROM client_request WHERE id = {}", request_id)
        if not found:
            _answer(work, answer, text(lang, "request_not_found", id=request_id), alert=True)
            return Decided.NOT_FOUND
        done = _request(found[0])
        if done["status"] in (CANCELLED, EXPIRED):  # nobody decided: no name to show
            status_word = text(lang, f"status_word_{done['status']}")
            ended = text(
                lang,
                "already_ended",
                id=request_id,
                status=status_word,
                responded=when(done["responded_at"]),
            )
            _answer(work, answer, ended, alert=True)
            return Decided.ALREADY_PROCESSED
        _answer(
            work,
            answer,
            text(
                lang,
                "already_processed",
                id=request_id,
                status=text(lang, f"status_word_{done['status']}"),
                admin=done["admin_name"] or done["admin_telegram_id"],
                responded=when(done["responded_at"]),
            ),
            alert=True,
        )
        return Decided.ALREADY_PROCESSED
    request = _request(rows[0])
    log.info("request #%s %s by %s", request_id, response, admin.telegram_id)
    client_lang = request["client_language"] or admin_language
    client_message: str | None = None
    join_chat_id = request.get("join_chat_id")
    if join_chat_id is not None:
        # A join request: Telegram's answer lets them in (or not); no link is needed.
        _answer_join(
            work, int(join_chat_id), int(request["client_telegram_id"]), response, request_id
        )
    if response == APPROVED and join_chat_id is not None:
        client_message = text(client_lang, "welcome_joined", id=request_id)
    elif response == APPROVED and community is not None:
        # The welcome follows the link: the sender queues it with Telegram's answer.
        invites.queue_create(work, community, request_id, invites.INVITE, now)
    elif response == APPROVED:
        client_message = text(client_lang, "welcome", id=request_id)
    elif reason:
        client_message = text(
            client_lang,
            "rejected_reason",
            id=request_id,
            reason=html.escape(clip(reason, REASON_IN_MESSAGE_MAX)),
        )
    else:
        client_message = text(client_lang, "rejected", id=request_id)
    if client_message is not None:
        work.message(
            request["client_telegram_id"],
            client_message,
            purpose="decision",
            request_id=request_id,
        )
    # Every copy shows the outcome; cards not sent yet leave without this request.
    await cards.refresh_copies(work, request, admin_language)
    _answer(work, answer, text(lang, f"decided_{response}", id=request_id))
    return Decided.DECIDED


async def list_pending(admin: Person, chat_id: int, admin_language: str) -> int:
    """`/pending`: the waiting requests, oldest first, each with its buttons."""
    lang = admin.language
    async with unit_of_work() as work:
        if not await admins.is_active(admin.telegram_id):
            work.message(chat_id, text(lang, "not_authorized"), purpose="reply")
            return 0
        rows = (
            await ClientRequest.select()
            .where(ClientRequest.status == PENDING)
            .order_by(ClientRequest.submitted_at, ClientRequest.id)
            .limit(PENDING_PAGE + 1)
        )
        if not rows:
            work.message(chat_id, text(lang, "pending_none"), purpose="reply")
            return 0
        total = await ClientRequest.count().where(ClientRequest.status == PENDING)
        work.message(chat_id, text(lang, "pending_header", count=total), purpose="reply")
        for row in rows[:PENDING_PAGE]:
            _notify(work, chat_id, _request(row), admin_language)
        if total > PENDING_PAGE:
            work.message(
                chat_id, text(lang, "pending_more", count=total - PENDING_PAGE), purpose="reply"
            )
        return int(total)


async def help_for(person: Person, chat_id: int) -> None:
    """A message we have no command for: the client help, or the administrator help."""
    async with unit_of_work() as work:
        key = "help_admin" if await admins.is_active(person.telegram_id) else "help"
        work.message(chat_id, text(person.language, key), purpose="reply")


async def hint(person: Person, chat_id: int) -> None:
    """A reply that is neither Approve nor Reject: the administrator hint, else the help."""
    async with unit_of_work() as work:
        key = "reply_hint" if await admins.is_active(person.telegram_id) else "help"
        work.message(chat_id, text(person.language, key), purpose="reply")


async def answer_unknown_button(person: Person, callback_query_id: str) -> None:
    await toast(person, callback_query_id, "unknown_button")


async def toast(person: Person, callback_query_id: str, key: str) -> None:
    """Answer a button tap with the short text `key`, so the client stops spinning."""
    async with unit_of_work() as work:
        _answer(
            work,
            Answer(chat_id=person.telegram_id, callback_query_id=callback_query_id),
            text(person.language, key),
        )


async def point_to_private(chat_id: int, language: str, link: str) -> None:
    """One short answer in a group: the bot talks in private, here is the link. It names
    nobody and stores nothing but the message itself."""
    async with unit_of_work() as work:
        work.message(
            chat_id,
            text(language, "group_pointer", link=html.escape(link)),
            purpose="reply",
            payload={"link_preview_options": {"is_disabled": True}},
        )


STATUSES = (PENDING, APPROVED, REJECTED, CANCELLED, EXPIRED)


async def audit(status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Every request (or those in `status`), newest first, with its decision."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    query = ClientRequest.select().order_by(ClientRequest.id, ascending=False)
    if status is not None:
        query = query.where(ClientRequest.status == status)
    if limit is not None:
        query = query.limit(limit)
    return [_request(row) for row in await query]


async def remind_due(
    now: datetime, period: timedelta, admin_language: str, admin_chat_id: int | None = None
) -> list[int]:
    """Re-announce requests pending longer than `period`, at most once per period.

    The UPDATE … RETURNING takes each due request exactly once, however many workers run
    this at the same moment.
    """
    cutoff = now - period
    async with unit_of_work() as work:
        rows = await sql(
            "UPDATE client_request SET reminded_at = {} WHERE status = {} AND submitted_at <= {} "
            "AND (reminded_at IS NULL OR reminded_at <= {}) RETURNING *",
            now,
            PENDING,
            cutoff,
            cutoff,
        )
        if not rows:
            return []
        admin_ids = await notified_chats(admin_chat_id)
        for row in sorted(rows, key=lambda r: r["id"]):
            request = _request(row)
            for admin_id in admin_ids:
                _notify(work, admin_id, request, admin_language, reminder=True, purpose="remind")
        return sorted(int(r["id"]) for r in rows)
