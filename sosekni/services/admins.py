"""Administrators: ADMIN_TELEGRAM_ID is the truth for its own; the operator keeps theirs.

Plain reads and writes of one small table: written with Piccolo's query builder (the claim,
lease and decision statements elsewhere stay raw SQL for `SKIP LOCKED`, partial-index
predicates and their `RETURNING` shapes).

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

from sosekni.db import as_utc, transaction, utcnow
from sosekni.tables import Administrator as A

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
    return await A.exists().where((A.telegram_id == telegram_id) & A.active.eq(True))


async def active_ids() -> list[int]:
    rows = await A.select(A.telegram_id).where(A.active.eq(True)).order_by(A.id)
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
            rows = (
                await A.insert(_new(telegram_id, "", FROM_CONFIG, now))
                .on_conflict(target=A.telegram_id, action="DO NOTHING")
                .returning(A.id)
            )
            if rows:
                added.append(telegram_id)
            elif await _set_active(telegram_id, True, now):
                restored.append(telegram_id)
        holders = (
            await A.select(A.telegram_id)
            .where((A.source == FROM_CONFIG) & A.active.eq(True))
            .order_by(A.id)
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
    rows = (
        await A.update({A.active: active, A.updated_at: now})
        .where((A.telegram_id == telegram_id) & (A.source == FROM_CONFIG) & A.active.eq(not active))
        .returning(A.id)
    )
    return bool(rows)


async def add(telegram_id: int, name: str | None = None) -> AdminRecord:
    """Add an administrator, or re-activate (and rename, if a name is given) an existing one.

    Either way the administrator becomes the operator's (`cli`): removing the id from
    ADMIN_TELEGRAM_ID later does not revoke it; `admin deactivate` does.
    """
    now = utcnow()
    async with transaction():
        if await A.exists().where(A.telegram_id == telegram_id):
            changes = {A.active: True, A.source: FROM_CLI, A.updated_at: now}
            if name is not None:
                changes[A.name] = name
            await A.update(changes).where(A.telegram_id == telegram_id)
        else:
            await A.insert(_new(telegram_id, name or "", FROM_CLI, now))
    return next(a for a in await list_all() if a.telegram_id == telegram_id)


async def deactivate(telegram_id: int) -> bool:
    """Deactivate; False when there is no such administrator.

    The administrator becomes the operator's (`cli`), so a start with the id still in
    ADMIN_TELEGRAM_ID does not bring them back: only `admin add` does.
    """
    rows = (
        await A.update({A.active: False, A.source: FROM_CLI, A.updated_at: utcnow()})
        .where(A.telegram_id == telegram_id)
        .returning(A.id)
    )
    return bool(rows)


def _new(telegram_id: int, name: str, source: str, now: datetime) -> A:
    return A(
        telegram_id=telegram_id, name=name, active=True, source=source, created_at=now,
        updated_at=now,
    )  # fmt: skip


async def list_all() -> list[AdminRecord]:
    rows = await A.select(A.telegram_id, A.name, A.active, A.source, A.created_at).order_by(A.id)
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
