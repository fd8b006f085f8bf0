"""A fake Telegram Bot API served over real HTTP on 127.0.0.1.

The application under test talks to it exactly as it would talk to api.telegram.org: give it
``TELEGRAM_API_BASE_URL = fake.base_url`` and python-telegram-bot's ``Bot`` will call
``f"{fake.base_url}/bot<token>/<method>"``.

Tests drive it from the outside:

* every request is recorded as a :class:`Call` (``calls()``, ``sent_texts()``, ``wait_for()``);
* updates for ``getUpdates`` are queued with ``push_update()``;
* faults are injected with ``fail_next()``, ``block_chat()``, ``set_delay()`` and
  ``set_webhook_error()`` and removed with ``recover()``; ``reset()`` forgets everything;
* ``migrate_chat()`` turns a group into a supergroup: calls to the old chat get Telegram's
  400 with ``parameters.migrate_to_chat_id`` from then on (``recover()`` keeps it).

The server keeps its state across ``stop()``/``start()``, and a restart reuses the same port, so a
test can simulate Telegram being unreachable for a while.

Run it by hand with ``python -m tests.fakes.telegram --port 8081``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.parser
import email.policy
import html
import json
import re
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_TOKEN = "123456:TEST-fake-token"
DEFAULT_USERNAME = "SoSenkiTestBot"
DEFAULT_BOT_ID = 123456
BOT_FIRST_NAME = "SOSenki Test"

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
GETUPDATES_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
BLOCKED = "Forbidden: bot was blocked by the user"
MIGRATED = "Bad Request: group chat was upgraded to a supergroup chat"

MAX_LONG_POLL = 10.0
_TICK = 0.05

# Parameters decoded to numbers; python-telegram-bot JSON-encodes them, so they arrive as "123".
INT_FIELDS = frozenset(
    {
        "chat_id",
        "message_id",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "max_connections",
        "from_chat_id",
        "reply_to_message_id",
    }
)
# Parameters carrying JSON objects or arrays.
JSON_FIELDS = frozenset(
    {"reply_markup", "allowed_updates", "entities", "link_preview_options", "reply_parameters"}
)
# Parameters decoded to booleans ("true"/"false" from PTB, "True"/"False" from hand-made calls).
BOOL_FIELDS = frozenset(
    {"drop_pending_updates", "disable_notification", "show_alert", "protect_content"}
)

_METHODS = (
    "getMe",
    "sendMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "answerCallbackQuery",
    "setWebhook",
    "getWebhookInfo",
    "deleteWebhook",
    "getUpdates",
    # Harmless extras an application commonly calls at start-up or in passing.
    "deleteMessage",
    "sendChatAction",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "logOut",
    "close",
)
# Telegram method names are case-insensitive; calls are recorded under the canonical spelling.
CANONICAL_METHODS: dict[str, str] = {name.lower(): name for name in _METHODS}


def canonical_method(name: str) -> str:
    """Telegram's camelCase spelling of a method name (unknown names are returned unchanged)."""
    return CANONICAL_METHODS.get(name.lower(), name)


@dataclass(frozen=True)
class Call:
    """One request the fake answered.

    ``at`` is the wall-clock time (``time.time()``) when the answer was decided; ``status`` is the
    HTTP status sent back (200 for success).
    """

    method: str
    params: dict[str, Any]
    at: float
    status: int


@dataclass
class _Fault:
    remaining: int
    status: int
    description: str
    retry_after: int | None
    method: str | None


@dataclass
class _Webhook:
    url: str = ""
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int = 40


@dataclass
class _Stored:
    text: str | None
    reply_markup: dict[str, Any] | None
    date: int


@dataclass
class _WebhookError:
    message: str
    date: int


class _ApiError(Exception):
    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[int | str, int], _Stored] = field(default_factory=dict)
    last_message_id: dict[int | str, int] = field(default_factory=dict)
    faults: list[_Fault] = field(default_factory=list)
    blocked: dict[int | str, tuple[int, str]] = field(default_factory=dict)
    migrated: dict[int | str, int] = field(default_factory=dict)
    delays: dict[str | None, float] = field(default_factory=dict)
    webhook: _Webhook = field(default_factory=_Webhook)
    webhook_error: _WebhookError | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Request decoding
# --------------------------------------------------------------------------------------------


def _number(value: str) -> int | float | str:
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return value
    return int(number) if number.is_integer() else number


