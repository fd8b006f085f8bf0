"""The peer baseline: python-telegram-bot's own webhook server, as PTB's docs build it.

`Application.run_webhook` (tornado; answers 200 once the update is queued in memory) with
the bot's own handler table (`sosekni.bot.add_handlers`) and its own services and Piccolo
tables on the same database, but with none of the delivery machinery: no inbox (an update
is processed straight from PTB's in-memory queue, so a redelivered update is processed
again and an update in the queue at a crash is lost), no outbox (each service's messages
are sent with the bot right after its transaction commits, with no rate limit and no retry).

How: the services queue their messages in a `UnitOfWork` and insert them into the outbox at
commit; here `sosekni.services.requests.unit_of_work` is replaced by `direct_unit_of_work`,
which runs the same transaction and, after the commit, sends each message with
`bot.do_api_request` (the call the outbox sender makes), recording an administrator's copy
in `admin_notification` as the sender does. `concurrent_updates(True)`, as PTB's docs advise
for a bot that waits on I/O; PTB's default (one update at a time) would be far slower.

Needs tornado (`python-telegram-bot[webhooks]`), a development dependency of the project.
Settings come from the same environment variables as `sosekni-ops serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from telegram import Bot
from telegram.ext import Application

from bench.serve import arguments, bot_settings
from sosekni.bot import ALLOWED_UPDATES, application_builder, with_handlers
from sosekni.config import Settings
from sosekni.db import bind, close_pool, engine_for, open_pool, sql, transaction, utcnow
from sosekni.services import admins
from sosekni.services import requests as request_services
from sosekni.services.work import UnitOfWork
from sosekni.tables import OutboxMessage

log = logging.getLogger("bench.peer")
_bot: Bot | None = None


async def _send(message: OutboxMessage) -> None:
    assert _bot is not None
    payload = json.loads(message.payload)
    if message.chat_id is not None:
        payload["chat_id"] = message.chat_id
    try:
        result = await _bot.do_api_request(message.method, api_kwargs=payload)
    except Exception as exc:  # a naive bot logs and moves on
        log.warning("could not send %s: %s", message.method, exc)
        return
    if message.purpose in ("notify", "remind") and isinstance(result, dict):
        now = utcnow()
        await sql(
            "INSERT INTO admin_notification (request_id, admin_telegram_id, chat_id, message_id, "
            "created_at) VALUES ({}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
            message.request_id,
            message.admin_telegram_id or message.chat_id,
            message.chat_id,
            int(result["message_id"]),
            now,
        )


@asynccontextmanager
async def direct_unit_of_work() -> AsyncIterator[UnitOfWork]:
    """The service's transaction; its messages are sent directly once it has committed."""
    work = UnitOfWork()
    async with transaction():
        yield work
    if work.messages:
        await asyncio.gather(*(_send(m) for m in work.messages))


def build(settings: Settings) -> Application:
    engine = engine_for(settings.database_url)
    bind(engine)

    async def post_init(application: Application) -> None:
        global _bot
        _bot = application.bot
        await open_pool(engine, 10)
        await admins.seed(settings.admin_telegram_ids)
        log.info("peer @%s ready", application.bot.username)

    async def post_shutdown(application: Application) -> None:
        await close_pool(engine)

    application = (
        application_builder(settings)
        .concurrent_updates(True)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    with_handlers(application, settings)
    return application


def main() -> None:
    args = arguments(__doc__, workers=False)
    settings = bot_settings()
    request_services.unit_of_work = direct_unit_of_work  # type: ignore[assignment]
    application = build(settings)
    application.run_webhook(
        listen=args.host,
        port=args.port,
        url_path="webhook/telegram",
        webhook_url=f"http://{args.host}:{args.port}/webhook/telegram",
        secret_token=settings.require_webhook_secret(),
        allowed_updates=ALLOWED_UPDATES,
    )


if __name__ == "__main__":
    main()
