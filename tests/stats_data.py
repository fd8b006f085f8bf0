"""Requests with known times and decisions, for the numbers of `/stats` and `sosekni-ops
stats` (on the bound engine)."""

from __future__ import annotations

from datetime import datetime, timedelta

OLGA, IVAN = 9500, 9501
H, D = timedelta(hours=1), timedelta(days=1)


async def seed(now: datetime) -> None:
    """7 days: 5 requests (pending 1, approved 2, rejected 1, withdrawn 1), decisions after
    10 min, 1 h, 2 h; 30 days: 7 requests, and a decision after a day; one older one."""
    from sosekni.db import sql

    rows = [
        # status, submitted, responded, admin, admin name
        ("approved", now - 2 * D, now - 2 * D + H, OLGA, "Olga"),
        ("rejected", now - 3 * D, now - 3 * D + 2 * H, OLGA, "Olga"),
        ("approved", now - D, now - D + H / 6, IVAN, "Ivan <i>"),
        ("pending", now - H, None, None, None),
        ("cancelled", now - 5 * D, now - 5 * D + H, None, None),
        ("expired", now - 20 * D, now - 6 * D, None, None),
        ("approved", now - 15 * D, now - 14 * D, IVAN, "Ivan <i>"),
        ("rejected", now - 40 * D, now - 40 * D + H / 2, OLGA, "Olga"),
    ]
    for n, (status, submitted, responded, admin, name) in enumerate(rows):
        await sql(
            "INSERT INTO client_request (client_telegram_id, client_first_name, "
            "client_language, text, status, submitted_at, admin_telegram_id, admin_name, "
            "response, responded_at, created_at, updated_at) "
            "VALUES ({}, 'Anna', 'en', 'Plot', {}, {}, {}, {}, {}, {}, {}, {})",
            8000 + n,
            status,
            submitted,
            admin,
            name,
            status if admin else None,
            responded,
            submitted,
            responded or submitted,
        )
