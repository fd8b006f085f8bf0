"""Scenario `burst` ("opening day"): N new clients at once, then one administrator decides.

    uv run python -m bench.burst                                   # N = 60 and 500, this tree
    uv run python -m bench.burst --n 60 --repeats 3
    uv run python -m bench.burst --tree before=/tmp/sosekni-before --tree current=/work/main

Each run: a fresh database migrated by the tree's own `sosekni-ops migrate`, that tree's
`sosekni-ops serve --workers 1` (Telegram's pacing in force: the server's default settings),
two administrators (1001, 1002), the Telegram stand-in (`sosekni.standin`) and a load process
(this module with ``--load``) that POSTs

1. **requests**: N `/request` updates from N distinct new clients, as fast as it can, over 40
   keep-alive connections (closed loop);
2. **taps**, once every administrator has been shown every request (or after
   ``--show-timeout``): administrator 1001 approves every request in id order, one tap at a
   time at ``--tap-rate`` taps/s (open loop, fixed schedule), each a callback_query with data
   ``approve:<id>`` on the message of 1001's chat that showed that request.

Then it waits (at most ``--drain`` s after the last tap) for every effect, and reports per run
and per tree and N (medians over ``--repeats``): see bench/README.md, "Scenario `burst`".
Results: ``<out>.md`` and, git-ignored, ``raw/<name>.json`` beside it (every run, every
figure, per-tap latencies).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import Client
from bench.run import (
    ADMINS,
    DEFAULT_PG,
    RESULTS,
    ROOT,
    SECRET,
    Config,
    Database,
    FakeApi,
    Server,
    classify,
    fmt,
    machine_facts,
    percentile,
    python,
    server_env,
)
from bench.saving import save
from sosekni.standin import run_fast
from tests.harness import Db, bot_message, callback, message, user

APPROVER, OTHER = ADMINS
CLIENT_BASE = 300_000_000
REQUEST_UPDATE_BASE = 7_000_000
TAP_UPDATE_BASE = 8_000_000
CONNECTIONS = 40
TAP_RATE = 4.0
CHAT_METHODS = ("sendMessage", "editMessageText")
INF = float("inf")


@dataclass(frozen=True)
class Tree:
    """A checkout of this repository with its own virtualenv: the server is run from it."""

    label: str
    path: Path

    @property
    def ops(self) -> list[str]:
        return [str(self.path / ".venv" / "bin" / "sosekni-ops")]

    def check(self) -> None:
        if not Path(self.ops[0]).exists():
            raise SystemExit(
                f"--tree {self.label}={self.path}: no {self.ops[0]} "
                f"(run `cd {self.path} && uv sync --frozen` first)"
            )

    def describe(self) -> dict[str, Any]:
        """The tree's commit and whether its code differs from it (read-only git)."""

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", "-C", str(self.path), *args], capture_output=True, text=True, timeout=30
            )
            return done.stdout.rstrip() if done.returncode == 0 else "?"

        changed = git("status", "--porcelain", "--", "sosekni", "ops", "pyproject.toml")
        return {
            "label": self.label,
            "path": str(self.path),
            "commit": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_app_changes": [line[3:] for line in changed.splitlines() if line],
        }


def parse_tree(value: str) -> Tree:
    label, sep, path = value.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, not {value!r}")
    return Tree(label, Path(path).expanduser().resolve())


# ---------------------------------------------------------------------------- updates


def request_update(index: int) -> tuple[int, dict[str, Any]]:
    """(client id, the `/request` update of the index-th new client)."""
    client = CLIENT_BASE + index
    text = f"/request I am client {client}, moving in on opening day"
    sender = user(client, f"C{client}", username=None)
    return client, message(sender, text, update_id=REQUEST_UPDATE_BASE + index)


def tap_update(index: int, request_id: int, message_id: int) -> tuple[str, dict[str, Any]]:
    """(callback_query id, administrator 1001's Approve tap on that request's message)."""
    cbq_id = f"burst-tap-{index}"
    update = callback(
        user(APPROVER, f"Admin{APPROVER}", username=None),
        f"approve:{request_id}",
        bot_message(APPROVER, message_id, f"Access request #{request_id}"),
        update_id=TAP_UPDATE_BASE + index,
        query_id=cbq_id,
    )
    return cbq_id, update


