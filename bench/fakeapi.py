"""A lean fake Telegram Bot API for load: asyncio + httptools, HTTP/1.1 keep-alive, uvloop.

It answers every Bot API call the bot makes (getMe, sendMessage, editMessageText,
answerCallbackQuery, setWebhook, …) at once with a plausible result, and records for each call
the arrival time (``time.time()``), the method, the chat id, the callback query id and the
first characters of the text. The benchmark reads the records over HTTP:

* ``GET /bench/calls?since=N`` → ``{"total": T, "calls": [[t, method, chat_id, cbq_id, text], …]}``
* ``GET /bench/details?since=N`` → ``{"total": T, "calls": [[t, method, chat_id, message_id,
  cbq_id, text_ids, button_ids, has_markup, text], …]}``: the same calls, one record each in
  the same order, plus the message_id answered for a sendMessage (or the one edited), the
  numbers after ``#`` in the whole text (``text_ids``), the request ids of the
  ``approve:<id>`` buttons of ``reply_markup`` (``button_ids``) and whether a reply_markup
  was given at all;
* ``POST /bench/reset`` → forget every record.

A sendMessage gets the next message_id of its chat (1, 2, 3 … per chat, as Telegram numbers
a private chat's messages); an edit answers with the message_id it was given.

Run: ``python -m bench.fakeapi --port 8081`` (prints ``listening on PORT`` once ready).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

import httptools

BOT_ID = 123456
BOT_USER = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": "SOSenki Test",
    "username": "SoSenkiTestBot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
TEXT_KEEP = 48
_TEXT_ID = re.compile(r"#(\d+)")
_APPROVE = re.compile(r"^approve:(\d+)$")

Detail = tuple[float, str, int | None, int | None, str | None, list[int], list[int], bool, str]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str, int | None, str | None, str]] = []
        self.details: list[Detail] = []
        self.message_ids: dict[int | None, int] = {}

    def answer(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        now = time.time()
        if path.startswith("/bench/"):
            return self._bench(path, body)
        method = path.rsplit("/", 1)[-1]
        params = _params(body, content_type)
        chat = params.get("chat_id")
        chat_id = int(chat) if chat is not None and str(chat).lstrip("-").isdigit() else None
        full_text = str(params.get("text") or "")
        text = full_text[:TEXT_KEEP]
        cbq = params.get("callback_query_id")
        cbq_id = str(cbq) if cbq is not None else None
        self.calls.append((now, method, chat_id, cbq_id, text))
        lower = method.lower()
        result: Any = True
        message_id: int | None = None
        if lower == "getme":
            result = BOT_USER
        elif lower in ("sendmessage", "editmessagetext"):
            given = str(params.get("message_id") or "")
            if lower == "editmessagetext" and given.isdigit():
                message_id = int(given)
            else:
                message_id = self.message_ids.get(chat_id, 0) + 1
                self.message_ids[chat_id] = message_id
            result = {
                "message_id": int(message_id),
                "date": int(now),
                "chat": {"id": chat_id or 0, "type": "private"},
                "from": BOT_USER,
                "text": str(params.get("text") or ""),
            }
        elif lower == "getwebhookinfo":
            result = {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        elif lower == "getupdates":
            result = []
        markup = params.get("reply_markup")
        self.details.append(
            (
                now,
                method,
                chat_id,
                message_id,
                cbq_id,
                [int(found) for found in _TEXT_ID.findall(full_text)],
                _approve_ids(markup),
                markup is not None,
                text,
            )
        )
        return 200, json.dumps({"ok": True, "result": result}).encode()

    def _bench(self, path: str, body: bytes) -> tuple[int, bytes]:
        route, _, query = path.partition("?")
        if route == "/bench/reset":
            self.calls = []
            self.details = []
            self.message_ids = {}
            return 200, b'{"ok": true}'
        if route in ("/bench/calls", "/bench/details"):
            since = int(dict(parse_qsl(query)).get("since", 0))
            found = self.calls if route == "/bench/calls" else self.details
            return 200, json.dumps({"total": len(found), "calls": found[since:]}).encode()
        return 404, b'{"ok": false}'


def _approve_ids(markup: Any) -> list[int]:
    """The request ids of the ``approve:<id>`` buttons of an inline keyboard."""
    if isinstance(markup, str):
        try:
            markup = json.loads(markup)
        except ValueError:
            return []
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


def _params(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.startswith("application/json"):
        try:
            found = json.loads(body)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}
    if content_type.startswith("multipart/"):
        return {}  # the bot sends no files
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class Connection(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.body: list[bytes] = []
        self.content_type = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value.decode("latin-1").lower()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status, payload = self.recorder.answer(
            self.url.decode("latin-1"), b"".join(self.body), self.content_type
        )
        keep = self.parser.should_keep_alive()
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        if self.transport is not None:
            self.transport.write(head + payload)
            if not keep:
                self.transport.close()
        self._reset()


async def serve(host: str, port: int) -> None:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(recorder), host, port, backlog=1024)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def run_fast(main: Any) -> None:
    """Run a coroutine on uvloop when it is installed (it comes with Sanic), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
    else:
        uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        run_fast(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
