"""The load generator: a separate process POSTing a realistic mix of Update JSON to a webhook.

It speaks raw HTTP/1.1 over ``connections`` keep-alive sockets (Telegram itself uses up to 40
per webhook), either at a fixed offered rate (open loop: each update has a scheduled send
time and latency is counted from it, so a slow server cannot hide queueing) or at full speed
(closed loop: every connection sends its next update as soon as the previous one is answered).

The mix (weights in ``MIX``), built so every client chat gets at most three messages (the
sender's per-chat limit is 1/s with a burst of 3, so end-to-end latency measures the pipeline,
not that limit):

* ``request``: ``/request`` from a new client → "has been received" to that client;
* ``duplicate``: a second ``/request`` from a client whose first is pending → "already pending";
* ``status``: ``/status`` from a client who asked before → the status reply;
* ``redelivery``: an update sent before, sent again byte for byte → no effect expected;
* ``decide``: an administrator taps Approve/Reject on a pre-seeded pending request → the
  callback answer and the decision message to that request's client;
* ``late_tap``: the other administrator taps an already decided request → "already processed".

Input: a JSON plan file (see ``Plan``); output: a JSON file with one record per POST and the
expected effects (``[key, category, t_sent, update_id]``) the orchestrator matches against
the fake Bot API's records. Run: ``python -m bench.load PLAN.json``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sosekni.standin import run_fast
from tests.harness import bot_message, callback, message, user

MIX = {
    "request": 0.40,
    "duplicate": 0.10,
    "status": 0.15,
    "redelivery": 0.10,
    "decide": 0.20,
    "late_tap": 0.05,
}
FOLLOW_UP_AFTER_S = 0.5  # a client's duplicate/status comes at least this long after /request


@dataclass
class Plan:
    url: str
    secret: str
    duration: float
    rate: float  # updates per second; 0 = full speed
    out: str
    connections: int = 40
    seed: int = 1
    client_base: int = 10_000_000
    update_base: int = 1
    admins: list[int] = field(default_factory=lambda: [1, 2])
    decision_pool: list[list[int]] = field(default_factory=list)  # [request_id, client_id]
    lang: str = "en"


class Mix:
    """Builds the next update of the mix; remembers what it sent for follow-ups."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.kinds = list(MIX)
        self.weights = [MIX[k] for k in self.kinds]
        self.next_update = plan.update_base
        self.next_client = plan.client_base
        self.clients: deque[tuple[float, int, int]] = deque()  # (posted, client, messages)
        self.recent: deque[tuple[float, bytes, int]] = deque(maxlen=4000)
        self.pool = deque(tuple(p) for p in plan.decision_pool)
        self.decided: deque[tuple[float, int, int]] = deque(maxlen=4000)  # (t, req, admin)
        self.callback = plan.update_base

    def _update_id(self) -> int:
        self.next_update += 1
        return self.next_update

    def _message(self, client: int, text: str) -> dict[str, Any]:
        """`text` from client `client` (first name C<id>, no username)."""
        sender = user(client, f"C{client}", username=None)
        return message(sender, text, update_id=self._update_id())

    def _tap(self, admin: int, data: str) -> tuple[dict[str, Any], str]:
        self.callback += 1
        cbq_id = f"cbq{self.callback}"
        sender = user(admin, f"Admin{admin}", username=None)
        on = bot_message(admin, 1, "card")
        return callback(sender, data, on, update_id=self._update_id(), query_id=cbq_id), cbq_id

    def _follow_up_client(self, now: float) -> int | None:
        """A client who asked at least FOLLOW_UP_AFTER_S ago and has room for a message."""
        while self.clients and self.clients[0][0] <= now - FOLLOW_UP_AFTER_S:
            posted, client, count = self.clients.popleft()
            if count < 3:
                if count + 1 < 3:
                    self.clients.append((posted, client, count + 1))
                return client
        return None

    def next(self, now: float) -> tuple[bytes, int, str, list[tuple[str, str]]]:
        """(body, update_id, kind, expected effects as (key, category))."""
        kind = self.rng.choices(self.kinds, self.weights)[0]
        if kind in ("duplicate", "status"):
            client = self._follow_up_client(now)
            if client is None:
                kind = "request"
            else:
                text = "/request again" if kind == "duplicate" else "/status"
                update = self._message(client, text)
                category = "already_pending" if kind == "duplicate" else "status"
                return self._done(now, update, kind, [(f"chat:{client}", category)])
        if kind == "redelivery":
            if self.recent and self.recent[0][0] <= now - 0.2:
                index = self.rng.randrange(len(self.recent))
                posted, body, update_id = self.recent[index]
                if posted <= now - 0.2:
                    return body, update_id, kind, []
            kind = "request"
        if kind == "late_tap":
            if self.decided and self.decided[0][0] <= now - FOLLOW_UP_AFTER_S:
                _, request_id, admin = self.decided.popleft()
                other = next((a for a in self.plan.admins if a != admin), admin)
                update, cbq_id = self._tap(other, f"reject:{request_id}")
                return self._done(now, update, kind, [(f"cbq:{cbq_id}", "callback")])
            kind = "decide"
        if kind == "decide":
            if self.pool:
                request_id, client = self.pool.popleft()
                admin = self.rng.choice(self.plan.admins)
                action = self.rng.choice(("approve", "reject"))
                update, cbq_id = self._tap(admin, f"{action}:{request_id}")
                self.decided.append((now, request_id, admin))
                expected = [(f"cbq:{cbq_id}", "callback"), (f"chat:{client}", "decision")]
                return self._done(now, update, kind, expected)
            kind = "request"
        self.next_client += 1
        client = self.next_client
        update = self._message(client, f"/request I am client {client}")
        self.clients.append((now, client, 1))
        return self._done(now, update, "request", [(f"chat:{client}", "received")])

    def _done(
        self, now: float, update: dict[str, Any], kind: str, expected: list[tuple[str, str]]
    ) -> tuple[bytes, int, str, list[tuple[str, str]]]:
        body = json.dumps(update, separators=(",", ":")).encode()
        self.recent.append((now, body, update["update_id"]))
        return body, update["update_id"], kind, expected


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, path: str, secret: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"X-Telegram-Bot-Api-Secret-Token: {secret}\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            raise
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported")
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(plan: Plan) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(plan.url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    mix = Mix(plan)
    records: list[tuple[int, str, float, float, float, int]] = []
    expected: list[tuple[str, str, float, int]] = []
    clients = [Client(host, port, path, plan.secret) for _ in range(plan.connections)]
    started = time.perf_counter()
    wall0 = time.time()
    deadline = started + plan.duration

    def wall(perf: float) -> float:
        return wall0 + (perf - started)

    async def send(
        client: Client, item: tuple[bytes, int, str, list[tuple[str, str]]], scheduled: float
    ) -> None:
        body, update_id, kind, effects = item
        sent = time.perf_counter()
        for key, category in effects:
            expected.append((key, category, wall(sent), update_id))
        try:
            status = await client.post(body)
        except Exception:
            status = -1
            client.close()
        records.append(
            (
                update_id,
                kind,
                scheduled - started,
                sent - started,
                time.perf_counter() - started,
                status,
            )
        )

    if plan.rate > 0:
        queue: asyncio.Queue[tuple[tuple[bytes, int, str, list[tuple[str, str]]], float] | None]
        queue = asyncio.Queue()

        async def worker(client: Client) -> None:
            while (job := await queue.get()) is not None:
                await send(client, job[0], job[1])

        workers = [asyncio.create_task(worker(c)) for c in clients]
        interval = 1.0 / plan.rate
        n = 0
        while True:
            scheduled = started + n * interval
            if scheduled >= deadline:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((mix.next(wall(scheduled)), scheduled))
            n += 1
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
    else:

        async def loop(client: Client) -> None:
            while (now := time.perf_counter()) < deadline:
                await send(client, mix.next(wall(now)), now)

        await asyncio.gather(*(loop(c) for c in clients))
    ended = time.perf_counter()
    for c in clients:
        c.close()
    return {
        "wall_started": wall0,
        "elapsed": ended - started,
        "records": records,
        "expected": expected,
        "decision_pool_left": len(mix.pool),
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        plan = Plan(**json.load(f))
    result: dict[str, Any] = {}

    async def go() -> None:
        result.update(await run(plan))

    run_fast(go())
    with open(plan.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
