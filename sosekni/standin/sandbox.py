"""The sandbox's side of the stand-in: people who chat with the bot from a web page.

`sosekni-ops sandbox` runs the real bot against the one Telegram stand-in; this module gives
the stand-in a client (Anna, 1001) and 1-10 administrators (Boris 101, Vera 102, …), keeps
every chat between them and the bot (the bot's messages as it sent and edited them, the
people's as they typed them), and serves the page and its API on the stand-in's own port.
The page (``web/``) and this module share one contract:

* ``GET /`` (``web/index.html``), ``/sandbox/app.js``, ``/sandbox/app.css``;
* ``GET /sandbox/state``: ``{"ok", "bot", "people": [Person], "chats": {"<id>": [Message]}}``;
* ``POST /sandbox/send`` ``{"person_id", "text", "reply_to"}``, ``POST /sandbox/press``
  ``{"person_id", "message_id", "callback_data"}``, ``POST /sandbox/person`` ``{"person_id",
  "first_name"?, "username"?, "language_code"?}``; a bad one is a 400 ``{"ok": false,
  "error"}`` and changes nothing;
* ``GET /sandbox/events``, Server-Sent Events: ``message``, ``edit``, ``toast`` (a callback
  answer's text, for the person who pressed), ``person``, ``delivery`` (each webhook
  attempt), a ``: ping`` comment every 15 s.

A Message is ``{"message_id", "chat_id", "from_bot", "html", "buttons", "reply_to", "edited",
"date"}``; ``html`` is what Telegram would render: the bot's text as sent with parse_mode
HTML (the stand-in has checked its tags), anything else HTML-escaped here.

What a person does becomes an Update that is POSTed, in order, to the bot's webhook with
Telegram's secret header (:meth:`Sandbox.deliver_to`, a control method, not ``setWebhook``,
which stays HTTPS-only as Telegram's is); a refused or failed delivery is tried again after
1, 2, 4 … 30 seconds as Telegram does, and each attempt is announced.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import logging
import re
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sosekni.standin.botapi import MESSAGE_MAX, TelegramStandIn, parse_html, utf16_length
from sosekni.standin.server import Answer, Response, Stream, current_host

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
CLIENT_ID = 1001
FIRST_ADMIN_ID = 101
ADMIN_NAMES = ("Boris", "Vera", "Gleb", "Daria", "Elena", "Fedor", "Galina", "Igor", "Kira", "Lev")
MAX_ADMINS = len(ADMIN_NAMES)
PING_S = 15.0
DELIVERY_TIMEOUT_S = 30.0
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")
# What Telegram marks as a bot_command at the start of a message: "/" and 1-32 of these
# characters, maybe "@botname"; not "/", not "/ hi".
_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")
# Events a subscriber may have waiting: past it the page is behind for good, its stream is
# closed (it reconnects and reloads the state) rather than the queue growing without end.
SUBSCRIBER_QUEUE_MAX = 1000
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/sandbox/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/sandbox/app.css": ("app.css", "text/css; charset=utf-8"),
}
PLACEHOLDER = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SOSenki sandbox</title></head>
<body><h1>SOSenki sandbox</h1>
<p>The page is not here (sosekni/standin/web/index.html is missing); the sandbox's API is:
<code>GET /sandbox/state</code>, <code>POST /sandbox/send</code>,
<code>POST /sandbox/press</code>, <code>POST /sandbox/person</code>,
<code>GET /sandbox/events</code>.</p></body></html>
"""


class _Subscriber:
    """One open ``/sandbox/events``: its bounded queue, and whether it fell behind."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(SUBSCRIBER_QUEUE_MAX)
        self.overflowed = False


class BadInput(Exception):
    """A request of the page the sandbox refuses (400 with this one line); nothing changed."""


@dataclass
class Person:
    """Someone in a private chat with the bot; the chat's id is the person's id."""

    id: int
    first_name: str
    username: str | None
    language_code: str
    role: str  # "client" or "admin"

    def public(self) -> dict[str, Any]:
        """The contract's Person."""
        return {
            "id": self.id,
            "first_name": self.first_name,
            "username": self.username,
            "language_code": self.language_code,
            "role": self.role,
        }

    def user(self) -> dict[str, Any]:
        """The person as a Telegram ``User``."""
        found: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.username:
            found["username"] = self.username
        found["language_code"] = self.language_code
        return found

    def chat(self) -> dict[str, Any]:
        """The private chat with the person as a Telegram ``Chat``."""
        found: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.username:
            found["username"] = self.username
        return found