def decode_param(name: str, value: Any) -> Any:
    """Turn one raw parameter into the type Telegram would understand it as."""
    if name in INT_FIELDS:
        if isinstance(value, str):
            return _number(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if name in JSON_FIELDS and isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError:
            return value
    if name in BOOL_FIELDS and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0", ""):
            return False
        return value
    return value


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, Any] = {}
    if not message.is_multipart():
        raise ValueError("malformed multipart body")
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            fields[name] = {"filename": filename, "size": len(data), "content": data}
        else:
            charset = part.get_content_charset() or "utf-8"
            fields[name] = data.decode(charset)
    return fields


def parse_params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Collect the parameters of one Bot API request from its query string and body.

    Accepts ``application/x-www-form-urlencoded``, ``multipart/form-data`` and
    ``application/json`` bodies; body values win over query-string values.
    """
    raw: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    media_type = content_type.split(";", 1)[0].strip().lower()
    if body:
        if media_type == "application/json":
            decoded = json.loads(body.decode("utf-8"))
            if not isinstance(decoded, dict):
                raise ValueError("JSON body must be an object")
            raw.update(decoded)
        elif media_type == "multipart/form-data":
            raw.update(_multipart(content_type, body))
        else:
            raw.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return {name: decode_param(name, value) for name, value in raw.items()}


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeTelegram) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections cut by stop() or by impatient clients are expected; stay quiet.
        return

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "FakeTelegram/1.0"
    # Headers and body leave in one segment: no Nagle/delayed-ACK stalls on keep-alive.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        answer = self.server.fake._dispatch(
            url.path,
            url.query,
            self.headers.get("Content-Type", ""),
            body,
            self.server.stopping,
        )
        if answer is None:  # the server is stopping: hang up without an answer
            self.close_connection = True
            return
        status, payload = answer
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# What Telegram's HTML parse mode accepts: these tags, and &lt; &gt; &amp; &quot; or numeric
# character references; any other `<` or `&` is an error ("can't parse entities").
HTML_TAGS = frozenset(
    "b strong i em u ins s strike del span tg-spoiler a code pre blockquote tg-emoji".split()
)
_HTML_TOKEN = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(?:\s[^<>]*)?>|&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);|[<>&]"
)
MESSAGE_MAX = 4096


def check_text(text: Any, parse_mode: Any) -> None:
    """Refuse what Telegram refuses: bad HTML in HTML mode, or more than 4096 characters."""
    if not isinstance(text, str):
        return
    visible = text
    if parse_mode == "HTML":
        for token in _HTML_TOKEN.finditer(text):
            if token.group(0) in "<>&" or (token.group(2) and token.group(2) not in HTML_TAGS):
                raise _ApiError(
                    400,
                    "Bad Request: can't parse entities: unsupported start tag or unescaped "
                    f"character at byte offset {token.start()}",
                )
        visible = html.unescape(re.sub(r"<[^<>]*>", "", text))
    if len(visible) > MESSAGE_MAX:
        raise _ApiError(400, "Bad Request: message is too long")


def _error_payload(status: int, description: str, parameters: dict[str, Any] | None) -> Any:
    payload: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return payload


def _default_description(status: int, retry_after: int | None) -> str:
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return f"Too Many Requests: retry after {retry_after}"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeTelegram:
    """A Telegram Bot API stand-in on ``http://127.0.0.1:<port>``.

    ``port=0`` picks a free port at the first ``start()``; later restarts reuse it. ``clock``
    (seconds, like ``time.monotonic``) measures injected delays and long-poll timeouts: a test
    that gives a clock it moves itself decides when they run out, with no wall-clock waits.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        port: int = 0,
        username: str = DEFAULT_USERNAME,
        bot_id: int = DEFAULT_BOT_ID,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token
        self._clock = clock
        self._username = username
        self._bot_id = bot_id
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._state = _State()
        self._next_update_id = 1
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeTelegram:
        """Start serving (no-op if already running). Returns ``self``."""
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), self)
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _TICK},
            name=f"fake-telegram-{self._port}",
            daemon=True,
        )
        self._server = server
        self._thread = thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections; recorded state is kept."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = None
        self._thread = None
        server.stopping.set()
        with self._cond:
            self._cond.notify_all()
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- identity --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeTelegram has no port yet: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; the Bot API lives under ``{base_url}/bot<token>/``."""
        return f"http://{self._host}:{self.port}"

    @property
    def token(self) -> str:
        return self._token

    @property
    def username(self) -> str:
        return self._username

    @property
    def bot_id(self) -> int:
        return self._bot_id

    def bot_user(self) -> dict[str, Any]:
        """The bot as a Telegram ``User`` object (the ``from`` of its messages)."""
        return {
            "id": self._bot_id,
            "is_bot": True,
            "first_name": BOT_FIRST_NAME,
            "username": self._username,
        }

    # ---- inspection ------------------------------------------------------------------------

    def calls(self, method: str | None = None, chat_id: int | None = None) -> list[Call]:
        """Recorded calls, oldest first, optionally only of one method and/or one chat."""
        wanted = canonical_method(method) if method is not None else None
        with self._lock:
            recorded = list(self._state.calls)
        return [
            call
            for call in recorded
            if (wanted is None or call.method == wanted)
            and (chat_id is None or call.params.get("chat_id") == chat_id)
        ]

    def sent_texts(self, chat_id: int) -> list[str]:
        """Texts of the successful ``sendMessage`` calls to ``chat_id``, oldest first."""
        return [
            str(call.params.get("text"))
            for call in self.calls("sendMessage", chat_id)
            if call.status == HTTPStatus.OK
        ]

    def shown_requests(self, chat_id: int) -> list[int]:
        """Request numbers offered for a decision (``approve:<id>`` buttons) by the successful
        ``sendMessage`` calls to ``chat_id``, in order: a card shows one, a digest several."""
        return [
            int(button["callback_data"].split(":", 1)[1])
            for call in self.calls("sendMessage", chat_id)
            if call.status == HTTPStatus.OK
            for row in (call.params.get("reply_markup") or {}).get("inline_keyboard", [])
            for button in row
            if str(button.get("callback_data", "")).startswith("approve:")
        ]

    def summary(self, last: int = 50) -> str:
        """A readable list of the last ``last`` recorded calls (used in failure messages)."""
        recorded = self.calls()
        if not recorded:
            return "  (no calls recorded)"
        lines = []
        skipped = max(0, len(recorded) - last)
        if skipped:
            lines.append(f"  ... {skipped} earlier calls")
        for index, call in enumerate(recorded[skipped:], start=skipped + 1):
            shown = {k: v for k, v in call.params.items() if not isinstance(v, dict | bytes)}
            params = json.dumps(shown, ensure_ascii=False, default=str)
            if len(params) > 200:
                params = params[:197] + "..."
            lines.append(f"  {index}. {call.method} -> {call.status} {params}")
        return "\n".join(lines)

    def _check(
        self, predicate: Callable[[FakeTelegram], bool]
    ) -> tuple[bool, BaseException | None]:
        try:
            return bool(predicate(self)), None
        except Exception as exc:
            return False, exc

    def _timeout_error(self, timeout: float, error: BaseException | None) -> AssertionError:
        reason = f" (last predicate error: {error!r})" if error is not None else ""
        return AssertionError(
            f"FakeTelegram: condition not met within {timeout:g}s{reason}. "
            f"Recorded calls:\n{self.summary()}"
        )

    def wait_for(self, predicate: Callable[[FakeTelegram], bool], timeout: float = 10) -> None:
        """Block until ``predicate(self)`` is true; AssertionError with the calls on timeout.

        A predicate that raises counts as false. This blocks the calling thread: from a coroutine
        whose event loop also runs the code under test, use :meth:`wait_for_async`.
        """
        deadline = time.monotonic() + timeout
        while True:
            ok, error = self._check(predicate)
            if ok:
                return
            if time.monotonic() >= deadline:
                raise self._timeout_error(timeout, error)
            time.sleep(0.02)

    async def wait_for_async(
        self,
        predicate: Callable[[FakeTelegram], bool],
        timeout: float = 10,
    ) -> None:
        """Like :meth:`wait_for` but yields to the event loop while waiting."""
        deadline = time.monotonic() + timeout
        while True:
            ok, error = self._check(predicate)
            if ok:
                return
            if time.monotonic() >= deadline:
                raise self._timeout_error(timeout, error)
            await asyncio.sleep(0.02)

    # ---- driving ---------------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for ``getUpdates``; assigns ``update_id`` if missing and returns it."""
        queued = dict(update)
        with self._cond:
            if "update_id" in queued:
                update_id = int(queued["update_id"])
                self._next_update_id = max(self._next_update_id, update_id + 1)
            else:
                update_id = self._next_update_id
                self._next_update_id += 1
            queued["update_id"] = update_id
            self._state.updates.append(queued)
            self._cond.notify_all()
        return update_id

    def pending_updates(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(update) for update in self._state.updates]

    def webhook_url(self) -> str:
        """The webhook URL currently set ("" when none)."""
        with self._lock:
            return self._state.webhook.url

    def set_webhook_error(self, message: str, date: int | None = None) -> None:
        """Make ``getWebhookInfo`` report a delivery error (``date`` defaults to now)."""
        with self._lock:
            self._state.webhook_error = _WebhookError(
                message, int(time.time()) if date is None else date
            )

    def clear_webhook_error(self) -> None:
        with self._lock:
            self._state.webhook_error = None

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        description: str | None = None,
        retry_after: int | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls (of ``method`` if given) with an error.

        ``description`` defaults to the standard text for ``status`` ("Internal Server Error" for
        500, "Too Many Requests: retry after N" for 429). A 429 always carries
        ``parameters.retry_after`` (1 unless given), as Telegram does.
        """
        if count < 1:
            return
        if status == HTTPStatus.TOO_MANY_REQUESTS and retry_after is None:
            retry_after = 1
        text = description if description is not None else _default_description(status, retry_after)
        with self._lock:
            self._state.faults.append(
                _Fault(
                    count,
                    status,
                    text,
                    retry_after,
                    canonical_method(method) if method is not None else None,
                )
            )

    def block_chat(self, chat_id: int | str, status: int = 403, description: str = BLOCKED) -> None:
        """Fail every ``sendMessage`` to ``chat_id`` until :meth:`unblock_chat`."""
        with self._lock:
            self._state.blocked[chat_id] = (status, description)

    def unblock_chat(self, chat_id: int | str) -> None:
        with self._lock:
            self._state.blocked.pop(chat_id, None)

    def migrate_chat(self, chat_id: int, new_chat_id: int) -> None:
        """The group ``chat_id`` became the supergroup ``new_chat_id``: every later call to
        ``chat_id`` is answered as Telegram does, 400 with ``migrate_to_chat_id``."""
        with self._lock:
            self._state.migrated[chat_id] = new_chat_id

    def set_delay(self, seconds: float, method: str | None = None) -> None:
        """Sleep ``seconds`` before answering (every method, or only ``method``); 0 removes it."""
        key = canonical_method(method) if method is not None else None
        with self._lock:
            if seconds > 0:
                self._state.delays[key] = seconds
            else:
                self._state.delays.pop(key, None)

    def recover(self) -> None:
        """Remove every injected fault: pending failures, blocked chats and delays."""
        with self._lock:
            self._state.faults.clear()
            self._state.blocked.clear()
            self._state.delays.clear()

    def reset(self) -> None:
        """Forget calls, messages, faults, webhook state and queued updates.

        Update ids keep increasing across resets so a client's ``offset`` never hides new ones.
        """
        with self._cond:
            self._state = _State()
            self._cond.notify_all()

    # ---- request handling (server threads) -------------------------------------------------

    def _dispatch(
        self,
        path: str,
        query: str,
        content_type: str,
        body: bytes,
        stopping: threading.Event,
    ) -> tuple[int, Any] | None:
        method = path
        params: dict[str, Any] = {}
        prefix, _, rest = path.lstrip("/").partition("/")
        valid_path = prefix.startswith("bot") and rest and "/" not in rest.rstrip("/")
        if valid_path:
            method = canonical_method(rest.rstrip("/"))
        try:
            params = parse_params(query, content_type, body)
        except (ValueError, UnicodeDecodeError):
            return self._finish(method, params, 400, None, "Bad Request: can't parse parameters")

        delay = self._delay_for(method)
        if delay > 0 and not self._sleep(delay, stopping):
            return None

        if not valid_path:
            return self._finish(method, params, 404, None, "Not Found")
        if prefix[len("bot") :] != self._token:
            return self._finish(method, params, 401, None, "Unauthorized")
        handler = self._handlers().get(method)
        if handler is None:
            return self._finish(method, params, 404, None, "Not Found")

        chat = params.get("chat_id")
        with self._lock:
            moved = self._state.migrated.get(chat) if isinstance(chat, int | str) else None
        if moved is not None:
            return self._finish(method, params, 400, None, MIGRATED, {"migrate_to_chat_id": moved})
        fault = self._take_fault(method)
        if fault is not None:
            extra = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
            return self._finish(method, params, fault.status, None, fault.description, extra)
        try:
            result = handler(params, stopping)
        except _ApiError as error:
            return self._finish(
                method, params, error.status, None, error.description, error.parameters
            )
        if result is _ABORT:
            return None
        return self._finish(method, params, 200, result)

    def _finish(
        self,
        method: str,
        params: dict[str, Any],
        status: int,
        result: Any,
        description: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        with self._lock:
            self._state.calls.append(Call(method, params, time.time(), status))
        if status == HTTPStatus.OK:
            return status, {"ok": True, "result": result}
        return status, _error_payload(status, description, parameters)

    def _delay_for(self, method: str) -> float:
        with self._lock:
            delays = self._state.delays
            return delays.get(method, delays.get(None, 0.0))

    def _sleep(self, seconds: float, stopping: threading.Event) -> bool:
        """Sleep in short steps of the clock; False if the server started stopping meanwhile."""
        deadline = self._clock() + seconds
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return not stopping.is_set()
            if stopping.wait(min(remaining, _TICK)):
                return False

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._state.faults:
                if fault.method is None or fault.method == method:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._state.faults.remove(fault)
                    return fault
        return None

    def _handlers(self) -> dict[str, Callable[[dict[str, Any], threading.Event], Any]]:
        return {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._true,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "deleteWebhook": self._delete_webhook,
            "getUpdates": self._get_updates,
            "deleteMessage": self._true,
            "sendChatAction": self._true,
            "setMyCommands": self._true,
            "getMyCommands": self._empty_list,
            "deleteMyCommands": self._true,
            "logOut": self._true,
            "close": self._true,
        }

    # ---- methods ---------------------------------------------------------------------------

    @staticmethod
    def _true(params: dict[str, Any], stopping: threading.Event) -> bool:
        return True

    @staticmethod
    def _empty_list(params: dict[str, Any], stopping: threading.Event) -> list[Any]:
        return []

    def _get_me(self, params: dict[str, Any], stopping: threading.Event) -> dict[str, Any]:
        return {
            **self.bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    @staticmethod
    def _chat(chat_id: int | str) -> dict[str, Any]:
        if isinstance(chat_id, str):  # "@channelusername"
            return {
                "id": -1_000_000_000_000 - zlib.crc32(chat_id.encode()) % 1_000_000_000,
                "type": "channel",
                "title": chat_id.lstrip("@"),
                "username": chat_id.lstrip("@"),
            }
        if chat_id > 0:
            return {"id": chat_id, "type": "private"}
        if chat_id <= -1_000_000_000_000:
            return {"id": chat_id, "type": "supergroup", "title": f"Chat {chat_id}"}
        return {"id": chat_id, "type": "group", "title": f"Chat {chat_id}"}

    def _message(
        self,
        chat_id: int | str,
        message_id: int,
        stored: _Stored,
        edit_date: int | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": self.bot_user(),
            "chat": self._chat(chat_id),
            "date": stored.date,
        }
        if edit_date is not None:
            message["edit_date"] = edit_date
        if stored.text is not None:
            message["text"] = stored.text
        if stored.reply_markup is not None:
            message["reply_markup"] = stored.reply_markup
        return message

    @staticmethod
    def _chat_id(params: dict[str, Any]) -> int | str:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, str) and not chat_id.startswith("@"):
            raise _ApiError(400, "Bad Request: chat not found")
        if not isinstance(chat_id, int | str):
            raise _ApiError(400, "Bad Request: chat not found")
        return chat_id

    @staticmethod
    def _inline_markup(params: dict[str, Any]) -> dict[str, Any] | None:
        # Only inline keyboards are part of a Message; reply keyboards are not echoed back.
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            return markup
        return None

    def _send_message(self, params: dict[str, Any], stopping: threading.Event) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text = params.get("text")
        check_text(text, params.get("parse_mode"))
        with self._lock:
            blocked = self._state.blocked.get(chat_id)
            if blocked is not None:
                raise _ApiError(*blocked)
            if not isinstance(text, str) or not text.strip():
                raise _ApiError(400, "Bad Request: message text is empty")
            message_id = self._state.last_message_id.get(chat_id, 0) + 1
            self._state.last_message_id[chat_id] = message_id
            stored = _Stored(text, self._inline_markup(params), int(time.time()))
            self._state.messages[(chat_id, message_id)] = stored
            return self._message(chat_id, message_id, stored)

    def _edit(
        self, params: dict[str, Any], markup: dict[str, Any] | None, text: str | None = None
    ) -> dict[str, Any] | bool:
        """Apply an edit; ``text=None`` keeps the recorded text (editMessageReplyMarkup)."""
        if params.get("inline_message_id"):
            return True
        chat_id = self._chat_id(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise _ApiError(400, "Bad Request: message identifier is not specified")
        now = int(time.time())
        with self._lock:
            old = self._state.messages.get((chat_id, message_id))
            if text is None and old is not None:
                text = old.text
            if old is not None and old.text == text and old.reply_markup == markup:
                raise _ApiError(400, NOT_MODIFIED)
            stored = _Stored(text, markup, old.date if old is not None else now)
            self._state.messages[(chat_id, message_id)] = stored
            return self._message(chat_id, message_id, stored, edit_date=now)

    def _edit_message_text(
        self, params: dict[str, Any], stopping: threading.Event
    ) -> dict[str, Any] | bool:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: text must be non-empty")
        check_text(text, params.get("parse_mode"))
        # Like Telegram, an edit without reply_markup removes the inline keyboard.
        return self._edit(params, self._inline_markup(params), text)

    def _edit_message_reply_markup(
        self, params: dict[str, Any], stopping: threading.Event
    ) -> dict[str, Any] | bool:
        return self._edit(params, self._inline_markup(params))

    def _set_webhook(self, params: dict[str, Any], stopping: threading.Event) -> bool:
        url = params.get("url")
        if url is None:
            raise _ApiError(400, 'Bad Request: parameter "url" is required')
        allowed = params.get("allowed_updates")
        max_connections = params.get("max_connections")
        with self._cond:
            if not url:
                self._state.webhook = _Webhook()
            else:
                self._state.webhook = _Webhook(
                    url=str(url),
                    secret_token=params.get("secret_token"),
                    allowed_updates=list(allowed) if isinstance(allowed, list) else None,
                    max_connections=max_connections if isinstance(max_connections, int) else 40,
                )
            if params.get("drop_pending_updates") is True:
                self._state.updates.clear()
            self._cond.notify_all()
        return True

    def _delete_webhook(self, params: dict[str, Any], stopping: threading.Event) -> bool:
        with self._cond:
            self._state.webhook = _Webhook()
            self._state.webhook_error = None
            if params.get("drop_pending_updates") is True:
                self._state.updates.clear()
            self._cond.notify_all()
        return True

    def _get_webhook_info(
        self, params: dict[str, Any], stopping: threading.Event
    ) -> dict[str, Any]:
        with self._lock:
            webhook = self._state.webhook
            info: dict[str, Any] = {
                "url": webhook.url,
                "has_custom_certificate": False,
                "pending_update_count": len(self._state.updates),
            }
            if webhook.url:
                info["max_connections"] = webhook.max_connections
                if webhook.allowed_updates is not None:
                    info["allowed_updates"] = list(webhook.allowed_updates)
            error = self._state.webhook_error
            if error is not None:
                info["last_error_date"] = error.date
                info["last_error_message"] = error.message
            return info

    def _get_updates(self, params: dict[str, Any], stopping: threading.Event) -> Any:
        offset = params.get("offset")
        limit = params.get("limit")
        timeout = params.get("timeout")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        wait = 0.0
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            wait = min(max(float(timeout), 0.0), MAX_LONG_POLL)
        deadline = self._clock() + wait
        with self._cond:
            while True:
                if self._state.webhook.url:
                    raise _ApiError(409, GETUPDATES_CONFLICT)
                updates = self._state.updates
                if isinstance(offset, int) and offset < 0:
                    updates = updates[offset:]
                    self._state.updates = updates
                    offset = None
                elif isinstance(offset, int):
                    updates = [u for u in updates if u["update_id"] >= offset]
                    self._state.updates = updates
                if updates or stopping.is_set():
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, _TICK * 4))
            if stopping.is_set():
                return _ABORT
            return [dict(update) for update in updates[:limit]]


_ABORT = object()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.telegram", description="Run the fake Telegram Bot API."
    )
    parser.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (0 = any)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the only token accepted")
    parser.add_argument("--username", default=DEFAULT_USERNAME, help="the bot's username")
    args = parser.parse_args(argv)

    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    fake = FakeTelegram(args.token, port=args.port, username=args.username)
    with fake:
        print(fake.base_url, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
