"""Piccolo tables: client requests, administrators, the inbox, the outbox, notifications."""

from __future__ import annotations

from piccolo.columns import BigInt, Boolean, Integer, Text, Timestamptz, Varchar
from piccolo.table import Table

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
CANCELLED, EXPIRED = "cancelled", "expired"  # withdrawn by the client; nobody decided in time
DECIDED_STATES = (APPROVED, REJECTED)  # the administrators' decisions
MAX_REQUEST_TEXT = 4096


class Administrator(Table, tablename="administrator"):
    """Who may decide. Seeded from ADMIN_TELEGRAM_ID; deactivated, never deleted.

    `source` says who governs the row: `config` (ADMIN_TELEGRAM_ID: revoked at start once
    no longer listed) or `cli` (the operator's `admin add` / `admin deactivate`).
    """

    telegram_id = BigInt(unique=True, index=True)
    name = Varchar(length=255, default="")
    active = Boolean(default=True)
    source = Varchar(length=16, default="config")
    created_at = Timestamptz()
    updated_at = Timestamptz()


class ClientRequest(Table, tablename="client_request"):
    """One `/request` from a client and, once decided, who decided what and when.

    `status`: pending → approved | rejected | cancelled | expired. `responded_at` is when it
    left pending, whoever ended it; `admin_*` and `response` only for a decision.
    """

    client_telegram_id = BigInt(index=True)
    client_username = Varchar(length=255, null=True, default=None)
    client_first_name = Varchar(length=255, default="")
    client_language = Varchar(length=16, default="")
    text = Varchar(length=MAX_REQUEST_TEXT)
    status = Varchar(length=16, default=PENDING, index=True)
    submitted_at = Timestamptz()
    admin_telegram_id = BigInt(null=True, default=None)
    admin_name = Varchar(length=255, null=True, default=None)
    response = Varchar(length=16, null=True, default=None)
    reason = Text(null=True, default=None)
    responded_at = Timestamptz(null=True, default=None)
    reminded_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # The community chat's one-time link of an approved request (COMMUNITY_CHAT_ID).
    invite_link = Text(null=True, default=None)
    invite_expires_at = Timestamptz(null=True, default=None)
    invite_created_at = Timestamptz(null=True, default=None)
    # A Telegram join request to that chat behind the request ("Request to join").
    join_chat_id = BigInt(null=True, default=None)
    join_notice = Varchar(length=16, null=True, default=None)
    unreachable_at = Timestamptz(null=True, default=None)  # its client blocked the bot


class InboxUpdate(Table, tablename="inbox_update"):
    """A Telegram update stored before the webhook answers 200; processed once."""

    update_id = BigInt(unique=True, index=True)
    kind = Varchar(length=32, default="")
    chat_id = BigInt(null=True, default=None)
    payload = Text()
    status = Varchar(length=16, default="new", index=True)
    attempts = Integer(default=0)
    claim_token = Varchar(length=36, null=True, default=None)
    locked_until = Timestamptz(null=True, default=None)
    next_attempt_at = Timestamptz()
    error = Text(null=True, default=None)
    received_at = Timestamptz()
    processed_at = Timestamptz(null=True, default=None)


class OutboxMessage(Table, tablename="outbox_message"):
    """A Bot API call written with the state change it announces; sent with retries."""

    method = Varchar(length=64)
    chat_id = BigInt(null=True, default=None, index=True)
    payload = Text()
    purpose = Varchar(length=32, default="")
    request_id = BigInt(null=True, default=None, index=True)
    admin_telegram_id = BigInt(null=True, default=None)
    status = Varchar(length=16, default="pending", index=True)
    attempts = Integer(default=0)
    claim_token = Varchar(length=36, null=True, default=None)
    locked_until = Timestamptz(null=True, default=None)
    next_attempt_at = Timestamptz()
    last_error = Text(null=True, default=None)
    created_at = Timestamptz()
    sent_at = Timestamptz(null=True, default=None)


class AdminNotification(Table, tablename="admin_notification"):
    """Where an administrator's copy of a request notification lives, to edit it later."""

    request_id = BigInt(index=True)
    admin_telegram_id = BigInt()
    chat_id = BigInt()
    message_id = BigInt()
    created_at = Timestamptz()


class BlockedChat(Table, tablename="blocked_chat"):
    """A client's chat that answered 403 (they blocked the bot): messages to it are held
    (outbox status `held`) until the client writes again."""

    chat_id = BigInt(primary_key=True)
    blocked_at = Timestamptz()


ALL_TABLES: tuple[type[Table], ...] = (
    Administrator,
    ClientRequest,
    InboxUpdate,
    OutboxMessage,
    AdminNotification,
    BlockedChat,
)
