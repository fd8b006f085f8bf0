"""Logging: text or one JSON object per line, with update/request ids, secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

log_context: ContextVar[dict[str, Any] | None] = ContextVar("log_context", default=None)

# Libraries that would log the Bot API URL, which contains the token, at INFO.
_CHATTY = ("httpx", "httpcore", "telegram.request", "hpack", "aiosqlite", "asyncio")


class Redactor:
    """Replaces every secret value in a string with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, message: str) -> str:
        for secret in self.secrets:
            if secret in message:
                message = message.replace(secret, "***")
        return message


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = log_context.get() or {}
        for key, value in context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{key}={getattr(record, key)}"
            for key in ("update_id", "request_id")
            if getattr(record, key, None) is not None
        ]
        if extras:
            first, sep, rest = line.partition("\n")
            line = f"{first} [{' '.join(extras)}]{sep}{rest}"
        return self.redact(line)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key in ("update_id", "request_id"):
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Send every log line (ours, Sanic's, PTB's) through one redacting handler on stderr."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets"):
        sanic_logger = logging.getLogger(name)
        for old in list(sanic_logger.handlers):
            sanic_logger.removeHandler(old)
        sanic_logger.propagate = True


def bind_log(**values: Any) -> None:
    """Add ids (update_id, request_id) to every log line of the current task from now on."""
    log_context.set({**(log_context.get() or {}), **values})