# ------------------------------------------------------------------------- load process


async def post_all(plan: dict[str, Any]) -> dict[str, Any]:
    """POST every body of the plan; `rate` 0 = closed loop, else open loop at `rate`/s.

    Records ``[key, scheduled, sent, answered, status]`` per POST, wall-clock seconds
    (``time.time()``, the fake Bot API's clock); in a closed loop scheduled = sent.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(plan["url"])
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    clients = [Client(host, port, path, plan["secret"]) for _ in range(plan["connections"])]
    jobs: asyncio.Queue[tuple[str, bytes, float | None] | None] = asyncio.Queue()
    records: list[list[Any]] = []
    started = time.perf_counter() + 0.05
    wall0 = time.time() + 0.05

    def wall(perf: float) -> float:
        return wall0 + (perf - started)

    async def worker(client: Client) -> None:
        while (job := await jobs.get()) is not None:
            key, body, scheduled = job
            sent = time.perf_counter()
            try:
                status = await client.post(body)
            except Exception:
                status = -1
                client.close()
            answered = time.perf_counter()
            at = sent if scheduled is None else scheduled
            records.append([key, wall(at), wall(sent), wall(answered), status])

    workers = [asyncio.create_task(worker(c)) for c in clients]
    rate = float(plan["rate"])
    bodies = [(key, body.encode()) for key, body in plan["bodies"]]
    if rate > 0:
        for n, (key, body) in enumerate(bodies):
            scheduled = started + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            jobs.put_nowait((key, body, scheduled))
    else:
        delay = started - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for key, body in bodies:
            jobs.put_nowait((key, body, None))
    for _ in workers:
        jobs.put_nowait(None)
    await asyncio.gather(*workers)
    for c in clients:
        c.close()
    return {"wall_started": wall0, "records": records}


def load_main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    result: dict[str, Any] = {}

    async def go() -> None:
        result.update(await post_all(plan))

    run_fast(go())
    Path(plan["out"]).write_text(json.dumps(result))


async def run_load(
    plan: dict[str, Any], workdir: Path, name: str, calls: Calls, poll_s: float = 0.25
) -> dict[str, Any]:
    """The load as a process of its own, reading the fake API's records meanwhile."""
    plan_path = workdir / f"plan-{name}.json"
    out_path = workdir / f"load-{name}.json"
    plan["out"] = str(out_path)
    plan_path.write_text(json.dumps(plan))
    load = await asyncio.create_subprocess_exec(
        python(), "-m", "bench.burst", "--load", str(plan_path), cwd=ROOT
    )
    while load.returncode is None:
        calls.poll()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.wait(), poll_s)
    if load.returncode != 0:
        raise RuntimeError(f"the load process failed with {load.returncode}")
    return json.loads(out_path.read_text())


# ----------------------------------------------------------------------- what was seen


class Calls:
    """The fake Bot API's detailed records (``/bench/details``), indexed as they come."""

    def __init__(self, fake: FakeApi) -> None:
        self.fake = fake
        self.all: list[list[Any]] = []
        # admin chat → request id → (time, message_id) of the first call that showed it
        self.shown: dict[int, dict[int, tuple[float, int | None]]] = {a: {} for a in ADMINS}
        self.confirmed: dict[int, float] = {}  # client chat → first "has been received"
        self.good_news: list[tuple[float, int]] = []  # (time, client chat)
        self.answered: dict[str, float] = {}  # callback_query_id → first answer
        # request id → times of edits to chat 1002 mentioning it without its Approve button
        self.other_decided: dict[int, list[float]] = defaultdict(list)

    def poll(self) -> None:
        found = self.fake.client.get("/bench/details", params={"since": len(self.all)}).json()
        for call in found["calls"]:
            self._index(call)
        self.all.extend(found["calls"])

    def _index(self, call: list[Any]) -> None:
        at, method, chat, message_id, cbq_id, text_ids, button_ids, _markup, text = call
        if method == "answerCallbackQuery" and cbq_id is not None:
            self.answered.setdefault(cbq_id, at)
            return
        if method not in CHAT_METHODS:
            return
        if chat in self.shown:
            for request_id in button_ids:
                self.shown[chat].setdefault(request_id, (at, message_id))
            if chat == OTHER and method == "editMessageText":
                for request_id in set(text_ids) - set(button_ids):
                    self.other_decided[request_id].append(at)
            return
        if method == "sendMessage" and chat is not None:
            if classify(text) == "received":
                self.confirmed.setdefault(chat, at)
            elif text.startswith("Good news"):
                self.good_news.append((at, chat))

    def chat_messages(self, since: float) -> list[float]:
        return sorted(c[0] for c in self.all if c[1] in CHAT_METHODS and c[0] >= since)


