"""Re-announce requests that waited longer than PENDING_REMINDER_HOURS."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sosekni.db import utcnow
from sosekni.delivery import BackgroundLoop
from sosekni.services import requests
from sosekni.services.work import Wakeup


class ReminderLoop(BackgroundLoop):
    """Checks for due reminders every minute (sooner for short periods); safe in every worker."""

    name = "reminders"

    def __init__(
        self,
        period: timedelta,
        admin_language: str,
        ready: asyncio.Event | None = None,
        admin_chat_id: int | None = None,
    ) -> None:
        super().__init__(Wakeup(), ready)
        self.period = period
        self.admin_language = admin_language
        self.admin_chat_id = admin_chat_id
        self.poll_interval_s = max(0.2, min(60.0, period.total_seconds() / 4))

    async def run_once(self) -> int:
        due = await requests.remind_due(
            utcnow(), self.period, self.admin_language, self.admin_chat_id
        )
        if due:
            self.log.info("re-announced %d pending request(s): %s", len(due), due)
        return 0
