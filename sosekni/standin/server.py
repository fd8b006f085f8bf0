"""The stand-in's HTTP core: asyncio + httptools, HTTP/1.1 keep-alive.

A threading ``http.server`` costs a thread and a pile of Python per request; this parses with
httptools on one event loop, so the stand-in stays far below the bot under test in CPU even
when the benchmark drives thousands of calls a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools


@dataclass(frozen=True)
class Response:
    """An answer of another content type than JSON (the sandbox's page, its script and style).

    The Bot API's answers stay plain ``(status, json_bytes)`` tuples: the fast path the
    benchmark drives thousands of times a second builds no object per answer.
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # more header lines, e.g. a 405's Allow


@dataclass(frozen=True)
class Stream:
    """An answer written as it is produced (Server-Sent Events): the head at once, then each
    chunk of ``chunks`` as it comes, until the iterator ends, the client goes away or the
    stand-in stops. Sent with ``Connection: close`` and no length: the body ends with the
    connection, which every HTTP/1.1 client (and EventSource) understands."""

    chunks: AsyncIterator[bytes]
    content_type: str = "text/event-stream; charset=utf-8"
    status: int = 200


# One answer: the HTTP status and the JSON body (the fast path), a Response of another content
# type, or a Stream; None (from an awaitable) hangs up without an answer.
Answer = tuple[int, bytes] | Response | Stream
# What the application makes of a request (HTTP method, path, query, content type, body): an
# answer now, or an awaitable one (injected delays, long polls).
Handler = Callable[[str, str, str, str, bytes], "Answer | Awaitable[Answer | None]"]
# A stream whose client reads slower than it is written is cut past this many unsent bytes:
# the client reconnects and reloads (the sandbox's page does), the stand-in's memory stays
# bounded.
STREAM_BUFFER_MAX = 1 << 20


_host: contextvars.ContextVar[str] = contextvars.ContextVar("standin_host", default="")


def current_host() -> str:
    """The Host header of the request the handler is answering now, the one header its
    arguments leave out (the sandbox's page API checks it; call it from the handler itself,
    before any ``await``): the Handler signature stays the Bot API's fast five arguments."""
    return _host.get()


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
        self.queue: deque[tuple[str, bytes, str, str, bytes, bool]] = deque()
        self.busy = False
        self.streaming: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.body: list[bytes] = []
        self.content_type = ""
        self.host = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.core.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # A pending answer still runs to its end: a request Telegram got is handled even when
        # the client stopped waiting for it.
        self.core.connections.discard(self)
        # A stream, though, is for this client only: it ends when the client goes.
        if self.streaming is not None:
            self.streaming.cancel()

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
        lowered = name.lower()
        if lowered == b"content-type":
            self.content_type = value.decode("latin-1")
        elif lowered == b"host":
            self.host = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        body = b"".join(self.body)
        self.queue.append(
            (method, self.url, self.content_type, self.host, body, self.parser.should_keep_alive())
        )
        self._reset()
        self._drain()

    def _drain(self) -> None:
        while self.queue and not self.busy:
            method, url, content_type, host, body, keep = self.queue.popleft()
            path, _, query = url.decode("latin-1").partition("?")
            token = _host.set(host)
            try:
                answer = self.core.handler(method, path, query, content_type, body)
            finally:
                _host.reset(token)
            head = method == "HEAD"
            if isinstance(answer, tuple | Response):
                self._write(answer, keep, head)
            elif isinstance(answer, Stream):
                self.busy = True
                self.streaming = self.core.spawn(self._stream(answer))
            else:
                self.busy = True
                self.core.spawn(self._later(answer, keep, head))

    async def _later(self, pending: Awaitable[Answer | None], keep: bool, head: bool) -> None:
        answer = await pending
        if answer is None:
            self.abort()
            return
        if isinstance(answer, Stream):
            self.streaming = asyncio.current_task()
            await self._stream(answer)
            return
        self.busy = False
        self._write(answer, keep, head)
        self._drain()

    async def _stream(self, stream: Stream) -> None:
        """Write the stream's chunks until it ends, the client goes, the stand-in stops or
        the client lags more than STREAM_BUFFER_MAX bytes behind (write() never waits, so a
        client that does not read would otherwise grow the buffer without end); then close
        the connection (which ends the answer's body)."""
        transport = self.transport
        chunks = stream.chunks
        try:
            if transport is None or transport.is_closing():
                return
            transport.write(
                (
                    f"HTTP/1.1 {stream.status} {_reason(stream.status)}\r\n"
                    f"Content-Type: {stream.content_type}\r\n"
                    "Cache-Control: no-cache\r\n"
                    "X-Accel-Buffering: no\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
            )
            async for chunk in chunks:
                if transport.is_closing():
                    break
                transport.write(chunk)
                if transport.get_write_buffer_size() > STREAM_BUFFER_MAX:
                    transport.abort()  # close() would still send the megabyte first
                    break
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            if transport is not None:
                transport.close()

    def _write(self, answer: tuple[int, bytes] | Response, keep: bool, head_only: bool) -> None:
        """Write one answer; to a HEAD request its head only, with the length of the GET's
        body (a body there would be read as the start of the next answer)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        extra = ""
        if isinstance(answer, Response):
            status, payload, content_type = answer.status, answer.body, answer.content_type
            extra = "".join(f"{name}: {value}\r\n" for name, value in answer.headers)
        else:
            (status, payload), content_type = answer, "application/json"
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"{extra}"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        transport.write(head if head_only else head + payload)
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

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coroutine`` on the running loop until it ends or :meth:`close` cancels it."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

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
