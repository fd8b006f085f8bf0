"""What one server worker (or the polling process) runs: engine, PTB app, inbox, outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from telegram.error import BadRequest, NetworkError, RetryAfter
from telegram.ext import Application

from sosekni import migrations
from sosekni.bot import build_application
from sosekni.config import Settings
from sosekni.db import bind, close_pool, engine_for, is_unavailable, open_pool
from sosekni.delivery.inbox import InboxWorker
from sosekni.delivery.lease import lease_for
from sosekni.delivery.outbox import OutboxSender
from sosekni.delivery.policy import DEFAULT_POLICY, Backoff, DeliveryPolicy
from sosekni.delivery.reminders import ReminderLoop
from sosekni.delivery.retention import Retention, RetentionLoop
from sosekni.services import admins

log = logging.getLogger(__name__)


class NotMigrated(RuntimeError):
    """The database lacks migrations this release needs."""


def _transient(error: BaseException) -> bool:
    """Telegram could not be reached or was busy (network error, timeout, 5xx, 429): waiting
    cures it. A refusal (401 InvalidToken, 403, 400 BadRequest) does not."""
    if isinstance(error, RetryAfter):
        return True
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


def _reason(error: BaseException) -> str:
    """Why start-up failed, for /health: the error's type, never its text (PTB's
    InvalidToken quotes the token); our own migration check says what to do."""
    return str(error) if isinstance(error, NotMigrated) else type(error).__name__


class Runtime:
    """Starts the background work of a worker and stops it cleanly.

    The database or Telegram may be down at start: the webhook still answers (503 while the
    database is down) and a bootstrap task keeps trying until both are reachable.
    """

    def __init__(
        self, settings: Settings, pool_size: int = 10, policy: DeliveryPolicy = DEFAULT_POLICY
    ) -> None:
        self.settings = settings
        self.engine = engine_for(settings.database_url)
        bind(self.engine)
        self.pool_size = pool_size
        self.application: Application = build_application(settings)
        self.ready = asyncio.Event()
        self.policy = policy
        self.inbox = InboxWorker(self.application, policy, ready=self.ready)
        self.outbox = OutboxSender(
            self.application.bot.base_url,
            settings.default_language,
            lease_for(settings.database_url),
            policy,
            ready=self.ready,
            invite_ttl_hours=settings.invite_ttl_hours,
        )
        self.reminders = ReminderLoop(
            timedelta(hours=settings.pending_reminder_hours),
            settings.default_language,
            ready=self.ready,
            expiry=timedelta(days=settings.pending_expiry_days),
            admin_chat_id=settings.admin_chat_id,
        )
        self.retention = RetentionLoop(Retention.of(settings), ready=self.ready)
        self._tasks: list[asyncio.Task[None]] = []
        # Why the last start-up attempt failed, when waiting does not cure it (Telegram
        # refused the token, migrations missing); None once started. /health reports it.
        self.startup_error: str | None = None
        # Whether `application.initialize()` succeeded, so `stop` knows to shut it down.
        # Our own flag rather than PTB's private `Application._initialized`.
        self._bot_initialized = False
        self._database_step: asyncio.Future[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await open_pool(self.engine, self.pool_size)
        self._tasks = [
            asyncio.create_task(self._bootstrap(), name="bootstrap"),
            asyncio.create_task(self.inbox.run(), name="inbox"),
            asyncio.create_task(self.outbox.run(), name="outbox"),
            asyncio.create_task(self.reminders.run(), name="reminders"),
            asyncio.create_task(self.retention.run(), name="retention"),
        ]

    async def _bootstrap(self) -> None:
        backoff = Backoff(0.5, 30)
        while True:
            try:
                # Shielded: a stop during these queries waits for them (see `stop`) rather
                # than abandon a SQLite connection its thread is still opening.
                self._database_step = asyncio.ensure_future(self._prepare_database())
                await asyncio.shield(self._database_step)
                if not self._bot_initialized:
                    await self.application.initialize()
                    self._bot_initialized = True
                log.info("bot @%s ready", self.application.bot.username)
                self.startup_error = None
                self.ready.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    what = "database unavailable"
                elif _transient(exc):
                    what = "Telegram unreachable"
                else:
                    what = "start-up failed"
                    self.startup_error = f"start-up failed: {_reason(exc)}"
                delay = backoff.next()
                log.warning("%s (%s: %s); retrying in %.0fs", what, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _prepare_database(self) -> None:
        """The pool, the migrations check and the administrators from ADMIN_TELEGRAM_ID."""
        await open_pool(self.engine, self.pool_size)
        missing = [m.migration_id for m in await migrations.status() if not m.applied]
        if missing:
            raise NotMigrated(f"{len(missing)} migration(s) not applied: run `sosekni-ops migrate`")
        added = await admins.seed(self.settings.admin_telegram_ids)
        if added:
            log.info("seeded %d administrator(s) from ADMIN_TELEGRAM_ID", len(added))

    async def stop(self, timeout: float = 10) -> None:
        """Let the loops finish what they hold, then release the pool and the bot."""
        self.inbox.stop()
        self.outbox.stop()
        self.reminders.stop()
        self.retention.stop()
        tasks = self._tasks
        if tasks:
            tasks[0].cancel()
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        step = self._database_step
        if step is not None and not step.done():  # start-up's queries, shielded from cancel
            await asyncio.wait([step], timeout=timeout)
        if step is not None and step.done() and not step.cancelled():
            step.exception()  # already logged by the bootstrap, or stopped before it looked
        with contextlib.suppress(Exception):
            await self.outbox.close()
        if self._bot_initialized:
            self._bot_initialized = False
            with contextlib.suppress(Exception):
                await self.application.shutdown()
        await close_pool(self.engine)
