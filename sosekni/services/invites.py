"""One-time invite links to the community chat (`COMMUNITY_CHAT_ID`).

The welcome must carry a link that only Telegram's answer to `createChatInviteLink` holds,
so the call and the message are two outbox rows written at two moments: the approval (or
`/status`) queues the call; the sender, in the one transaction that marks the call sent,
stores the link with the request and queues the message that shows it (`created`). A
refusal, or a call given up, queues the message without a link in the transaction that
marks it failed (`refused`). Nothing is lost on a crash: until that transaction commits the
call is still open and is made again.

A call made again after an unknown outcome (the process died in flight, a timeout) may have
created a link already; that link was never shown to anyone, works for one person at most
and expires, but it is not silently forgotten: `created` logs a WARNING naming the request,
so the operator can revoke "request #N" links in the chat's settings.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sosekni.config import Settings
from sosekni.db import row_times, sql, utcnow
from sosekni.render import NOT_TOLD, when
from sosekni.services import admins, cards
from sosekni.services.work import UnitOfWork
from sosekni.texts import text

log = logging.getLogger(__name__)

CREATE, REVOKE = "createChatInviteLink", "revokeChatInviteLink"
INVITE = "invite"  # a link for an approval: then the welcome
INVITE_STATUS = "invite_status"  # a fresh link asked for by /status: then the status line
REVOKED = "revoke"
REFUSED = "community_refused"  # the administrators' notice, once per outage
PURPOSES = frozenset({INVITE, INVITE_STATUS})
MEMBER = "getChatMember"
CHECK = "invite_check"  # /status of an expired link: did the client join through it?
_MEMBERS = frozenset({"creator", "administrator", "member"})
DECISION = "decision"  # the client's welcome or rejection
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Community:
    """The community chat and how long its links live."""

    chat_id: int
    ttl_hours: float

    @classmethod
    def of(cls, settings: Settings) -> Community | None:
        if settings.community_chat_id is None:
            return None
        return cls(settings.community_chat_id, settings.invite_ttl_hours)


def queue_create(
    work: UnitOfWork, community: Community, request_id: int, purpose: str, now: datetime
) -> None:
    """Queue `createChatInviteLink` for request `request_id`; `purpose` says what follows."""
    expires = now + timedelta(hours=community.ttl_hours)
    work.send(
        CREATE,
        {
            "name": f"request #{request_id}",
            "member_limit": 1,
            "expire_date": int(expires.timestamp()),
        },
        chat_id=community.chat_id,
        purpose=purpose,
        request_id=request_id,
    )


async def in_flight(request_id: int) -> str | None:
    """The link creation (`CREATE`) or membership check (`MEMBER`) queued or in flight for
    this request, if any (a second /status must not add another)."""
    rows = await sql(
        "SELECT method FROM outbox_message WHERE request_id = {} AND method IN ({}, {}) "
        "AND status IN ('pending', 'sending') LIMIT 1",
        request_id,
        CREATE,
        MEMBER,
    )
    return str(rows[0]["method"]) if rows else None


def queue_check(work: UnitOfWork, community: Community, request: dict[str, Any]) -> None:
    """`/status` of an expired link: ask Telegram whether the client is in the chat already
    (a one-time link they used must not be replaced); `checked` acts on the answer."""
    work.send(
        MEMBER,
        {"user_id": int(request["client_telegram_id"])},
        chat_id=community.chat_id,
        purpose=CHECK,
        request_id=int(request["id"]),
    )


def is_member(result: Any) -> bool:
    """Telegram's ChatMember says the user is in the chat."""
    if not isinstance(result, dict):
        return False
    status = result.get("status")
    return status in _MEMBERS or (status == "restricted" and result.get("is_member") is True)


async def checked(row: dict[str, Any], result: Any, language: str, ttl_hours: float) -> UnitOfWork:
    """Inside the sender's transaction that marks a membership check sent (`result`, its
    ChatMember) or failed (None: today's renewal, as if nobody had asked): a member is told
    so and gets no new link; anyone else gets the old link revoked and a fresh one."""
    request_id = int(row["request_id"])
    work = UnitOfWork()
    request = await _request(request_id)
    if request is not None:
        if is_member(result):
            lang = request["client_language"] or language
            work.message(
                int(request["client_telegram_id"]),
                text(lang, "status_member"),
                purpose="reply",
                request_id=request_id,
            )
        else:
            await renew(work, Community(int(row["chat_id"]), ttl_hours), request)
    await work.insert()
    return work


async def renew(work: UnitOfWork, community: Community, request: dict[str, Any]) -> None:
    """`/status` of an approved client whose link expired (or never came): revoke the old
    one, if any, and create a fresh one; the status line with it follows its creation."""
    if request.get("invite_link"):
        work.send(
            REVOKE,
            {"invite_link": request["invite_link"]},
            chat_id=community.chat_id,
            purpose=REVOKED,
            request_id=request["id"],
        )
    queue_create(work, community, int(request["id"]), INVITE_STATUS, utcnow())