async def requests_stored(url: str, clients: list[int]) -> list[dict[str, Any]]:
    return await Db(url).fetch(
        "SELECT id, client_telegram_id, status, submitted_at FROM client_request "
        "WHERE client_telegram_id = ANY({}::bigint[]) ORDER BY id",
        clients,
    )


async def outbox_state(url: str) -> dict[str, Any]:
    db = Db(url)
    found = {}
    for table in ("outbox_message", "inbox_update"):
        rows = await db.fetch(f"SELECT status, count(*) AS n FROM {table} GROUP BY 1")
        found[table.split("_")[0]] = {r["status"]: int(r["n"]) for r in rows}
    return found


# ------------------------------------------------------------------------------ one run


@dataclass(frozen=True)
class Timeouts:
    show: float | None  # s from the first POST for every admin to be shown every request
    drain: float | None  # s after the last tap for every effect

    def show_s(self, n: int) -> float:
        return self.show if self.show is not None else 120 + 2.0 * n

    def drain_s(self, n: int) -> float:
        return self.drain if self.drain is not None else 60 + 1.5 * n


async def one_run(
    tree: Tree,
    n: int,
    repeat: int,
    db: Database,
    fake: FakeApi,
    workdir: Path,
    timeouts: Timeouts,
    tap_rate: float,
) -> dict[str, Any]:
    tag = f"{tree.label}-n{n}-{repeat}"
    tree_state = tree.describe()  # a tree may change between runs (someone at work in it)
    fake.reset()
    url = await db.fresh(fake.base_url, tree.ops, tree.path)
    server = Server(
        config=Config("sosekni", 1, 0.0, 0),
        env=server_env(url, fake.base_url),
        log_path=workdir / f"{tag}.log",
        ops=tree.ops,
        cwd=tree.path,
    )
    calls = Calls(fake)
    try:
        server.start(timeout=90)
        calls.poll()  # start-up calls (getMe …) are in `all` but no chat message is
        webhook = f"{server.url}/webhook/telegram"

        # 1. the burst of /request
        clients, bodies = [], []
        for i in range(n):
            client, update = request_update(i)
            clients.append(client)
            bodies.append([str(client), json.dumps(update, separators=(",", ":"))])
        plan = {"url": webhook, "secret": SECRET, "connections": CONNECTIONS, "rate": 0}
        loaded = await run_load(plan | {"bodies": bodies}, workdir, f"{tag}-requests", calls)
        request_posts = loaded["records"]
        first_post = min(r[2] for r in request_posts)
        posted_at = max(r[3] for r in request_posts)

        # 2. until every administrator has been shown every request (or the timeout)
        show_deadline = first_post + timeouts.show_s(n)
        stored: list[dict[str, Any]] = []
        while True:
            calls.poll()
            if len(stored) < n:
                stored = await requests_stored(url, clients)
            ids = {r["id"] for r in stored}
            everyone = all(ids <= set(calls.shown[a]) for a in ADMINS)
            if (len(stored) == n and everyone) or time.time() > show_deadline:
                break
            await asyncio.sleep(0.25)
        ids_in_order = [r["id"] for r in stored]
        client_of = {r["id"]: r["client_telegram_id"] for r in stored}

        # 3. administrator 1001 approves each request, at tap_rate taps/s
        taps, tap_bodies = [], []
        for i, request_id in enumerate(ids_in_order):
            message_id = calls.shown[APPROVER].get(request_id, (0.0, None))[1] or 1
            cbq_id, update = tap_update(i, request_id, message_id)
            taps.append((cbq_id, request_id))
            tap_bodies.append([cbq_id, json.dumps(update, separators=(",", ":"))])
        plan = {"url": webhook, "secret": SECRET, "connections": CONNECTIONS, "rate": tap_rate}
        tapped = await run_load(plan | {"bodies": tap_bodies}, workdir, f"{tag}-taps", calls)
        tap_at = {r[0]: r[1] for r in tapped["records"]}  # scheduled = the tap's time
        approval_started = tapped["wall_started"]
        last_tap = max(tap_at.values(), default=approval_started)

        # 4. drain: until every effect of the taps was seen, or the timeout
        drain_deadline = last_tap + timeouts.drain_s(n)
        while True:
            calls.poll()
            waiting = _waiting(calls, taps, tap_at, client_of)
            if not waiting or time.time() > drain_deadline:
                break
            await asyncio.sleep(0.25)
        drained_at = time.time()
        final = await requests_stored(url, clients)
        state = await outbox_state(url)
        server.stop()
        result = summarize(
            n,
            calls,
            clients=clients,
            stored=stored,
            final=final,
            request_posts=request_posts,
            first_post=first_post,
            posted_at=posted_at,
            approval_started=approval_started,
            taps=taps,
            tap_posts=tapped["records"],
            tap_at=tap_at,
            client_of=client_of,
        )
        result |= {
            "tree": tree.label,
            "tree_state": tree_state,
            "n": n,
            "repeat": repeat,
            "drained_s_after_last_tap": round(drained_at - last_tap, 2),
            "show_timeout_s": timeouts.show_s(n),
            "drain_timeout_s": timeouts.drain_s(n),
            "tap_rate": tap_rate,
            "bot_state": state,
        }
        return result
    finally:
        server.stop()
        await db.drop(url)


