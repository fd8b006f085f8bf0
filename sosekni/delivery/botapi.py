"""Bot API calls straight from the outbox's stored JSON: one POST, Telegram's own errors.

The sender has the method name and its parameters as stored JSON already; building PTB
objects to serialise them again cost more CPU than everything else a message takes. The
answers are mapped to PTB's exceptions the way PTB itself maps them, so the sender's retry
rules read the same. Handlers keep using PTB's `Bot`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0  # as PTB's default: a hanging call is retried, not waited on forever
MAX_CONNECTIONS = 64


class BotApi:
    """POSTs `{base_url}/{method}` with a JSON body; returns `result` or raises."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")  # …/bot<token>: never logged as it is
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S, pool=None),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
        )

    async def call(self, method: str, payload: dict[str, Any]) -> Any:
        try:
            response = await self.client.post(
                f"{self.base_url}/{method}",
                content=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                headers={"content-type": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise TimedOut(f"Timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise NetworkError(f"httpx.{type(exc).__name__}") from None
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise NetworkError(f"Telegram answered {response.status_code} without JSON")
        if response.status_code == 200 and answer.get("ok"):
            return answer.get("result")
        description = str(answer.get("description") or f"Unknown error ({response.status_code})")
        parameters = answer.get("parameters") or {}
        if isinstance(parameters, dict):
            if isinstance(parameters.get("migrate_to_chat_id"), int):
                raise ChatMigrated(parameters["migrate_to_chat_id"])
            if isinstance(parameters.get("retry_after"), (int, float)):
                raise RetryAfter(timedelta(seconds=parameters["retry_after"]))
        status = response.status_code
        if status == 403:
            raise Forbidden(description)
        if status in (401, 404):
            raise InvalidToken(description)
        if status == 400:
            raise BadRequest(description)
        if status == 409:
            raise Conflict(description)
        raise NetworkError(f"{description} ({status})")

    async def close(self) -> None:
        await self.client.aclose()
