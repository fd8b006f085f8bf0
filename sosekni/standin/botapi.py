"""The Telegram Bot API stand-in: Telegram's answers, checks and errors, without Telegram.

The bot talks to it exactly as it would talk to api.telegram.org: give it
``TELEGRAM_API_BASE_URL = standin.base_url`` and python-telegram-bot's ``Bot`` calls
``f"{standin.base_url}/bot<token>/<method>"``. It refuses what Telegram refuses (HTML outside
Telegram's tags, texts over 4096 characters, "message is not modified", a wrong token) in
Telegram's error shapes, so a message that passes here is one Telegram would take.

Whoever runs it drives it from the outside:

* every request is recorded as a :class:`Call` (``calls()``, ``sent_texts()``, ``wait_for()``);
* updates for ``getUpdates`` are queued with ``push_update()``;
* faults are injected with ``fail_next()``, ``block_chat()``, ``set_delay()`` and
  ``set_webhook_error()`` and removed with ``recover()``; ``reset()`` forgets everything;
* ``migrate_chat()`` turns a group into a supergroup: calls to the old chat get Telegram's
  400 with ``parameters.migrate_to_chat_id`` from then on (``recover()`` keeps it);
* ``GET /bench/calls``, ``GET /bench/details`` and ``POST /bench/reset`` serve the records
  over HTTP to a process that cannot call methods (the benchmark; see :meth:`bench_calls`).

It runs in a thread of the caller with an event loop of its own (``start()``/``stop()`` or
``with``; tests) or as a process (``python -m sosekni.standin``; the benchmark). It keeps its
state across ``stop()``/``start()``, and a restart reuses the same port, so a test can make
Telegram unreachable for a while.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import re
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from sosekni.standin.server import Answer, Core, new_loop

DEFAULT_TOKEN = "123456:TEST-fake-token"
DEFAULT_USERNAME = "SoSenkiTestBot"
DEFAULT_BOT_ID = 123456
BOT_FIRST_NAME = "SOSenki Test"

NO_INVITE_RIGHTS = "Bad Request: not enough rights to manage chat invite links"
INVITE_HASH_EXPIRED = "Bad Request: INVITE_HASH_EXPIRED"
REQUESTER_MISSING = "Bad Request: HIDE_REQUESTER_MISSING"
CANNOT_INITIATE = "Forbidden: bot can't initiate conversation with a user"
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
        "member_limit",
        "expire_date",
    }
)
# Parameters carrying JSON objects or arrays.
JSON_FIELDS = frozenset(
    {"reply_markup", "allowed_updates", "entities", "link_preview_options", "reply_parameters"}
)
# Parameters decoded to booleans ("true"/"false" from PTB, "True"/"False" from hand-made calls).
BOOL_FIELDS = frozenset(
    {
        "drop_pending_updates",
        "disable_notification",
        "show_alert",
        "protect_content",
        "creates_join_request",
    }
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
    "createChatInviteLink",
    "revokeChatInviteLink",
    "getChatMember",
    "approveChatJoinRequest",
    "declineChatJoinRequest",
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
    """One request the stand-in answered.

    ``at`` is the wall-clock time (``time.time()``) when the answer was decided; ``status`` is the
    HTTP status sent back (200 for success); ``message_id`` is the message a successful send or
    edit answered with (the benchmark matches edits to sends by it).
    """

    method: str
    params: dict[str, Any]
    at: float
    status: int
    message_id: int | None = None


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
    members: dict[int | str, tuple[str, bool]] = field(default_factory=dict)  # the bot's
    invite_links: dict[str, dict[str, Any]] = field(default_factory=dict)
    join_requests: dict[tuple[int | str, int], str] = field(default_factory=dict)  # → state
    users: dict[tuple[int | str, int], tuple[str, bool]] = field(default_factory=dict)  # others


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
    raw: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
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


# What Telegram's HTML parse mode accepts (core.telegram.org/bots/api#html-style): these tags,
# balanced and properly nested; &lt; &gt; &amp; &quot; and numeric character references; any
# other `<`, `>` or `&` in the text is an error ("can't parse entities"). Attributes other than
# the few each tag uses are ignored, as Telegram ignores them: whatever shows the bot's
# messages (the sandbox's page) must not trust them.
HTML_TAGS = frozenset(
    "b strong i em u ins s strike del span tg-spoiler a code pre blockquote tg-emoji".split()
)
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY = re.compile(r"&(?:#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,7})|([a-zA-Z][a-zA-Z0-9]*));")
_TAG_NAME = re.compile(r"[a-zA-Z0-9-]*")
_ATTRIBUTE_NAME = re.compile(r"[a-zA-Z0-9_-]*")
_SPACE = " \t\r\n\f"
MESSAGE_MAX = 4096


class _HtmlError(Exception):
    """Telegram's reason for refusing a text, said after "can't parse entities: "."""