def _waiting(
    calls: Calls,
    taps: list[tuple[str, int]],
    tap_at: dict[str, float],
    client_of: dict[int, int],
) -> int:
    """How many of the taps' expected effects are still to come."""
    good = {chat for _, chat in calls.good_news}
    left = 0
    for cbq_id, request_id in taps:
        left += cbq_id not in calls.answered
        left += client_of.get(request_id) not in good
        left += _other_edit(calls, request_id, tap_at.get(cbq_id, INF)) is None
    return left


def _other_edit(calls: Calls, request_id: int, at: float) -> float | None:
    """The first edit of chat 1002 at or after `at` showing request `request_id` decided.

    Decided: the text mentions ``#<id>`` (a whole number) and no ``approve:<id>`` button is
    left (a card edited to its outcome has no reply_markup at all).
    """
    return next((t for t in calls.other_decided.get(request_id, ()) if t >= at), None)


def _q(values: list[float], q: float) -> float | None:
    found = percentile(values, q)
    if found is None or found == INF:
        return found
    return round(found, 3)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any `window`-second interval (times sorted)."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_left(times, t + window) - i)
    return best


def per_second(times: list[float]) -> list[int]:
    """Chat messages in each whole second from the first one (times sorted)."""
    if not times:
        return []
    counts = [0] * (int(times[-1] - times[0]) + 1)
    for t in times:
        counts[int(t - times[0])] += 1
    return counts