def valid_link(request: dict[str, Any], now: datetime) -> str | None:
    """The request's link while it has not expired."""
    expires = request.get("invite_expires_at")
    if request.get("invite_link") and expires is not None and expires > now:
        return str(request["invite_link"])
    return None


def link_line(language: str, request: dict[str, Any]) -> str:
    return text(
        language,
        "status_link",
        link=html.escape(str(request["invite_link"])),
        expires=when(request["invite_expires_at"]),
    )


async def _request(request_id: int) -> dict[str, Any] | None:
    rows = await sql("SELECT * FROM client_request WHERE id = {}", request_id)
    if not rows:
        return None
    return row_times(rows[0], "responded_at", "invite_expires_at", "invite_created_at")


async def created(row: dict[str, Any], result: Any, language: str) -> UnitOfWork:
    """Inside the sender's transaction that marks `row` sent: store the link with its
    request and queue the message that shows it (the work to announce after the commit)."""
    request_id = int(row["request_id"])
    work = UnitOfWork()
    link = result.get("invite_link") if isinstance(result, dict) else None
    if not isinstance(link, str):
        return await refused(row, "Telegram's answer held no invite_link", language)
    expire_date = result.get("expire_date")
    expires = datetime.fromtimestamp(expire_date, UTC) if isinstance(expire_date, int) else None
    now = utcnow()
    if int(row["attempts"]) > 1:
        log.warning(
            "request #%s: invite link created at attempt %s; an earlier attempt may have "
            "created one that was never recorded: revoke other 'request #%s' links of the "
            "community chat",
            request_id,
            row["attempts"],
            request_id,
        )
    await sql(
        "UPDATE client_request SET invite_link = {}, invite_expires_at = {}, "
        "invite_created_at = {}, updated_at = {} WHERE id = {}",
        link,
        expires,
        now,
        now,
        request_id,
    )
    request = await _request(request_id)
    if request is not None:
        lang = request["client_language"] or language
        if row["purpose"] == INVITE:
            message = text(
                lang,
                "welcome_link",
                id=request_id,
                link=html.escape(link),
                expires=when(request["invite_expires_at"]),
            )
            purpose = "decision"
        else:
            message = link_line(lang, request)
            purpose = "reply"
        work.message(
            int(request["client_telegram_id"]), message, purpose=purpose, request_id=request_id
        )
    await work.insert()
    return work


async def refused(row: dict[str, Any], reason: str, language: str) -> UnitOfWork:
    """Inside the sender's transaction that marks `row` failed: the client still gets the
    welcome (without a link), and the administrators are told once what is missing."""
    request_id = int(row["request_id"])
    work = UnitOfWork()
    request = await _request(request_id)
    if request is not None:
        lang = request["client_language"] or language
        if row["purpose"] == INVITE:
            message, purpose = text(lang, "welcome", id=request_id), "decision"
        else:
            message, purpose = text(lang, "status_link_failed"), "reply"
        work.message(
            int(request["client_telegram_id"]), message, purpose=purpose, request_id=request_id
        )
    await _tell_admins_once(work, int(row["chat_id"]), reason, language)
    await work.insert()
    return work


async def not_told(row: dict[str, Any], reason: str, language: str) -> UnitOfWork | None:
    """Inside the sender's transaction that marks a decision message failed: when it was
    for someone who asked to join and Telegram refused (403: the 5 minutes it allows after
    a join request are over), every administrator's copy says so. Expected, not an error."""
    if row["request_id"] is None or not reason.startswith("Forbidden"):
        return None
    rows = await sql(
        "UPDATE client_request SET join_notice = {} WHERE id = {} AND join_chat_id IS NOT NULL "
        "AND join_notice IS NULL RETURNING *",
        NOT_TOLD,
        row["request_id"],
    )
    if not rows:
        return None
    log.info("request #%s: the person who asked to join could not be told", row["request_id"])
    work = UnitOfWork()
    request = row_times(rows[0], "submitted_at", "responded_at")
    await cards.refresh_copies(work, request, language)
    await work.insert()
    return work


async def _tell_admins_once(work: UnitOfWork, chat_id: int, reason: str, language: str) -> None:
    """Once per outage: no notice since the last link that was created. (The sender makes
    one call per chat at a time, so two refusals in the same chat never race here. The
    notice's outbox row is the memory: after OUTBOX_RETENTION_DAYS an outage that lasts is
    said again.)"""
    last = await sql("SELECT MAX(invite_created_at) AS at FROM client_request")
    since = row_times(last[0], "at")["at"] if last and last[0]["at"] is not None else _EPOCH
    told = await sql(
        "SELECT 1 FROM outbox_message WHERE purpose = {} AND created_at > {} LIMIT 1",
        REFUSED,
        since,
    )
    if told:
        return
    notice = text(language, "community_refused", chat=chat_id, reason=html.escape(reason))
    for admin_id in await admins.active_ids():
        work.message(admin_id, notice, purpose=REFUSED)