def _entity_at(text: str, at: int) -> tuple[str, int] | None:
    """The character of the entity at ``at`` and where it ends; None where Telegram knows no
    entity (``&foo;``, a bare ``&``, a reference to no character)."""
    found = _ENTITY.match(text, at)
    if found is None:
        return None
    decimal, hexadecimal, name = found.groups()
    if name is not None:
        char = _NAMED_ENTITIES.get(name)
        return (char, found.end()) if char is not None else None
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), found.end()


def _attribute_value(raw: str) -> str:
    """An attribute's value with its entities decoded (an unknown one stays as written)."""
    out: list[str] = []
    at = 0
    while at < len(raw):
        entity = _entity_at(raw, at) if raw[at] == "&" else None
        if entity is None:
            out.append(raw[at])
            at += 1
        else:
            out.append(entity[0])
            at = entity[1]
    return "".join(out)


class _HtmlParser:
    """One pass over an HTML text as Telegram's parser makes it: a stack of open tags, the
    visible text (tags dropped, entities decoded), an error at the first thing it refuses."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.visible: list[str] = []
        self.open: list[str] = []

    def byte_offset(self, at: int) -> int:
        """Telegram says where in UTF-8 bytes, not characters."""
        return len(self.text[:at].encode("utf-8", "surrogatepass"))

    def parse(self) -> str:
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char == "<":
                self.tag()
            elif char == "&":
                entity = _entity_at(text, self.at)
                if entity is None:
                    raise _HtmlError(
                        f'Unsupported HTML entity or unescaped "&" at byte offset '
                        f"{self.byte_offset(self.at)}"
                    )
                self.visible.append(entity[0])
                self.at = entity[1]
            elif char == ">":
                raise _HtmlError(
                    f'Unescaped ">" at byte offset {self.byte_offset(self.at)}; use "&gt;"'
                )
            else:
                self.visible.append(char)
                self.at += 1
        if self.open:
            raise _HtmlError(f'Can\'t find end tag corresponding to start tag "{self.open[-1]}"')
        return "".join(self.visible)

    def skip_space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in _SPACE:
            self.at += 1

    def tag(self) -> None:
        text, begin = self.text, self.at
        if text.startswith("</", begin):
            self.at = _TAG_NAME.match(text, begin + 2).end()  # type: ignore[union-attr]
            name = text[begin + 2 : self.at].lower()
            self.skip_space()
            if self.at >= len(text) or text[self.at] != ">":
                raise _HtmlError(f"Unclosed end tag at byte offset {self.byte_offset(begin)}")
            self.at += 1
            if not self.open:
                raise _HtmlError(f"Unexpected end tag at byte offset {self.byte_offset(begin)}")
            if name != self.open[-1]:
                raise _HtmlError(
                    f"Unmatched end tag at byte offset {self.byte_offset(begin)}, "
                    f'expected "</{self.open[-1]}>", found "</{name}>"'
                )
            self.open.pop()
            return
        self.at = _TAG_NAME.match(text, begin + 1).end()  # type: ignore[union-attr]
        name = text[begin + 1 : self.at].lower()
        if self.at >= len(text):
            raise _HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
        if name not in HTML_TAGS:
            raise _HtmlError(
                f'Unsupported start tag "{name}" at byte offset {self.byte_offset(begin)}'
            )
        attributes = self.attributes(name, begin)
        self.check_attributes(name, attributes, begin)
        self.open.append(name)

    def attributes(self, tag: str, begin: int) -> dict[str, str]:
        """The start tag's attributes, up to and past its ``>``."""
        text = self.text
        found: dict[str, str] = {}
        while True:
            before = self.at
            self.skip_space()
            if self.at >= len(text):
                raise _HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
            if text[self.at] == ">":
                self.at += 1
                return found
            if self.at == before:  # e.g. <b"x">: an attribute must follow a space
                raise _HtmlError(
                    f'Unexpected character in the tag "{tag}" at byte offset '
                    f"{self.byte_offset(self.at)}"
                )
            start = self.at
            self.at = _ATTRIBUTE_NAME.match(text, start).end()  # type: ignore[union-attr]
            name = text[start : self.at].lower()
            if not name:
                raise _HtmlError(
                    f'Empty attribute name in the tag "{tag}" at byte offset '
                    f"{self.byte_offset(start)}"
                )
            name_end = self.at
            self.skip_space()
            if self.at < len(text) and text[self.at] != "=":
                found[name] = ""  # an attribute without a value: <blockquote expandable>
                self.at = name_end
                continue
            if self.at >= len(text):
                raise _HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
            self.at += 1
            self.skip_space()
            if self.at >= len(text):
                raise _HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
            quote = text[self.at]
            if quote in "'\"":
                end = text.find(quote, self.at + 1)
                if end < 0:
                    raise _HtmlError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
                raw, self.at = text[self.at + 1 : end], end + 1
            else:
                end = self.at
                while end < len(text) and text[end] not in _SPACE + ">":
                    end += 1
                raw, self.at = text[self.at : end], end
            found[name] = _attribute_value(raw)

    def check_attributes(self, tag: str, attributes: dict[str, str], begin: int) -> None:
        """What a tag must carry: a link its href, a span its spoiler class, an emoji its id."""
        where = f"at byte offset {self.byte_offset(begin)}"
        if tag == "span" and attributes.get("class") != "tg-spoiler":
            raise _HtmlError(f'Tag "span" must have class "tg-spoiler" {where}')
        if tag == "a" and not attributes.get("href"):
            raise _HtmlError(f'Tag "a" must have a non-empty attribute "href" {where}')
        if tag == "tg-emoji" and not attributes.get("emoji-id", "").isdigit():
            raise _HtmlError(
                f"Custom emoji entity must contain a valid custom emoji identifier {where}"
            )