def summarize(
    n: int,
    calls: Calls,
    *,
    clients: list[int],
    stored: list[dict[str, Any]],
    final: list[dict[str, Any]],
    request_posts: list[list[Any]],
    first_post: float,
    posted_at: float,
    approval_started: float,
    taps: list[tuple[str, int]],
    tap_posts: list[list[Any]],
    tap_at: dict[str, float],
    client_of: dict[int, int],
) -> dict[str, Any]:
    ids = [r["id"] for r in stored]
    last_stored = max((r["submitted_at"].timestamp() for r in stored), default=None)

    # the clients' confirmations
    confirmations = [calls.confirmed.get(client) for client in clients]
    missing_confirmations = n - sum(1 for c in confirmations if c is not None)
    last_confirmation = (
        max(c for c in confirmations if c is not None) - first_post
        if not missing_confirmations
        else INF
    )
    last_confirmed_at = max((c for c in confirmations if c is not None), default=None)

    # each administrator: every request shown, messages during the request phase
    admins: dict[str, Any] = {}
    for admin in ADMINS:
        shown = calls.shown[admin]
        missing = [i for i in ids if i not in shown] + [None] * (n - len(ids))  # + never stored
        all_shown_at = max((shown[i][0] for i in ids if i in shown), default=None)
        sends = sum(
            1
            for c in calls.all
            if c[1] == "sendMessage" and c[2] == admin and first_post <= c[0] < approval_started
        )
        edits = sum(
            1
            for c in calls.all
            if c[1] == "editMessageText" and c[2] == admin and first_post <= c[0] < approval_started
        )
        after = (
            all_shown_at - last_stored
            if not missing and all_shown_at is not None and last_stored is not None
            else INF
        )
        admins[str(admin)] = {
            "shown": n - len(missing),
            "not_shown": len(missing),
            "all_shown_s_after_last_stored": _round(after),
            "all_shown_s_after_first_post": _round(
                all_shown_at - first_post if not missing and all_shown_at else INF
            ),
            "send_messages_request_phase": sends,
            "edits_request_phase": edits,
        }

    # the taps
    good_by_chat: dict[int, list[float]] = defaultdict(list)
    for at, chat in calls.good_news:
        good_by_chat[chat].append(at)
    per_tap = []
    answered, outcome, other = [], [], []
    for cbq_id, request_id in taps:
        t = tap_at.get(cbq_id, INF)
        a = calls.answered.get(cbq_id)
        g = next((x for x in good_by_chat.get(client_of.get(request_id, -1), []) if x >= t), None)
        o = _other_edit(calls, request_id, t)
        answered.append(a - t if a is not None else INF)
        outcome.append(g - t if g is not None else INF)
        other.append(o - t if o is not None else INF)
        per_tap.append([request_id, round(t, 3), _round(answered[-1], 4), _round(outcome[-1], 4)])
        per_tap[-1].append(_round(other[-1], 4))
    for values in (answered, outcome, other):  # requests never stored were never tapped
        values.extend([INF] * (n - len(taps)))
    tap_webhook = [r[3] - r[1] for r in tap_posts if r[4] == 200]

    # messages per second while draining the burst
    chat_times = calls.chat_messages(first_post)
    if chat_times and last_confirmed_at is not None and last_confirmed_at > chat_times[0]:
        span = last_confirmed_at - chat_times[0]
        in_span = sum(1 for t in chat_times if t <= last_confirmed_at)
        draining = round(in_span / span, 1)
    else:
        draining = None
    statuses: dict[str, int] = defaultdict(int)
    for r in final:
        statuses[r["status"]] += 1
    errors = sum(1 for r in request_posts + tap_posts if r[4] != 200)
    return {
        "stored": len(stored),
        "last_stored_s_after_first_post": _round(last_stored - first_post if last_stored else None),
        "last_stored_from": "max(client_request.submitted_at)",
        "requests_posted_s": round(posted_at - first_post, 3),
        "last_confirmation_s": _round(last_confirmation),
        "confirmation_floor_s": round(n / 30, 2),
        "missing_confirmations": missing_confirmations,
        "admins": admins,
        "taps": len(taps),
        "tap_answered_p50_s": _q(answered, 50),
        "tap_answered_p99_s": _q(answered, 99),
        "tap_answered_missing": sum(1 for v in answered if v == INF),
        "client_outcome_p50_s": _q(outcome, 50),
        "client_outcome_p99_s": _q(outcome, 99),
        "client_outcome_missing": sum(1 for v in outcome if v == INF),
        "other_admin_lag_p50_s": _q(other, 50),
        "other_admin_lag_p99_s": _q(other, 99),
        "other_admin_lag_missing": sum(1 for v in other if v == INF),
        "tap_webhook_p99_ms": _round(
            (percentile(tap_webhook, 99) or 0) * 1000 if tap_webhook else None
        ),
        "draining_messages_per_s": draining,
        "max_messages_in_1s": max_in_window(chat_times),
        "chat_messages_per_second": per_second(chat_times),
        "chat_messages": len(chat_times),
        "decided": {k: v for k, v in statuses.items()},
        "approved": statuses.get("approved", 0),
        "errors": errors,
        "per_tap": per_tap,  # [request id, tap time, answered, outcome, other admin] (s)
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or value == INF:
        return value
    return round(value, digits)


# ------------------------------------------------------------------------------ report


SUMMARY_KEYS = (
    "last_confirmation_s",
    "tap_answered_p50_s",
    "tap_answered_p99_s",
    "client_outcome_p50_s",
    "client_outcome_p99_s",
    "other_admin_lag_p50_s",
    "other_admin_lag_p99_s",
    "draining_messages_per_s",
    "max_messages_in_1s",
    "tap_webhook_p99_ms",
)
ADMIN_KEYS = ("all_shown_s_after_last_stored", "send_messages_request_phase", "not_shown")


def middle(values: list[Any]) -> Any:
    """The median; with an infinite value among them, the middle of the sorted values."""
    found = [v for v in values if isinstance(v, (int, float))]
    if not found:
        return None
    if INF in found:
        return sorted(found)[len(found) // 2]
    return statistics.median(found)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["tree"], run["n"])].append(run)
    rows = []
    for (tree, n), group in groups.items():
        row: dict[str, Any] = {"tree": tree, "n": n, "repeats": len(group)}
        row["confirmation_floor_s"] = round(n / 30, 2)
        for key in SUMMARY_KEYS:
            row[key] = middle([r.get(key) for r in group])
        row["admins"] = {
            admin: {key: middle([r["admins"][admin][key] for r in group]) for key in ADMIN_KEYS}
            for admin in group[0]["admins"]
        }
        row["missing_max"] = max(_missing(r) for r in group)
        row["approved_min"] = min(r["approved"] for r in group)
        row["errors_max"] = max(r["errors"] for r in group)
        rows.append(row)
    return rows


