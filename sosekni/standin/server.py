"""The stand-in's HTTP core: asyncio + httptools, HTTP/1.1 keep-alive.

A threading ``http.server`` costs a thread and a pile of Python per request; this parses with
httptools on one event loop, so the stand-in stays far below the bot under test in CPU even
when the benchmark drives thousands of calls a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

import httptools

# One answer: the HTTP status and the JSON body; None hangs up without an answer.
Answer = tuple[int, bytes]
# What the application makes of a request (path, query, content type, body): an answer now,
# or an awaitable one (injected delays, long polls).
Handler = Callable[[str, str, str, bytes], "Answer | Awaitable[Answer | None]"]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _Connection(asyncio.Protocol):
    """One client connection; requests on it are answered in order (pipelining included)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[tuple[bytes, str, bytes, bool]] = deque()
        self.busy = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.body: list[bytes] = []
        self.content_type = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.core.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # A pending answer still runs to its end: a request Telegram got is handled even when
        # the client stopped waiting for it.
        self.core.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.queue.append(
            (self.url, self.content_type, b"".join(self.body), self.parser.should_keep_alive())
        )
        self._reset()
        self._drain()

    def _drain(self) -> None:
        while self.queue and not self.busy:
            url, content_type, body, keep = self.queue.popleft()
            path, _, query = url.decode("latin-1").partition("?")
            answer = self.core.handler(path, query, content_type, body)
            if isinstance(answer, tuple):
                self._write(answer, keep)
            else:
                self.busy = True
                self.core.spawn(self._later(answer, keep))

    async def _later(self, pending: Awaitable[Answer | None], keep: bool) -> None:
        answer = await pending
        if answer is None:
            self.abort()
            return
        self.busy = False
        self._write(answer, keep)
        self._drain()

    def _write(self, answer: Answer, keep: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status, payload = answer
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        transport.write(head + payload)
        if not keep:
            transport.close()


class Core:
    """A listening socket on one event loop and the connections and pending answers it has."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def open(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = any free port); returns the port."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=1024, reuse_address=True
        )
        return int(self.server.sockets[0].getsockname()[1])

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Stop listening, cut every connection and drop every pending answer."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for connection in list(self.connections):
            connection.abort()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the aborted transports report connection_lost


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed (it comes with Sanic), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_fast(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