def utf16_length(text: str) -> int:
    """How Telegram measures a text: UTF-16 code units (a character past U+FFFF counts 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def parse_html(text: str) -> str:
    """The text a message shows for ``text`` in Telegram's HTML parse mode (tags dropped,
    entities decoded), or ValueError with Telegram's reason where Telegram would refuse it."""
    try:
        return _HtmlParser(text).parse()
    except _HtmlError as error:
        raise ValueError(str(error)) from None


def check_text(text: Any, parse_mode: Any) -> None:
    """Refuse what Telegram refuses: bad HTML in HTML mode (Telegram's own words after "can't
    parse entities: "), or a text that shows more than 4096 UTF-16 code units once parsed."""
    if not isinstance(text, str):
        return
    visible = text
    if parse_mode == "HTML":
        try:
            visible = _HtmlParser(text).parse()
        except _HtmlError as error:
            raise _ApiError(400, f"Bad Request: can't parse entities: {error}") from None
    if utf16_length(visible) > MESSAGE_MAX:
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
# Records for the benchmark (GET /bench/calls, GET /bench/details)
# --------------------------------------------------------------------------------------------

TEXT_KEEP = 48
_TEXT_ID = re.compile(r"#(\d+)")
_APPROVE = re.compile(r"^approve:(\d+)$")


def _record_chat(params: dict[str, Any]) -> int | None:
    chat = params.get("chat_id")
    return int(chat) if chat is not None and str(chat).lstrip("-").isdigit() else None


def _record_cbq(params: dict[str, Any]) -> str | None:
    cbq = params.get("callback_query_id")
    return str(cbq) if cbq is not None else None


def bench_call(call: Call) -> list[Any]:
    """``[t, method, chat_id, callback_query_id, text[:48]]``: one record of ``/bench/calls``."""
    params = call.params
    text = str(params.get("text") or "")[:TEXT_KEEP]
    return [call.at, call.method, _record_chat(params), _record_cbq(params), text]