def _missing(run: dict[str, Any]) -> int:
    return (
        run["missing_confirmations"]
        + sum(a["not_shown"] for a in run["admins"].values())
        + run["tap_answered_missing"]
        + run["client_outcome_missing"]
        + run["other_admin_lag_missing"]
    )


def describe_trees(trees: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    """Each tree's commit (and uncommitted app files) as each of its runs found it."""
    parts = []
    for tree in trees:
        states = []
        for state in [tree] + [r["tree_state"] for r in runs if r["tree"] == tree["label"]]:
            changed = state["uncommitted_app_changes"]
            found = state["commit"] + (
                f" + {len(changed)} uncommitted file(s) in sosekni/ ops/" if changed else ""
            )
            if found not in states:
                states.append(found)
        during = f" (changed during the runs: {' → '.join(states)})" if len(states) > 1 else ""
        parts.append(f"`{tree['label']}` = {tree['path']} at {states[-1]}{during}")
    return "; ".join(parts)


def markdown(
    rows: list[dict[str, Any]],
    machine: dict[str, Any],
    trees: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    repeats: int,
) -> str:
    described = describe_trees(trees, runs)
    a, b = (str(x) for x in ADMINS)
    lines = [
        f"Run {machine['when']} on {machine['cpu']} ({machine['nproc']} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in machine['load_avg'])}), {machine['postgres']}; "
        f"repeats {repeats} (medians). Trees: {described}.",
        "",
        "| tree | N | last confirmation s (floor N/30) "
        f"| admin {a}: all shown s after last stored (msgs) "
        f"| admin {b}: all shown s after last stored (msgs) "
        "| tap answered p50 / p99 s | client outcome p50 / p99 s "
        f"| other admin ({b}) lag p50 / p99 s | msgs/s draining (max in 1 s) "
        "| approved / N | missing | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["n"], r["tree"])):
        admin_cells = []
        for admin in (a, b):
            x = r["admins"][admin]
            admin_cells.append(
                f"{fmt(x['all_shown_s_after_last_stored'])} "
                f"({fmt(x['send_messages_request_phase'], 0)})"
            )
        lines.append(
            f"| {r['tree']} | {r['n']} | {fmt(r['last_confirmation_s'], 2)} "
            f"({fmt(r['confirmation_floor_s'], 2)}) | {admin_cells[0]} | {admin_cells[1]} "
            f"| {fmt(r['tap_answered_p50_s'], 2)} / {fmt(r['tap_answered_p99_s'], 2)} "
            f"| {fmt(r['client_outcome_p50_s'], 2)} / {fmt(r['client_outcome_p99_s'], 2)} "
            f"| {fmt(r['other_admin_lag_p50_s'])} / {fmt(r['other_admin_lag_p99_s'])} "
            f"| {fmt(r['draining_messages_per_s'])} ({fmt(r['max_messages_in_1s'], 0)}) "
            f"| {r['approved_min']} / {r['n']} | {r['missing_max']} | {r['errors_max']} |"
        )
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- main


async def bench(args: argparse.Namespace, trees: list[Tree]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sosekni-burst-"))
    db = Database(args.pg, uuid.uuid4().hex[:6])
    fake = FakeApi()
    timeouts = Timeouts(args.show_timeout, args.drain)
    runs: list[dict[str, Any]] = []
    try:
        for repeat in range(args.repeats):  # interleaved: drift hits every tree alike
            for n in args.n:
                for tree in trees:
                    print(
                        f"[{repeat + 1}/{args.repeats}] {tree.label} N={n} …",
                        flush=True,
                        file=sys.stderr,
                    )
                    run = await one_run(tree, n, repeat, db, fake, workdir, timeouts, args.tap_rate)
                    runs.append(run)
                    shown = " / ".join(
                        fmt(run["admins"][str(a)]["all_shown_s_after_last_stored"]) for a in ADMINS
                    )
                    print(
                        f"    last confirmation {fmt(run['last_confirmation_s'], 2)} s, "
                        f"all shown {shown} s after the last stored, other admin lag p99 "
                        f"{fmt(run['other_admin_lag_p99_s'])} s, tap answered p99 "
                        f"{fmt(run['tap_answered_p99_s'], 2)} s, approved {run['approved']}/{n}",
                        flush=True,
                        file=sys.stderr,
                    )
    finally:
        fake.close()
        await db.drop_all()
    return {"runs": runs, "rows": aggregate(runs), "workdir": str(workdir), "db_tag": db.tag}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", nargs="+", type=int, default=[60, 500], help="clients per burst")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--tree",
        action="append",
        type=parse_tree,
        metavar="LABEL=PATH",
        help="a checkout with its own .venv to run the server from (repeatable; "
        f"default current={ROOT})",
    )
    parser.add_argument("--tap-rate", type=float, default=TAP_RATE, help="taps per second")
    parser.add_argument(
        "--show-timeout",
        type=float,
        help="s from the first POST to wait for every request to reach both administrators "
        "(default 120 + 2 N)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        help="s after the last tap to wait for its effects (default 60 + 1.5 N)",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG,
        help="admin DSN of the Postgres server for the bench databases",
    )
    parser.add_argument(
        "--out", type=Path, help="result file prefix (default bench/results/burst-…)"
    )
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: be the load process
    args = parser.parse_args(argv)
    if args.load:
        load_main(args.load)
        return {}
    trees: list[Tree] = args.tree or [Tree("current", ROOT)]
    if len({t.label for t in trees}) != len(trees):
        parser.error("tree labels must differ")
    for tree in trees:
        tree.check()
    machine = machine_facts(args.pg)
    described = [t.describe() for t in trees]
    report = asyncio.run(bench(args, trees))
    report["machine"] = machine
    report["trees"] = described
    report["args"] = {
        "n": args.n,
        "repeats": args.repeats,
        "tap_rate": args.tap_rate,
        "show_timeout": args.show_timeout,
        "drain": args.drain,
        "connections": CONNECTIONS,
        "admins": list(ADMINS),
        "workers": 1,
    }
    text = markdown(report["rows"], machine, described, report["runs"], args.repeats)
    report["markdown"] = text
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = args.out or RESULTS / f"burst-{stamp}"
    md, raw = save(prefix, report, text)
    print(text)
    print(f"results: {md} (raw: {raw})")
    return report


if __name__ == "__main__":
    main()
