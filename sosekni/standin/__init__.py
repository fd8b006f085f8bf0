"""A stand-in for the Telegram Bot API: one for the tests, the benchmark and a sandbox.

:class:`TelegramStandIn` answers as Telegram does, with Telegram's checks and errors, on a lean
asyncio + httptools HTTP core; ``FakeTelegram`` is the same class under the tests' name.
"""

from sosekni.standin.botapi import (
    BLOCKED,
    CANNOT_INITIATE,
    DEFAULT_BOT_ID,
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    GETUPDATES_CONFLICT,
    MESSAGE_MAX,
    MIGRATED,
    NOT_MODIFIED,
    REQUESTER_MISSING,
    Call,
    TelegramStandIn,
    bench_call,
    bench_detail,
    canonical_method,
    check_text,
    parse_html,
    parse_params,
    utf16_length,
)
from sosekni.standin.server import run_fast

FakeTelegram = TelegramStandIn

__all__ = [
    "BLOCKED",
    "CANNOT_INITIATE",
    "DEFAULT_BOT_ID",
    "DEFAULT_TOKEN",
    "DEFAULT_USERNAME",
    "GETUPDATES_CONFLICT",
    "MESSAGE_MAX",
    "MIGRATED",
    "NOT_MODIFIED",
    "REQUESTER_MISSING",
    "Call",
    "FakeTelegram",
    "TelegramStandIn",
    "bench_call",
    "bench_detail",
    "canonical_method",
    "check_text",
    "parse_html",
    "parse_params",
    "run_fast",
    "utf16_length",
]