def bench_detail(call: Call) -> list[Any]:
    """``[t, method, chat_id, message_id, callback_query_id, text_ids, button_ids, has_markup,
    text[:48]]``: one record of ``/bench/details`` (``text_ids`` are the numbers after ``#`` in
    the whole text, ``button_ids`` the request ids of the ``approve:<id>`` buttons)."""
    params = call.params
    full_text = str(params.get("text") or "")
    markup = params.get("reply_markup")
    return [
        call.at,
        call.method,
        _record_chat(params),
        call.message_id,
        _record_cbq(params),
        [int(found) for found in _TEXT_ID.findall(full_text)],
        _approve_ids(markup),
        markup is not None,
        full_text[:TEXT_KEEP],
    ]


def _approve_ids(markup: Any) -> list[int]:
    """The request ids of the ``approve:<id>`` buttons of an inline keyboard."""
    if not isinstance(markup, dict) or not isinstance(markup.get("inline_keyboard"), list):
        return []
    found = []
    for row in markup["inline_keyboard"]:
        for button in row if isinstance(row, list) else ():
            data = button.get("callback_data") if isinstance(button, dict) else None
            match = _APPROVE.match(data) if isinstance(data, str) else None
            if match:
                found.append(int(match.group(1)))
    return found


def _chat_member(
    user: dict[str, Any], status: str, *, can_invite: bool, is_member: bool
) -> dict[str, Any]:
    """A ChatMember of Telegram's shape for ``status`` (Owner, Administrator, Member,
    Restricted, Left, Banned)."""
    member: dict[str, Any] = {"user": user, "status": status}
    if status == "creator":
        member["is_anonymous"] = False
    elif status == "administrator":
        member.update(
            can_be_edited=False,
            is_anonymous=False,
            can_manage_chat=True,
            can_delete_messages=False,
            can_manage_video_chats=False,
            can_restrict_members=False,
            can_promote_members=False,
            can_change_info=False,
            can_invite_users=can_invite,
            can_post_stories=False,
            can_edit_stories=False,
            can_delete_stories=False,
        )
    elif status == "restricted":
        member.update(
            is_member=is_member,
            can_send_messages=False,
            can_send_audios=False,
            can_send_documents=False,
            can_send_photos=False,
            can_send_videos=False,
            can_send_video_notes=False,
            can_send_voice_notes=False,
            can_send_polls=False,
            can_send_other_messages=False,
            can_add_web_page_previews=False,
            can_change_info=False,
            can_invite_users=False,
            can_pin_messages=False,
            can_manage_topics=False,
            can_edit_tag=False,
            can_react_to_messages=False,
            until_date=0,
        )
    elif status == "kicked":
        member["until_date"] = 0
    return member


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------

_Result = Any  # a method's ``result``, or a pending one (an awaitable) for a long poll