def default_people(admins: int) -> list[Person]:
    """Anna the client and ``admins`` administrators (Boris 101, Vera 102, …)."""
    if not 1 <= admins <= MAX_ADMINS:
        raise ValueError(f"admins must be 1..{MAX_ADMINS}")
    people = [Person(CLIENT_ID, "Anna", "anna", "en", "client")]
    for number, name in enumerate(ADMIN_NAMES[:admins]):
        people.append(Person(FIRST_ADMIN_ID + number, name, name.lower(), "en", "admin"))
    return people


@dataclass
class _Kept:
    """One message of a chat: the contract's Message and Telegram's Message of it."""

    public: dict[str, Any]
    telegram: dict[str, Any]


def _shown(text: str, parse_mode: Any) -> tuple[str, str]:
    """A bot's text as the page shows it (HTML) and as Telegram keeps it as the message's
    ``text`` (the HTML's visible characters); the stand-in has already accepted its HTML."""
    if parse_mode == "HTML":
        return text, parse_html(text)
    return html.escape(text, quote=False), text


def _buttons(markup: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(markup, dict) or not isinstance(markup.get("inline_keyboard"), list):
        return []
    rows = []
    for row in markup["inline_keyboard"]:
        if not isinstance(row, list):
            continue
        rows.append(
            [
                {
                    "text": str(button.get("text", "")),
                    "callback_data": button.get("callback_data"),
                    "url": button.get("url"),
                }
                for button in row
                if isinstance(button, dict)
            ]
        )
    return rows


def _reply_id(params: dict[str, Any]) -> int | None:
    reply = params.get("reply_parameters")
    if isinstance(reply, dict) and isinstance(reply.get("message_id"), int):
        return int(reply["message_id"])
    found = params.get("reply_to_message_id")
    return found if isinstance(found, int) else None


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _bad(error: str, status: int = 400) -> Answer:
    return status, _json({"ok": False, "error": error})


def _not_allowed(allow: str) -> Answer:
    return Response(
        405, _json({"ok": False, "error": "method not allowed"}), headers=(("Allow", allow),)
    )


def _int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(f"{name} must be an integer")
    return value


class Sandbox:
    """The people, their chats with the bot, the page's API and the webhook delivery.

    Attach it to a :class:`TelegramStandIn` before starting it (the constructor does); every
    request to the page's API runs on the stand-in's event loop. ``backoff`` is the first and
    the longest wait between two delivery attempts (Telegram's: 1 and 30 seconds; a test
    shortens them). ``counters`` is a file that keeps the update ids and the chats' message
    ids from one run to the next (:meth:`TelegramStandIn.seed`), for a bot whose database is
    kept: ids that started again at 1 would be taken for updates and messages it has seen.
    A file that cannot be read raises ValueError naming it.
    """

    def __init__(
        self,
        standin: TelegramStandIn,
        admins: int = 2,
        *,
        web_dir: Path = WEB_DIR,
        backoff: tuple[float, float] = (1.0, 30.0),
        counters: Path | None = None,
    ) -> None:
        self._standin = standin
        self._web_dir = web_dir
        self._backoff = backoff
        self._lock = threading.RLock()
        self._people = {person.id: person for person in default_people(admins)}
        self._chats: dict[int, list[_Kept]] = {person_id: [] for person_id in self._people}
        self._index: dict[tuple[int, int], _Kept] = {}
        self._presses: dict[str, int] = {}  # callback query id -> the person who pressed
        self._press_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._subscribers: set[_Subscriber] = set()
        self._pending: deque[dict[str, Any]] = deque()  # updates not yet delivered, in order
        self._target: tuple[str, str] | None = None  # webhook URL, secret
        self._delivering = False
        self._wakeup: asyncio.Event | None = None
        # The latest deliveries' outcomes (tests read them; bounded: a bot that is down is
        # tried every 30 s for as long as the sandbox runs).
        self.attempts: deque[dict[str, Any]] = deque(maxlen=1000)
        self._run = secrets.token_hex(4)  # callback query ids differ from an earlier run's
        self._counters = counters
        self._save_warned = False
        if counters is not None:
            self._load_counters(counters)
        standin.attach(self)

    def _load_counters(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            update_id = int(saved["update_id"])
            message_ids = {int(chat): int(last) for chat, last in saved["message_ids"].items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"cannot read the sandbox's counters {path}: {error}") from None
        self._standin.seed(update_id, message_ids)

    def _save_counters(self) -> None:
        """Write the ids used so far (atomically: a killed sandbox leaves the old or the new)."""
        path = self._counters
        if path is None:
            return
        update_id, message_ids = self._standin.counters()
        saved = {
            "update_id": update_id,
            "message_ids": {str(chat): last for chat, last in message_ids.items()},
        }
        with self._lock:
            partial = path.with_name(path.name + ".tmp")
            try:
                partial.write_text(json.dumps(saved), encoding="utf-8")
                partial.replace(path)
            except OSError as error:
                # A full disk or a read-only directory costs the next run its ids, not this
                # run its answers (the Bot API call that got here is already recorded).
                if not self._save_warned:
                    self._save_warned = True
                    log.warning(
                        "cannot save the sandbox's counters to %s (%s); going on without",
                        path,
                        error.strerror or type(error).__name__,
                    )

    # ---- control ---------------------------------------------------------------------------

    def deliver_to(self, url: str, secret: str) -> None:
        """POST every update (queued or to come) to ``url`` with ``secret`` in
        ``X-Telegram-Bot-Api-Secret-Token``; any thread may call it."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the sandbox delivers to a local http:// URL")
        with self._lock:
            self._target = (url, secret)
        self._poke()

    def people(self) -> list[Person]:
        with self._lock:
            return list(self._people.values())

    def chat(self, person_id: int) -> list[dict[str, Any]]:
        """The contract's Messages of one person's chat, oldest first."""
        with self._lock:
            return [dict(kept.public) for kept in self._chats.get(person_id, [])]

    def subscriber_count(self) -> int:
        """How many ``/sandbox/events`` streams are open (a lagging one is dropped)."""
        with self._lock:
            return len(self._subscribers)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    # ---- what the bot does (from the stand-in, on its loop) --------------------------------

    def observe(self, method: str, params: dict[str, Any], result: Any) -> None:
        """Keep the bot's messages and edits to the people's chats; a callback answer with a
        text becomes a toast for the person who pressed.

        Never raises: the stand-in calls it on its way to answering a Bot API call it has
        already recorded, and a bot that got no answer would send again (a double).
        """
        try:
            self._observe(method, params, result)
        except Exception:
            log.exception("the sandbox could not keep the bot's %s", method)

    def _observe(self, method: str, params: dict[str, Any], result: Any) -> None:
        if method == "sendMessage" and isinstance(result, dict):
            self._bot_sent(params, result)
        elif method in ("editMessageText", "editMessageReplyMarkup") and isinstance(result, dict):
            self._bot_edited(method, params, result)
        elif method == "answerCallbackQuery":
            with self._lock:
                person_id = self._presses.pop(str(params.get("callback_query_id")), None)
            text = params.get("text")
            if person_id is not None and isinstance(text, str) and text:
                alert = params.get("show_alert") is True
                self._publish("toast", {"chat_id": person_id, "text": text, "show_alert": alert})

    def _bot_sent(self, params: dict[str, Any], result: dict[str, Any]) -> None:
        chat_id = result.get("chat", {}).get("id")
        with self._lock:
            if chat_id not in self._people:
                return
            shown_html, plain = _shown(str(result.get("text", "")), params.get("parse_mode"))
            reply_to = _reply_id(params)
            if reply_to is not None and (chat_id, reply_to) not in self._index:
                reply_to = None
            public = {
                "message_id": result["message_id"],
                "chat_id": chat_id,
                "from_bot": True,
                "html": shown_html,
                "buttons": _buttons(result.get("reply_markup")),
                "reply_to": reply_to,
                "edited": False,
                "date": int(result.get("date", time.time())),
            }
            telegram = {**result, "text": plain}
            kept = _Kept(public, telegram)
            self._chats[chat_id].append(kept)
            self._index[(chat_id, result["message_id"])] = kept
            shown = dict(public)
        self._save_counters()
        self._publish("message", {"chat_id": chat_id, "message": shown})

    def _bot_edited(self, method: str, params: dict[str, Any], result: dict[str, Any]) -> None:
        chat_id = result.get("chat", {}).get("id")
        with self._lock:
            kept = self._index.get((chat_id, result.get("message_id")))  # type: ignore[arg-type]
            if kept is None:  # not this run's message (or not a person's chat)
                return
            public = dict(kept.public)
            telegram = {**result}
            if method == "editMessageText":
                public["html"], telegram["text"] = _shown(
                    str(result.get("text", "")), params.get("parse_mode")
                )
            else:
                telegram["text"] = kept.telegram.get("text", "")
            public["buttons"] = _buttons(result.get("reply_markup"))
            public["edited"] = True
            kept.public, kept.telegram = public, telegram
            shown = dict(public)
        self._publish("edit", {"chat_id": chat_id, "message": shown})

    # ---- the page's API (on the stand-in's loop) -------------------------------------------

    def handle(
        self, http_method: str, path: str, query: str, content_type: str, body: bytes
    ) -> Answer:
        """Answer one request for ``/`` or ``/sandbox/...`` (its Host from
        :func:`current_host`)."""
        if self._pending and not self._delivering:  # the stand-in was stopped and started
            self._wake()
        if not self._host_allowed(current_host()):
            # DNS rebinding: a web site whose name now points at 127.0.0.1 reaches this port
            # from the operator's browser, but with its own name in Host.
            return _bad("this sandbox answers to 127.0.0.1 and localhost only", 421)
        if path in _STATIC:
            if http_method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            return self._static(path)
        if path == "/sandbox/events":
            if http_method != "GET":
                return _not_allowed("GET")
            return Stream(self._events())
        if path == "/sandbox/state":
            if http_method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            return 200, _json(self.state())
        actions = {
            "/sandbox/send": self.send,
            "/sandbox/press": self.press,
            "/sandbox/person": self.change_person,
        }
        action = actions.get(path)
        if action is None:
            return _bad("not found", 404)
        if http_method != "POST":
            return _not_allowed("POST")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            # A form of another site can POST text/plain here without asking; JSON needs a
            # CORS preflight, which this server never grants.
            return _bad("the body must be sent as Content-Type: application/json", 415)
        try:
            try:
                request = json.loads(body.decode("utf-8")) if body else None
            except (ValueError, UnicodeDecodeError):
                raise BadInput("the body must be a JSON object") from None
            if not isinstance(request, dict):
                raise BadInput("the body must be a JSON object")
            return 200, _json({"ok": True, **action(request)})
        except BadInput as error:
            return _bad(str(error))

    def _host_allowed(self, host: str) -> bool:
        port = self._standin.port
        return host.lower() in (f"127.0.0.1:{port}", f"localhost:{port}")

    def _static(self, path: str) -> Answer:
        name, content_type = _STATIC[path]
        try:
            data = (self._web_dir / name).read_bytes()
        except OSError:
            if path != "/":
                return _bad("not found", 404)
            data = PLACEHOLDER
        return Response(200, data, content_type)

    def state(self) -> dict[str, Any]:
        """``GET /sandbox/state``."""
        bot = self._standin.bot_user()
        with self._lock:
            return {
                "ok": True,
                "bot": {
                    "id": bot["id"],
                    "username": bot["username"],
                    "first_name": bot["first_name"],
                },
                "people": [person.public() for person in self._people.values()],
                "chats": {
                    str(person_id): [dict(kept.public) for kept in chat]
                    for person_id, chat in self._chats.items()
                },
            }

    def _person(self, request: dict[str, Any]) -> Person:
        person_id = _int(request, "person_id")
        person = self._people.get(person_id)
        if person is None:
            raise BadInput(f"no person {person_id}")
        return person

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /sandbox/send``: the person's message, kept and delivered as an Update."""
        text = request.get("text")
        reply_to = request.get("reply_to")
        with self._lock:
            person = self._person(request)
            if not isinstance(text, str) or not text.strip():
                raise BadInput("text must be a non-empty string")
            if utf16_length(text) > MESSAGE_MAX:  # Telegram counts UTF-16 units
                raise BadInput(f"text is longer than {MESSAGE_MAX} characters (UTF-16 units)")
            replied = None
            if reply_to is not None:
                if not isinstance(reply_to, int) or isinstance(reply_to, bool):
                    raise BadInput("reply_to must be a message id or null")
                replied = self._index.get((person.id, reply_to))
                if replied is None:
                    raise BadInput(f"no message {reply_to} in {person.first_name}'s chat")
            message_id = self._standin.next_message_id(person.id)
            now = int(time.time())
            telegram: dict[str, Any] = {
                "message_id": message_id,
                "from": person.user(),
                "chat": person.chat(),
                "date": now,
                "text": text,
            }
            command_match = _COMMAND.match(text)
            if command_match is not None:
                length = len(command_match.group(0))  # ASCII: UTF-16 units = characters
                telegram["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
            if replied is not None:
                # As Telegram sends it: one level (no reply_to_message of its own).
                shown_replied = self._as_delivered(replied, person)
                shown_replied.pop("reply_to_message", None)
                telegram["reply_to_message"] = shown_replied
            public = {
                "message_id": message_id,
                "chat_id": person.id,
                "from_bot": False,
                "html": html.escape(text, quote=False),
                "buttons": [],
                "reply_to": reply_to,
                "edited": False,
                "date": now,
            }
            kept = _Kept(public, telegram)
            self._chats[person.id].append(kept)
            self._index[(person.id, message_id)] = kept
            update_id = self._enqueue({"message": telegram})
            shown = dict(public)
        self._publish("message", {"chat_id": person.id, "message": shown})
        return {"update_id": update_id, "message": shown}

    def press(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /sandbox/press``: a tap on a button of a bot's message in the person's chat."""
        data = request.get("callback_data")
        with self._lock:
            person = self._person(request)
            message_id = _int(request, "message_id")
            if not isinstance(data, str) or not data:
                raise BadInput("callback_data must be a non-empty string")
            kept = self._index.get((person.id, message_id))
            if kept is None:
                raise BadInput(f"no message {message_id} in {person.first_name}'s chat")
            found = any(
                button.get("callback_data") == data
                for row in kept.public["buttons"]
                for button in row
            )
            if not found:
                raise BadInput(f"message {message_id} has no button {data!r}")
            query_id = f"{self._run}{person.id}-{next(self._press_ids)}"
            self._presses[query_id] = person.id
            update_id = self._enqueue(
                {
                    "callback_query": {
                        "id": query_id,
                        "from": person.user(),
                        "message": self._as_delivered(kept, person),
                        "chat_instance": str(zlib.crc32(f"sandbox:{person.id}".encode())),
                        "data": data,
                    }
                }
            )
        return {"update_id": update_id}

    @staticmethod
    def _as_delivered(kept: _Kept, person: Person) -> dict[str, Any]:
        """A kept message as an Update carries it: in the person's private chat as it is now
        (the stand-in's own record of the bot's message knows only the chat's id and type),
        and a message it replies to without that one's own reply."""
        message = {**kept.telegram, "chat": person.chat()}
        inner = message.get("reply_to_message")
        if isinstance(inner, dict):
            message["reply_to_message"] = {
                key: value for key, value in inner.items() if key != "reply_to_message"
            }
        return message

    def change_person(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /sandbox/person``: another name, username or language (all checked first)."""
        with self._lock:
            person = self._person(request)
            changes: dict[str, Any] = {}
            if "first_name" in request:
                name = request["first_name"]
                if not isinstance(name, str) or not name.strip():
                    raise BadInput("first_name must be a non-empty string")
                if len(name) > 64:
                    raise BadInput("first_name is longer than 64 characters")
                changes["first_name"] = name.strip()
            if "username" in request:
                username = request["username"]
                if username == "":
                    username = None
                if username is not None and (
                    not isinstance(username, str) or not _USERNAME.fullmatch(username)
                ):
                    raise BadInput("username must be 1-32 of A-Z a-z 0-9 _, or null")
                changes["username"] = username
            if "language_code" in request:
                language = request["language_code"]
                if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
                    raise BadInput("language_code must look like en, ru or pt-BR")
                changes["language_code"] = language
            for name, value in changes.items():
                setattr(person, name, value)
            shown = person.public()
        self._publish("person", shown)
        return {"person": shown}

    # ---- live events -----------------------------------------------------------------------

    def _publish(self, event: str, data: dict[str, Any]) -> None:
        """Announce an event to every open ``/sandbox/events`` (from any thread)."""
        with self._lock:
            chunk = (
                f"id: {next(self._event_ids)}\nevent: {event}\n"
                f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
            ).encode()
            subscribers = list(self._subscribers)
        loop = self._standin.loop
        if loop is None or not subscribers:
            return

        def put() -> None:
            for subscriber in subscribers:
                if subscriber.overflowed:
                    continue
                try:
                    subscriber.queue.put_nowait(chunk)
                except asyncio.QueueFull:
                    subscriber.overflowed = True  # its stream ends; the page reconnects
                    with self._lock:
                        self._subscribers.discard(subscriber)

        if _running_loop() is loop:
            put()
        else:
            try:
                loop.call_soon_threadsafe(put)
            except RuntimeError:  # the loop closed meanwhile: nobody listens
                pass

    async def _events(self) -> AsyncIterator[bytes]:
        subscriber = _Subscriber()
        with self._lock:
            self._subscribers.add(subscriber)
        try:
            yield b"retry: 2000\n: connected\n\n"
            while not subscriber.overflowed:
                try:
                    chunk = await asyncio.wait_for(subscriber.queue.get(), PING_S)
                except TimeoutError:
                    chunk = b": ping\n\n"
                if subscriber.overflowed:
                    break
                yield chunk
        finally:
            with self._lock:
                self._subscribers.discard(subscriber)

    # ---- webhook delivery ------------------------------------------------------------------

    def _enqueue(self, update: dict[str, Any]) -> int:
        update_id = self._standin.next_update_id()
        with self._lock:
            self._pending.append({"update_id": update_id, **update})
        self._save_counters()
        self._poke()
        return update_id

    def _poke(self) -> None:
        """Wake the delivery (starting it on the stand-in's loop if it is not running)."""
        loop = self._standin.loop
        if loop is None:
            return
        if _running_loop() is loop:
            self._wake()
            return
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            pass

    def _wake(self) -> None:
        if not self._delivering:
            self._delivering = self._standin.spawn(self._deliver())
        if self._wakeup is not None:
            self._wakeup.set()

    async def _deliver(self) -> None:
        """Deliver the queued updates one at a time, in order, each until the bot takes it."""
        try:
            while True:
                self._wakeup = asyncio.Event()
                with self._lock:
                    target = self._target
                    update = self._pending[0] if self._pending else None
                if target is None or update is None:
                    await self._wakeup.wait()
                    continue
                failures = 0
                body = _json(update)
                while True:
                    status, error = await _post(target[0], target[1], body)
                    ok = status is not None and 200 <= status < 300
                    outcome = {
                        "update_id": update["update_id"],
                        "ok": ok,
                        "status": status,
                        "error": error,
                    }
                    with self._lock:
                        self.attempts.append(outcome)
                    self._publish("delivery", outcome)
                    if ok:
                        self._standin.clear_webhook_error()
                        break
                    self._standin.set_webhook_error(
                        error or f"Wrong response from the webhook: {status}"
                    )
                    first, longest = self._backoff
                    await asyncio.sleep(min(first * 2**failures, longest))
                    failures += 1
                    with self._lock:
                        target = self._target or target
                with self._lock:
                    if self._pending and self._pending[0] is update:
                        self._pending.popleft()
        finally:
            self._delivering = False


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _post(url: str, secret: str, body: bytes) -> tuple[int | None, str | None]:
    """POST ``body`` as JSON to a local ``http://`` URL: (status, None) or (None, error)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Telegram-Bot-Api-Secret-Token: {secret}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    writer = None
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head + body)
            await writer.drain()
            line = await reader.readline()
            await reader.read()  # the rest of the answer, until the server closes
        fields = line.decode("latin-1").split()
        if len(fields) < 2 or not fields[1].isdigit():
            return None, "Wrong response from the webhook: no HTTP status"
        return int(fields[1]), None
    except TimeoutError:
        return None, "Timeout expired"
    except OSError as error:
        return None, f"Connection failed: {error.strerror or type(error).__name__}"
    finally:
        if writer is not None:
            writer.close()
