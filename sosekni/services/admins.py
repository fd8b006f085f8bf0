"""Administrators: seeded from ADMIN_TELEGRAM_ID, added and deactivated by the operator."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sosekni.db import as_utc, sql, transaction, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdminRecord:
    telegram_id: int
    name: str
    active: bool
    created_at: datetime


async def is_active(telegram_id: int) -> bool:
    rows = await sql(
        "SELECT id FROM administrator WHERE telegram_id = {} AND active = {}", telegram_id, True
    )
    return bool(rows)


async def active_ids() -> list[int]:
    rows = await sql("SELECT telegram_id FROM administrator WHERE active = {} ORDER BY id", True)
    return [int(r["telegram_id"]) for r in rows]


async def seed(telegram_ids: tuple[int, ...]) -> list[int]:
    """Insert the configured administrators that are missing; return the ids added.

    An administrator the operator deactivated stays deactivated: the list seeds, it
    does not override `admin deactivate`.
    """
    added = []
    now = utcnow()
    async with transaction():
        for telegram_id in telegram_ids:
            rows = await sql(
                "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
                "VALUES ({}, {}, {}, {}, {}) ON CONFLICT (telegram_id) DO NOTHING RETURNING id",
                telegram_id,
                "",
                True,
                now,
                now,
            )
            if rows:
                added.append(telegram_id)
    for telegram_id in telegram_ids:
        if telegram_id not in added and not await is_active(telegram_id):
            log.warning(
                "administrator %s is in ADMIN_TELEGRAM_ID but deactivated; "
                "`sosekni-ops admin add %s` re-activates them",
                telegram_id,
                telegram_id,
            )
    return added


async def add(telegram_id: int, name: str | None = None) -> AdminRecord:
    """Add an administrator, or re-activate (and rename, if a name is given) an existing one."""
    now = utcnow()
    async with transaction():
        existing = await sql("SELECT id FROM administrator WHERE telegram_id = {}", telegram_id)
        if existing:
            if name is not None:
                await sql(
                    "UPDATE administrator SET active = {}, name = {}, updated_at = {} "
                    "WHERE telegram_id = {}",
                    True,
                    name,
                    now,
                    telegram_id,
                )
            else:
                await sql(
                    "UPDATE administrator SET active = {}, updated_at = {} WHERE telegram_id = {}",
                    True,
                    now,
                    telegram_id,
                )
        else:
            await sql(
                "INSERT INTO administrator (telegram_id, name, active, created_at, updated_at) "
                "VALUES ({}, {}, {}, {}, {})",
                telegram_id,
                name or "",
                True,
                now,
                now,
            )
    return next(a for a in await list_all() if a.telegram_id == telegram_id)


async def deactivate(telegram_id: int) -> bool:
    """Deactivate; False when there is no such administrator."""
    rows = await sql(
        "UPDATE administrator SET active = {}, updated_at = {} WHERE telegram_id = {} RETURNING id",
        False,
        utcnow(),
        telegram_id,
    )
    return bool(rows)


async def list_all() -> list[AdminRecord]:
    rows = await sql("SELECT telegram_id, name, active, created_at FROM administrator ORDER BY id")
    return [
        AdminRecord(
            telegram_id=int(r["telegram_id"]),
            name=r["name"] or "",
            active=bool(r["active"]),
            created_at=as_utc(r["created_at"]),
        )
        for r in rows
    ]