class TelegramStandIn:
    """A Telegram Bot API stand-in on ``http://127.0.0.1:<port>``.

    ``port=0`` picks a free port at the first start; later restarts reuse it. ``clock``
    (seconds, like ``time.monotonic``) measures injected delays and long-poll timeouts: a test
    that gives a clock it moves itself decides when they run out, with no wall-clock waits.
    Every control method may be called from any thread.
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
        self._state = _State()
        self._next_update_id = 1
        self._life = threading.Lock()
        self._core: Core | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._changed: asyncio.Event | None = None
        self._methods = self._handlers()
        self._sandbox: Any = None  # a sosekni.standin.sandbox.Sandbox, when one is attached

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> TelegramStandIn:
        """Serve from a thread of this process with an event loop of its own (no-op if already
        serving). Returns ``self``."""
        with self._life:
            if self._core is not None:
                return self
            loop = new_loop()
            opened = threading.Event()
            failure: list[BaseException] = []

            def run() -> None:
                asyncio.set_event_loop(loop)
                try:
                    loop.run_until_complete(self.open())
                except BaseException as error:
                    failure.append(error)
                    opened.set()
                    loop.close()
                    return
                opened.set()
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            thread = threading.Thread(target=run, name="telegram-standin", daemon=True)
            thread.start()
            opened.wait()
            if failure:
                raise failure[0]
            self._thread = thread
            return self

    def stop(self) -> None:
        """Stop serving and cut open connections and pending answers; recorded state is kept."""
        with self._life:
            loop, thread = self._loop, self._thread
            if thread is None or loop is None:
                return
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = None

    async def open(self) -> int:
        """Listen on the running event loop (the process mode's; ``start()`` uses its own).
        Returns the port."""
        core = Core(self._handle)
        self._port = await core.open(self._host, self._port)
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._core = core
        return self._port

    async def close(self) -> None:
        """Stop listening on the running loop; recorded state is kept."""
        core, self._core = self._core, None
        if core is not None:
            await core.close()
        self._loop = None
        self._changed = None

    @property
    def running(self) -> bool:
        return self._core is not None

    def __enter__(self) -> TelegramStandIn:
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
            raise RuntimeError("the stand-in has no port yet: call start() first")
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
        self, predicate: Callable[[TelegramStandIn], bool]
    ) -> tuple[bool, BaseException | None]:
        try:
            return bool(predicate(self)), None
        except Exception as exc:
            return False, exc

    def _timeout_error(self, timeout: float, error: BaseException | None) -> AssertionError:
        reason = f" (last predicate error: {error!r})" if error is not None else ""
        return AssertionError(
            f"Telegram stand-in: condition not met within {timeout:g}s{reason}. "
            f"Recorded calls:\n{self.summary()}"
        )

    def wait_for(self, predicate: Callable[[TelegramStandIn], bool], timeout: float = 10) -> None:
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
        predicate: Callable[[TelegramStandIn], bool],
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
        with self._lock:
            if "update_id" in queued:
                update_id = int(queued["update_id"])
                self._next_update_id = max(self._next_update_id, update_id + 1)
            else:
                update_id = self._next_update_id
                self._next_update_id += 1
            queued["update_id"] = update_id
            self._state.updates.append(queued)
        self._notify()
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

    def set_bot_member(
        self, chat_id: int | str, status: str = "administrator", can_invite_users: bool = True
    ) -> None:
        """The bot's membership of the group ``chat_id`` (``administrator``, ``member``,
        ``left``, ``kicked``): what ``getChatMember`` answers for the bot and whether invite
        links may be created there. A chat never set is one Telegram does not show the bot."""
        with self._lock:
            self._state.members[chat_id] = (status, can_invite_users)

    def set_member(
        self, chat_id: int | str, user_id: int, status: str = "member", is_member: bool = True
    ) -> None:
        """What ``getChatMember`` answers for the user ``user_id`` (not the bot) in the group
        ``chat_id``: ``creator``, ``administrator``, ``member``, ``restricted`` (with
        ``is_member``), ``left`` or ``kicked``. A user never set has ``left``."""
        with self._lock:
            self._state.users[(chat_id, user_id)] = (status, is_member)

    def invite_links(self, chat_id: int | str | None = None) -> list[dict[str, Any]]:
        """The invite links created so far (of ``chat_id``), as Telegram returned them, with
        ``is_revoked`` as it is now."""
        with self._lock:
            return [
                dict(link)
                for link in self._state.invite_links.values()
                if chat_id is None or link["_chat_id"] == chat_id
            ]

    def add_join_request(self, chat_id: int | str, user_id: int) -> None:
        """Someone tapped "Request to join" in ``chat_id``: approve/decline may answer it."""
        with self._lock:
            self._state.join_requests[(chat_id, user_id)] = "pending"

    def join_request_state(self, chat_id: int | str, user_id: int) -> str | None:
        """``pending``, ``approved``, ``declined``, or None when there never was one."""
        with self._lock:
            return self._state.join_requests.get((chat_id, user_id))

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
        with self._lock:
            self._state = _State()
        self._notify()

    def bench_calls(self, since: int = 0) -> dict[str, Any]:
        """``GET /bench/calls?since=N``: ``{"total": T, "calls": [record, …]}``, the records
        from the ``since``-th on (see :func:`bench_call`)."""
        with self._lock:
            total = len(self._state.calls)
            recorded = self._state.calls[since:]
        return {"total": total, "calls": [bench_call(call) for call in recorded]}

    def bench_details(self, since: int = 0) -> dict[str, Any]:
        """``GET /bench/details?since=N``: as :meth:`bench_calls`, with :func:`bench_detail`."""
        with self._lock:
            total = len(self._state.calls)
            recorded = self._state.calls[since:]
        return {"total": total, "calls": [bench_detail(call) for call in recorded]}

    # ---- the sandbox's hooks ---------------------------------------------------------------

    def attach(self, sandbox: Any) -> None:
        """Serve ``sandbox`` (``/`` and ``/sandbox/...``) on this stand-in's port and tell it
        of every successful Bot API call (``sandbox.observe(method, params, result)``)."""
        self._sandbox = sandbox

    def next_message_id(self, chat_id: int | str) -> int:
        """A new message id in ``chat_id``: a person's message takes its number from the same
        sequence as the bot's, as in a Telegram chat."""
        with self._lock:
            message_id = self._state.last_message_id.get(chat_id, 0) + 1
            self._state.last_message_id[chat_id] = message_id
            return message_id

    def next_update_id(self) -> int:
        """A new update id, from the sequence ``push_update`` uses."""
        with self._lock:
            update_id = self._next_update_id
            self._next_update_id += 1
            return update_id

    def counters(self) -> tuple[int, dict[int | str, int]]:
        """The next update id and each chat's last message id (what :meth:`seed` restores)."""
        with self._lock:
            return self._next_update_id, dict(self._state.last_message_id)

    def seed(self, next_update_id: int, last_message_ids: dict[int | str, int]) -> None:
        """Continue the update ids and the chats' message ids of an earlier run: a bot whose
        database outlived that run takes a repeated update id for a repeated update (and
        ignores it), and a repeated message id for the same message."""
        with self._lock:
            self._next_update_id = max(self._next_update_id, next_update_id)
            for chat_id, message_id in last_message_ids.items():
                known = self._state.last_message_id.get(chat_id, 0)
                self._state.last_message_id[chat_id] = max(known, message_id)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop serving now (None while stopped)."""
        return self._loop

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> bool:
        """Run ``coroutine`` on the serving loop (call it on that loop) until it ends or the
        stand-in stops; False (and dropped) when the stand-in is not serving."""
        core = self._core
        if core is None:
            coroutine.close()
            return False
        core.spawn(coroutine)
        return True

    # ---- request handling (on the stand-in's event loop) ----------------------------------

    def _notify(self) -> None:
        """Wake the long polls: updates or the webhook changed (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            pass

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = asyncio.Event()
            changed.set()

    def _handle(
        self, http_method: str, path: str, query: str, content_type: str, body: bytes
    ) -> Answer | Awaitable[Answer | None]:
        if path.startswith("/bench/"):
            return self._bench(path, query)
        sandbox = self._sandbox
        if sandbox is not None and (path == "/" or path.startswith("/sandbox/")):
            return sandbox.handle(http_method, path, query, content_type, body)
        method = path
        prefix, _, rest = path.lstrip("/").partition("/")
        valid = bool(prefix.startswith("bot") and rest and "/" not in rest.rstrip("/"))
        if valid:
            method = canonical_method(rest.rstrip("/"))
        try:
            params = parse_params(query, content_type, body)
        except (ValueError, UnicodeDecodeError):
            return self._finish(method, {}, 400, None, "Bad Request: can't parse parameters")
        delay = self._delay_for(method)
        if delay > 0:
            return self._delayed(delay, prefix, valid, method, params)
        return self._answer(prefix, valid, method, params)

    async def _delayed(
        self, delay: float, prefix: str, valid: bool, method: str, params: dict[str, Any]
    ) -> Answer | None:
        # In short steps of the clock (no event marks the end of an injected clock's delay), so
        # such a clock decides when it ends; stop() cancels the wait and hangs up.
        deadline = self._clock() + delay
        while (remaining := deadline - self._clock()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(remaining, _TICK))
        answer = self._answer(prefix, valid, method, params)
        return answer if isinstance(answer, tuple) else await answer

    def _answer(
        self, prefix: str, valid: bool, method: str, params: dict[str, Any]
    ) -> Answer | Awaitable[Answer | None]:
        if not valid:
            return self._finish(method, params, 404, None, "Not Found")
        if prefix[len("bot") :] != self._token:
            return self._finish(method, params, 401, None, "Unauthorized")
        handler = self._methods.get(method)
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
            result = handler(params)
        except _ApiError as error:
            return self._finish(
                method, params, error.status, None, error.description, error.parameters
            )
        if isinstance(result, _Poll):
            return self._poll(result, method, params)
        return self._finish(method, params, 200, result)

    def _finish(
        self,
        method: str,
        params: dict[str, Any],
        status: int,
        result: Any,
        description: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> Answer:
        message_id = result.get("message_id") if isinstance(result, dict) else None
        with self._lock:
            self._state.calls.append(Call(method, params, time.time(), status, message_id))
        if status == HTTPStatus.OK:
            sandbox = self._sandbox
            if sandbox is not None:
                sandbox.observe(method, params, result)
            return status, _json({"ok": True, "result": result})
        return status, _json(_error_payload(status, description, parameters))

    def _bench(self, path: str, query: str) -> Answer:
        if path == "/bench/reset":
            self.reset()
            return 200, b'{"ok": true}'
        if path in ("/bench/calls", "/bench/details"):
            since = int(dict(parse_qsl(query)).get("since", 0))
            found = self.bench_calls(since) if path == "/bench/calls" else self.bench_details(since)
            return 200, json.dumps(found).encode()
        return 404, b'{"ok": false}'

    def _delay_for(self, method: str) -> float:
        with self._lock:
            delays = self._state.delays
            return delays.get(method, delays.get(None, 0.0))

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._state.faults:
                if fault.method is None or fault.method == method:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._state.faults.remove(fault)
                    return fault
        return None

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], _Result]]:
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
            "createChatInviteLink": self._create_chat_invite_link,
            "revokeChatInviteLink": self._revoke_chat_invite_link,
            "getChatMember": self._get_chat_member,
            "approveChatJoinRequest": self._approve_join_request,
            "declineChatJoinRequest": self._decline_join_request,
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
    def _true(params: dict[str, Any]) -> bool:
        return True

    @staticmethod
    def _empty_list(params: dict[str, Any]) -> list[Any]:
        return []

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
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

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
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

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: text must be non-empty")
        check_text(text, params.get("parse_mode"))
        # Like Telegram, an edit without reply_markup removes the inline keyboard.
        return self._edit(params, self._inline_markup(params), text)

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        return self._edit(params, self._inline_markup(params))

    def _bot_in(self, chat_id: int | str) -> tuple[str, bool]:
        """The bot's status in a group and its invite right, or Telegram's refusal."""
        with self._lock:
            member = self._state.members.get(chat_id)
        if member is None:
            raise _ApiError(400, "Bad Request: chat not found")
        if member[0] in ("left", "kicked"):
            kind = self._chat(chat_id)["type"]
            kind = "supergroup" if kind == "supergroup" else "group"
            raise _ApiError(403, f"Forbidden: bot is not a member of the {kind} chat")
        return member

    def _may_invite(self, params: dict[str, Any]) -> int | str:
        chat_id = self._chat_id(params)
        status, can_invite = self._bot_in(chat_id)
        if status != "creator" and not (status == "administrator" and can_invite):
            raise _ApiError(400, NO_INVITE_RIGHTS)
        return chat_id

    @staticmethod
    def _public_link(link: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in link.items() if not k.startswith("_")}

    def _create_chat_invite_link(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._may_invite(params)
        name = params.get("name")
        if name is not None and len(str(name)) > 32:
            raise _ApiError(400, "Bad Request: invite link name is too long")
        limit = params.get("member_limit")
        if limit is not None and not (isinstance(limit, int) and 1 <= limit <= 99999):
            raise _ApiError(400, "Bad Request: member limit must be between 1 and 99999")
        joins = params.get("creates_join_request") is True
        if joins and limit is not None:
            raise _ApiError(
                400, "Bad Request: member limit can't be specified for links requiring approval"
            )
        with self._lock:
            number = len(self._state.invite_links) + 1
            link: dict[str, Any] = {
                "invite_link": f"https://t.me/+standin{number:06d}"
                + zlib.crc32(f"{chat_id}:{number}".encode()).to_bytes(4).hex(),
                "creator": self.bot_user(),
                "creates_join_request": joins,
                "is_primary": False,
                "is_revoked": False,
            }
            if name:
                link["name"] = str(name)
            if isinstance(params.get("expire_date"), int):
                link["expire_date"] = params["expire_date"]
            if limit is not None:
                link["member_limit"] = limit
            self._state.invite_links[link["invite_link"]] = {**link, "_chat_id": chat_id}
        return link

    def _revoke_chat_invite_link(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._may_invite(params)
        with self._lock:
            link = self._state.invite_links.get(str(params.get("invite_link")))
            if link is None or link["_chat_id"] != chat_id:
                raise _ApiError(400, INVITE_HASH_EXPIRED)
            link["is_revoked"] = True
            return self._public_link(link)

    def _decide_join_request(self, params: dict[str, Any], outcome: str) -> bool:
        chat_id = self._chat_id(params)
        status, can_invite = self._bot_in(chat_id)
        if status != "creator" and not (status == "administrator" and can_invite):
            raise _ApiError(400, "Bad Request: CHAT_ADMIN_REQUIRED")
        user_id = params.get("user_id")
        if not isinstance(user_id, int):
            raise _ApiError(400, "Bad Request: invalid user_id specified")
        with self._lock:
            if self._state.join_requests.get((chat_id, user_id)) != "pending":
                raise _ApiError(400, REQUESTER_MISSING)
            self._state.join_requests[(chat_id, user_id)] = outcome
        return True

    def _approve_join_request(self, params: dict[str, Any]) -> bool:
        return self._decide_join_request(params, "approved")

    def _decline_join_request(self, params: dict[str, Any]) -> bool:
        return self._decide_join_request(params, "declined")

    def _get_chat_member(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        user_id = params.get("user_id")
        if not isinstance(user_id, int):
            raise _ApiError(400, "Bad Request: invalid user_id specified")
        status, can_invite = self._bot_in(chat_id)
        if user_id != self._bot_id:
            with self._lock:
                other, is_member = self._state.users.get((chat_id, user_id), ("left", False))
            user = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
            return _chat_member(user, other, can_invite=False, is_member=is_member)
        return _chat_member(self.bot_user(), status, can_invite=can_invite, is_member=True)

    def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = params.get("url")
        if url is None:
            raise _ApiError(400, 'Bad Request: parameter "url" is required')
        allowed = params.get("allowed_updates")
        max_connections = params.get("max_connections")
        with self._lock:
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
        self._notify()
        return True

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        with self._lock:
            self._state.webhook = _Webhook()
            self._state.webhook_error = None
            if params.get("drop_pending_updates") is True:
                self._state.updates.clear()
        self._notify()
        return True

    def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
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

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]] | _Poll:
        limit = params.get("limit")
        timeout = params.get("timeout")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        wait = 0.0
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            wait = min(max(float(timeout), 0.0), MAX_LONG_POLL)
        poll = _Poll(params.get("offset"), limit, self._clock() + wait)
        found = self._take_updates(poll, self._state) or []
        return found if found or wait <= 0 else poll

    def _take_updates(self, poll: _Poll, born: _State) -> list[dict[str, Any]] | None:
        """The updates a poll gets now; confirms (forgets) those below its offset. None when
        the stand-in was reset since the poll came (`born` is the state it came to)."""
        with self._lock:
            if self._state is not born:
                return None
            if self._state.webhook.url:
                raise _ApiError(409, GETUPDATES_CONFLICT)
            updates = self._state.updates
            if isinstance(poll.offset, int) and poll.offset < 0:
                updates = updates[poll.offset :]
                self._state.updates = updates
                poll.offset = None
            elif isinstance(poll.offset, int):
                updates = [u for u in updates if u["update_id"] >= poll.offset]
                self._state.updates = updates
            return [dict(update) for update in updates[: poll.limit]]

    async def _poll(self, poll: _Poll, method: str, params: dict[str, Any]) -> Answer:
        """Hold a long poll until an update comes or its timeout runs out on the clock.

        A reset ends a held poll with no updates and no record: it belongs to the world before
        the reset (a test's killed poller), which must neither take the next test's updates
        nor appear among its calls."""
        with self._lock:
            born = self._state
        while True:
            changed = self._changed
            try:
                found = self._take_updates(poll, born)
            except _ApiError as error:
                return self._finish(method, params, error.status, None, error.description)
            if found is None:
                return HTTPStatus.OK, _json({"ok": True, "result": []})
            remaining = poll.deadline - self._clock()
            if found or remaining <= 0 or changed is None:
                return self._finish(method, params, 200, found)
            try:
                async with asyncio.timeout(min(remaining, _TICK * 4)):
                    await changed.wait()
            except TimeoutError:
                pass


@dataclass
class _Poll:
    """A getUpdates call waiting for updates."""

    offset: Any
    limit: int
    deadline: float
