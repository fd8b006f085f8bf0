"""Re-announce requests that waited longer than PENDING_REMINDER_HOURS, and end those that
waited longer than PENDING_EXPIRY_DAYS."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sosekni.db import utcnow
from sosekni.delivery import BackgroundLoop
from sosekni.services import endings, requests
from sosekni.services.work import Wakeup


class ReminderLoop(BackgroundLoop):
    """Checks for due expiries and reminders every minute (sooner for short periods); safe in
    every worker. Expiry goes first, so a request that expires is not re-announced."""

    name = "reminders"

    def __init__(
        self,
        period: timedelta,
        admin_language: str,
        ready: asyncio.Event | None = None,
        expiry: timedelta | None = None,
        admin_chat_id: int | None = None,
    ) -> None:
        super().__init__(Wakeup(), ready)
        self.period = period
        self.expiry = expiry if expiry else None  # None or zero: requests never expire
        self.admin_language = admin_language
        self.admin_chat_id = admin_chat_id
        shortest = min(period, self.expiry) if self.expiry else period
        self.poll_interval_s = max(0.2, min(60.0, shortest.total_seconds() / 4))

    async def run_once(self) -> int:
        now = utcnow()
        if self.expiry:
            expired = await endings.expire_due(now, self.expiry, self.admin_language)
            if expired:
                self.log.info("expired %d pending request(s): %s", len(expired), expired)
        due = await requests.remind_due(now, self.period, self.admin_language, self.admin_chat_id)
        if due:
            self.log.info("re-announced %d pending request(s): %s", len(due), due)
        return 0
