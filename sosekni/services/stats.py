"""Numbers for administrators: requests by status, time to decision, decisions per
administrator, over the last N days (`/stats`, `sosekni-ops stats`).

Read-only. The times are computed here rather than in SQL: SQLite has no percentiles and
its timestamps are text, and a community's requests over 30 days are few.
"""

from __future__ import annotations

import html
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sosekni.db import as_utc, sql, utcnow
from sosekni.render import clip
from sosekni.services import admins
from sosekni.services.requests import Person
from sosekni.services.work import unit_of_work
from sosekni.tables import APPROVED, CANCELLED, DECIDED_STATES, EXPIRED, PENDING, REJECTED
from sosekni.texts import text

STATES = (PENDING, APPROVED, REJECTED, CANCELLED, EXPIRED)
DEFAULT_PERIODS = (7, 30)
ADMINS_IN_MESSAGE = 10


@dataclass(frozen=True)
class AdminDecisions:
    telegram_id: int
    name: str
    approved: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class Period:
    """One window: requests submitted in it by their status now; decisions made in it."""

    days: int
    since: datetime
    by_status: dict[str, int]
    decisions: int
    median_seconds: float | None
    p90_seconds: float | None
    by_admin: list[AdminDecisions] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["since"] = self.since.isoformat()
        found["total"] = self.total
        return found


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile: the smallest value with `share` of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)), 1) - 1]


async def period(now: datetime, days: int) -> Period:
    since = now - timedelta(days=days)
    counted = await sql(
        "SELECT status, count(*) AS n FROM client_request WHERE submitted_at >= {} "
        "AND submitted_at <= {} GROUP BY status",
        since,
        now,
    )
    by_status = dict.fromkeys(STATES, 0)
    for row in counted:
        by_status[row["status"]] = int(row["n"])
    decided = await sql(
        "SELECT id, status, admin_telegram_id, admin_name, submitted_at, responded_at "
        "FROM client_request WHERE status IN ({}, {}) AND responded_at >= {} "
        "AND responded_at <= {} ORDER BY id",
        *DECIDED_STATES,
        since,
        now,
    )
    waits: list[float] = []
    admins: dict[int, dict[str, Any]] = {}
    for row in decided:
        waits.append((as_utc(row["responded_at"]) - as_utc(row["submitted_at"])).total_seconds())
        admin_id = int(row["admin_telegram_id"] or 0)
        seen = admins.setdefault(admin_id, {"name": "", APPROVED: 0, REJECTED: 0})
        seen["name"] = row["admin_name"] or seen["name"]  # the newest name it decided under
        seen[row["status"]] += 1
    by_admin = sorted(
        (
            AdminDecisions(admin_id, seen["name"], seen[APPROVED], seen[REJECTED])
            for admin_id, seen in admins.items()
        ),
        key=lambda a: (-(a.approved + a.rejected), a.telegram_id),
    )
    return Period(
        days=days,
        since=since,
        by_status=by_status,
        decisions=len(waits),
        median_seconds=statistics.median(waits) if waits else None,
        p90_seconds=percentile(waits, 0.9),
        by_admin=by_admin,
    )


async def periods(now: datetime, days: tuple[int, ...] = DEFAULT_PERIODS) -> list[Period]:
    return [await period(now, d) for d in days]


def duration(seconds: float | None) -> str:
    """A wait for people: 45 s, 12 min, 3 h 05 min, 2 d 4 h; — for none."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def message(found: list[Period], language: str) -> str:
    """The short text `/stats` answers with (HTML)."""
    parts = []
    for p in found:
        block = text(
            language,
            "stats_period",
            days=p.days,
            total=p.total,
            median=duration(p.median_seconds),
            p90=duration(p.p90_seconds),
            **p.by_status,
        )
        lines = [
            text(
                language,
                "stats_admin",
                admin=html.escape(clip(a.name, 64)) or a.telegram_id,
                approved=a.approved,
                rejected=a.rejected,
            )
            for a in p.by_admin[:ADMINS_IN_MESSAGE]
        ]
        block += "\n" + ("\n".join(lines) if lines else text(language, "stats_no_decisions"))
        parts.append(block)
    return "\n\n".join(parts)


async def answer(admin: Person, chat_id: int) -> bool:
    """`/stats`: the numbers of the last 7 and 30 days, for administrators only."""
    async with unit_of_work() as work:
        if not await admins.is_active(admin.telegram_id):
            work.message(chat_id, text(admin.language, "not_authorized"), purpose="reply")
            return False
        found = await periods(utcnow())
        work.message(chat_id, message(found, admin.language), purpose="reply")
        return True
