"""Administrators: ADMIN_TELEGRAM_ID is the truth for its own; the operator keeps theirs.

Each administrator records where it came from (`source`). A `config` one exists because
ADMIN_TELEGRAM_ID lists it, so it is deactivated at start once the list no longer does, and
re-activated if the list names it again. A `cli` one is the operator's: `admin add` makes an
administrator `cli` (kept whatever the list says) and so does `admin deactivate` (it stays
deactivated even while listed), until the operator changes it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sosekni.db import as_utc, sql, transaction, utcnow

log = logging.getLogger(__name__)

FROM_CONFIG = "config"
FROM_CLI = "cli"


@dataclass(frozen=True)
class AdminRecord:
    telegram_id: int
    name: str
    active: bool
    created_at: datetime
    source: str = FROM_CONFIG


async def is_active(telegram_id: int) -> bool:
    rows = await sql(
        "SELECT id FROM administrator WHERE telegram_id = {} AND active = {}", telegram_id, True
    )
    return bool(rows)


async def active_ids() -> list[int]:
    rows = await sql("SELECT telegram_id FROM administrator WHERE active = {} ORDER BY id", True)
    return [int(r["telegram_id"]) for r in rows]


async def seed(telegram_ids: tuple[int, ...]) -> list[int]:
    """Make the `config` administrators match ADMIN_TELEGRAM_ID; return the ids added.

    Called at every start (each server worker, `poll`). Listed ids that are missing are
    added; `config` administrators no longer listed are deactivated (a WARNING names each),
    and listed ones a previous start deactivated come back. `cli` administrators are left
    alone: one the operator deactivated stays deactivated even if listed. Every change is a
    conditional UPDATE, so workers starting together change (and log) each row once.
    """
    listed = set(telegram_ids)
    added: list[int] = []
    restored: list[int] = []
    revoked: list[int] = []
    now = utcnow()
    async with transaction():
        for telegram_id in telegram_ids:
            rows = await sql(
                "INSERT INTO administrator "
                "(telegram_id, name, active, source, created_at, updated_at) "
                "VALUES ({}, {}, {}, {}, {}, {}) ON CONFLICT (telegram_id) DO NOTHING RETURNING id",
                telegram_id,
                "",
                True,
                FROM_CONFIG,
                now,
                now,
            )
            if rows:
                added.append(telegram_id)
            elif await _set_active(telegram_id, True, now):
                restored.append(telegram_id)
        holders = await sql(
            "SELECT telegram_id FROM administrator WHERE source = {} AND active = {} ORDER BY id",
            FROM_CONFIG,
            True,
        )
        for row in holders:
            telegram_id = int(row["telegram_id"])
            if telegram_id not in listed and await _set_active(telegram_id, False, now):
                revoked.append(telegram_id)
    for telegram_id in revoked:
        log.warning(
            "administrator %s is no longer in ADMIN_TELEGRAM_ID: deactivated "
            "(`sosekni-ops admin add %s` keeps them whatever the list says)",
            telegram_id,
            telegram_id,
        )
    for telegram_id in restored:
        log.info("administrator %s is in ADMIN_TELEGRAM_ID again: re-activated", telegram_id)
    for telegram_id in telegram_ids:
        if telegram_id not in added and not await is_active(telegram_id):
            log.warning(
                "administrator %s is in ADMIN_TELEGRAM_ID but deactivated; "
                "`sosekni-ops admin add %s` re-activates them",
                telegram_id,
                telegram_id,
            )
    return added


async def _set_active(telegram_id: int, active: bool, now: datetime) -> bool:
    """Flip a `config` administrator's state; False when it already was (or is `cli`)."""
    rows = await sql(
        "UPDATE administrator SET active = {}, updated_at = {} "
        "WHERE telegram_id = {} AND source = {} AND active = {} RETURNING id",
        active,
        now,
        telegram_id,
        FROM_CONFIG,
        not active,
    )
    return bool(rows)


async def add(telegram_id: int, name: str | None = None) -> AdminRecord:
    """Add an administrator, or re-activate (and rename, if a name is given) an existing one.

    Either way the administrator becomes the operator's (`cli`): removing the id from
    ADMIN_TELEGRAM_ID later does not revoke it; `admin deactivate` does.
    """
    now = utcnow()
    async with transaction():
        existing = await sql("SELECT id FROM administrator WHERE telegram_id = {}", telegram_id)
        if existing:
            if name is not None:
                await sql(
                    "UPDATE administrator SET active = {}, source = {}, name = {}, "
                    "updated_at = {} WHERE telegram_id = {}",
                    True,
                    FROM_CLI,
                    name,
                    now,
                    telegram_id,
                )
            else:
                await sql(
                    "UPDATE administrator SET active = {}, source = {}, updated_at = {} "
                    "WHERE telegram_id = {}",
                    True,
                    FROM_CLI,
                    now,
                    telegram_id,
                )
        else:
            await sql(
                "INSERT INTO administrator "
                "(telegram_id, name, active, source, created_at, updated_at) "
                "VALUES ({}, {}, {}, {}, {}, {})",
                telegram_id,
                name or "",
                True,
                FROM_CLI,
                now,
                now,
            )
    return next(a for a in await list_all() if a.telegram_id == telegram_id)


async def deactivate(telegram_id: int) -> bool:
    """Deactivate; False when there is no such administrator.

    The administrator becomes the operator's (`cli`), so a start with the id still in
    ADMIN_TELEGRAM_ID does not bring them back: only `admin add` does.
    """
    rows = await sql(
        "UPDATE administrator SET active = {}, source = {}, updated_at = {} "
        "WHERE telegram_id = {} RETURNING id",
        False,
        FROM_CLI,
        utcnow(),
        telegram_id,
    )
    return bool(rows)


async def list_all() -> list[AdminRecord]:
    rows = await sql(
        "SELECT telegram_id, name, active, source, created_at FROM administrator ORDER BY id"
    )
    return [
        AdminRecord(
            telegram_id=int(r["telegram_id"]),
            name=r["name"] or "",
            active=bool(r["active"]),
            created_at=as_utc(r["created_at"]),
            source=r["source"],
        )
        for r in rows
    ]
