"""The Sanic app: `sanic sosekni.app:create_app --factory`, or `sosekni-ops serve`.

The server's main process builds this app too (for its listeners and settings), but never
serves a request: python-telegram-bot and the runtime (about 0.4 s of imports, paid before
any worker is even spawned) are imported only by the code a worker runs, `open_runtime`
first, which runs before the worker accepts a connection, so a request never waits for
them (by then the imports in `webhook` are lookups in `sys.modules`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from datetime import datetime, timedelta
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import PayloadTooLarge
from sanic.response import HTTPResponse, text
from sanic.response import json as json_response

from sosekni import lifecycle, logs
from sosekni.config import Settings, load_settings
from sosekni.db import as_utc, is_unavailable, sql, utcnow
from sosekni.delivery.policy import DEFAULT_POLICY, DeliveryPolicy
from sosekni.metrics import INBOX_OPEN, OUTBOX_OPEN, metrics, shared_array
from sosekni.metrics import use as use_metrics
from sosekni.updates import ALLOWED_UPDATES, allowed_updates

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
HANDLED_KINDS = frozenset(ALLOWED_UPDATES)  # and chat_join_request with a community chat
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
HEALTH_TIMEOUT_S = 3.0
INBOX_STALE = timedelta(minutes=5)
OUTBOX_STALE = timedelta(minutes=15)


def create_app(settings: Settings | None = None, policy: DeliveryPolicy = DEFAULT_POLICY) -> Sanic:
    """The webhook app; each Sanic worker builds its own Runtime in its listeners."""
    if settings is None:
        settings = load_settings(need_token=True, need_webhook_secret=True)
    else:
        settings.require_token()
        settings.require_webhook_secret()
    logs.configure(settings.log_level, settings.log_format, settings.secrets)
    app = Sanic("sosekni", configure_logging=False)
    app.config.REQUEST_MAX_SIZE = MAX_BODY
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.MOTD = False
    app.ctx.settings = settings
    app.ctx.secret = settings.require_webhook_secret().encode()
    app.ctx.kinds = frozenset(allowed_updates(settings.community_chat_id))

    @app.main_process_start
    async def share_metrics(app: Sanic) -> None:
        app.shared_ctx.metrics = shared_array()

    @app.main_process_ready
    async def stop_from_the_managers_loop(app: Sanic) -> None:
        lifecycle.defer_stop_signals(app.manager)

    @app.before_server_start
    async def open_runtime(app: Sanic) -> None:
        from sosekni.runtime import Runtime  # worker only: see the module's docstring

        use_metrics(getattr(app.shared_ctx, "metrics", None))
        app.ctx.runtime = Runtime(settings, policy=policy)
        await app.ctx.runtime.start()

    @app.after_server_stop
    async def close_runtime(app: Sanic) -> None:
        await app.ctx.runtime.stop()

    app.add_route(webhook, "/webhook/telegram", methods=["POST"])
    app.error_handler.add(PayloadTooLarge, _too_large)
    app.add_route(health, "/health", methods=["GET"])
    app.add_route(prometheus, "/metrics", methods=["GET"])
    return app


def _error(status: int, description: str, *, logged: bool = False) -> HTTPResponse:
    """A refusal: counted, and logged in one line with its reason (never the secret)."""
    metrics.inc("updates_refused")
    if not logged:
        log.warning("webhook: refused %d: %s", status, description)
    return json_response({"ok": False, "description": description}, status=status)


async def webhook(request: Request) -> HTTPResponse:
    """Check, parse and store one update; answer 200 only once it is stored.

    With the right secret the sender is Telegram, which resends whatever is not answered
    2xx: a JSON object with a valid `update_id` is therefore always acknowledged, and one
    the bot cannot read is stored as failed (with the reason), logged and counted.
    """
    from telegram import Update  # imported by `open_runtime` already: see the module's docstring

    from sosekni.delivery import inbox

    if not _secret_matches(request.headers.get(SECRET_HEADER), request.app.ctx.secret):
        return _error(403, "wrong or missing secret token")
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _error(415, "content type must be application/json")
    try:
        payload, data = inbox.parse(request.body)
    except ValueError as exc:
        return _error(400, str(exc))
    update_id = data.get("update_id")
    if type(update_id) is not int or not 0 <= update_id < 2**63:
        return _error(400, "not a Telegram Update: update_id must be a non-negative integer")
    if not request.app.ctx.kinds.intersection(data):
        log.debug("ignoring update %s: no handler for %s", update_id, sorted(data)[:5])
        return json_response({"ok": True})
    error = None
    try:
        kind, chat_id = inbox.describe(Update.de_json(data, None), data)
    except Exception as exc:  # PTB cannot read it (a newer or older Bot API shape)
        kind, chat_id, error = inbox.kind_of(data), None, inbox.unreadable(exc)
    try:
        is_new = await inbox.store(update_id, payload, kind, chat_id, error)
    except Exception as exc:
        if is_unavailable(exc):
            log.warning("webhook: refused 503: database unavailable, Telegram will retry")
        else:
            log.exception("webhook: refused 503: could not store update %s", update_id)
        return _error(503, "storage unavailable, retry later", logged=True)
    metrics.inc("updates_received" if is_new else "updates_duplicate")
    if error is not None and is_new:
        metrics.inc("updates_unreadable")
        log.warning("update %s cannot be read, kept as failed: %s", update_id, error[:300])
    return json_response({"ok": True})


async def _too_large(request: Request, exception: Exception) -> HTTPResponse:
    """Sanic refuses a body over REQUEST_MAX_SIZE before any route: logged and counted too."""
    if request.path == "/webhook/telegram":
        return _error(413, f"body over {MAX_BODY} bytes")
    return json_response({"ok": False, "description": "request too large"}, status=413)


def _secret_matches(given: str | None, secret: bytes) -> bool:
    """Constant-time check of the secret header, whatever bytes it holds."""
    try:
        value = (given or "").encode("utf-8")
    except UnicodeEncodeError:  # undecodable header bytes: certainly not our secret
        return False
    return hmac.compare_digest(value, secret)


async def health(request: Request) -> HTTPResponse:
    """The checks that ran and their results; 503 naming the first that failed."""
    checks: dict[str, Any] = {}
    failing: list[str] = []
    try:
        checks.update(await asyncio.wait_for(_backlog(), HEALTH_TIMEOUT_S))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
        failing.append("database")
    else:
        failing.extend(stale_queues(checks))
    runtime = getattr(request.app.ctx, "runtime", None)
    if runtime is not None and runtime.ready.is_set():
        checks["bot"] = "ready"
    elif runtime is not None and runtime.startup_error is not None:
        checks["bot"] = runtime.startup_error  # e.g. "start-up failed: InvalidToken"
        failing.append("bot")
    else:  # the first attempt still running, the database down, or Telegram unreachable
        checks["bot"] = "starting"
    body: dict[str, Any] = {"status": "ok" if not failing else "fail", "checks": checks}
    if failing:
        body["failing"] = failing
    return json_response(body, status=503 if failing else 200)


async def prometheus(request: Request) -> HTTPResponse:
    """Counters, gauges and the handler latency histogram in Prometheus text format."""
    try:
        body = await asyncio.wait_for(metrics.render(), HEALTH_TIMEOUT_S)
    except Exception as exc:
        return text(f"# database unavailable: {type(exc).__name__}\n", status=503)
    return text(body, content_type="text/plain; version=0.0.4; charset=utf-8")


async def _backlog() -> dict[str, Any]:
    """Open rows of the inbox and the outbox and their age, read through the partial indexes
    of open rows (the WHERE written as theirs), and the failed messages still kept: the
    cost follows what waits, never the history."""
    now = utcnow()
    result: dict[str, Any] = {}
    for name, table, where, since, waiting in (
        ("inbox", "inbox_update", INBOX_OPEN, "received_at", "new"),
        ("outbox", "outbox_message", OUTBOX_OPEN, "created_at", "pending"),
    ):
        rows = await sql(
            f"SELECT count(*) AS n, min({since}) AS oldest, "
            f"min(CASE WHEN status = '{waiting}' THEN next_attempt_at END) AS due "
            f"FROM {table} WHERE {where}"
        )
        result[name] = {
            "backlog": int(rows[0]["n"]),
            "oldest_age_seconds": _seconds_since(now, rows[0]["oldest"]),
            "overdue_seconds": _seconds_since(now, rows[0]["due"]),
        }
    failed = await sql("SELECT count(*) AS n FROM outbox_message WHERE status = 'failed'")
    result["outbox"]["failed"] = int(failed[0]["n"])
    return result


def _seconds_since(now: datetime, moment: Any) -> float:
    moment = as_utc(moment)
    return round(max((now - moment).total_seconds(), 0.0), 3) if moment is not None else 0.0


def stale_queues(checks: dict[str, Any]) -> list[str]:
    """The queues whose work waits on this service rather than on Telegram.

    An update still unprocessed `INBOX_STALE` after it arrived fails `inbox`. The outbox
    fails when a message has been due for `OUTBOX_STALE` and nobody tried it (the sender is
    stuck or not running), not when it is old: a message waiting out Telegram's backoff or
    `retry_after` is not this service's fault, gets its next try on time, and is given up
    after `DeliveryPolicy.max_attempts` / `max_age_s`; a rollback would not help it.
    """
    failing = []
    if checks["inbox"]["oldest_age_seconds"] > INBOX_STALE.total_seconds():
        failing.append("inbox")
    if checks["outbox"]["overdue_seconds"] > OUTBOX_STALE.total_seconds():
        failing.append("outbox")
    return failing
