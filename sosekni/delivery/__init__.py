"""Background work of a worker: the inbox, the outbox sender, reminders."""

from __future__ import annotations

import asyncio
import logging

from sosekni.db import is_unavailable
from sosekni.delivery.policy import Backoff
from sosekni.services.work import Wakeup


class BackgroundLoop:
    """Runs `run_once` until stopped: again at once after work, else after a wakeup or a poll.

    Errors never end the loop: a database outage is logged once per streak and retried
    with backoff; the work that failed is still in the database and is picked up later.
    """

    name = "loop"
    poll_interval_s = 0.5

    def __init__(self, wakeup: Wakeup, ready: asyncio.Event | None = None) -> None:
        self.wakeup = wakeup
        self.ready = ready
        self.stopping = asyncio.Event()
        self.log = logging.getLogger(f"sosekni.{self.name}")

    async def run_once(self) -> int:
        raise NotImplementedError

    def idle_timeout(self) -> float:
        """How long to wait for a wakeup when the last round found nothing to do."""
        return self.poll_interval_s

    async def finish(self) -> None:
        """Called once when the loop ends."""

    async def run(self) -> None:
        if self.ready is not None and not await self._until_ready():
            return
        backoff = Backoff(0.5, 10)
        while not self.stopping.is_set():
            try:
                worked = await self.run_once()
            except Exception as exc:
                delay = backoff.next()
                if not is_unavailable(exc):
                    self.log.exception("%s: unexpected error; retrying", self.name)
                elif backoff.failures == 1:
                    self.log.warning("%s: database unavailable (%s); retrying", self.name, exc)
                await asyncio.sleep(delay)
                continue
            if backoff.failures:
                self.log.info("%s: database reachable again", self.name)
            backoff.reset()
            if not worked:
                await self.wakeup.wait(self.idle_timeout())
        await self.finish()

    async def _until_ready(self) -> bool:
        """Wait for start-up to finish; False when stopped before it did."""
        assert self.ready is not None
        ready = asyncio.ensure_future(self.ready.wait())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stopping.cancel()
        return not self.stopping.is_set()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
