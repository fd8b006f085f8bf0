"""What operators see: GET /metrics, GET /health backlog, and the server's log lines."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sosekni.standin import FakeTelegram
from tests.conftest import migrated_database, running_bot
from tests.harness import (
    SECRET,
    TOKEN,
    BotServer,
    Db,
    bot_message,
    callback,
    message,
    next_id,
    user,
)

# ----------------------------------------------------------------------------- Prometheus text

_SAMPLE = re.compile(
    r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^{}]*)\})? (?P<value>[^ ]+)"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_KINDS = ("counter", "gauge", "histogram", "summary", "untyped")


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    name: str
    help: str
    kind: str | None = None
    samples: list[Sample] = field(default_factory=list)


def _labels(text: str, where: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    rest = text
    while rest:
        match = _LABEL.match(rest)
        assert match is not None, f"{where}: bad labels {text!r}"
        assert match[1] not in labels, f"{where}: label {match[1]} twice"
        labels[match[1]] = match[2]
        rest = rest[match.end() :]
        if rest.startswith(","):
            rest = rest[1:]
        else:
            assert not rest, f"{where}: bad labels {text!r}"
    return labels


def parse_metrics(text: str) -> dict[str, Family]:
    """Prometheus text format 0.0.4, strictly: every family is HELP, TYPE, then its samples."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Family] = {}
    current: Family | None = None
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        where = f"line {number} {line!r}"
        if line.startswith("# HELP "):
            name, _, help_ = line[len("# HELP ") :].partition(" ")
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), where
            assert name not in families, f"{where}: family {name} twice"
            assert help_.strip(), f"{where}: empty help"
            families[name] = current = Family(name, help_)
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert current is not None and name == current.name, f"{where}: TYPE without HELP"
            assert current.kind is None and not current.samples, f"{where}: TYPE out of place"
            assert kind in _KINDS, f"{where}: unknown type"
            current.kind = kind
        else:
            match = _SAMPLE.fullmatch(line)
            assert match is not None, f"{where}: not a sample"
            assert current is not None and current.kind is not None, f"{where}: before HELP/TYPE"
            suffixes = ("_bucket", "_sum", "_count") if current.kind == "histogram" else ("",)
            assert match["name"] in {current.name + s for s in suffixes}, (
                f"{where}: sample outside its family {current.name}"
            )
            value = float(match["value"])
            assert not math.isnan(value), f"{where}: NaN"
            current.samples.append(
                Sample(match["name"], _labels(match["labels"] or "", where), value)
            )
    for family in families.values():
        assert family.samples, f"{family.name} has no sample"
        if family.kind == "counter":
            assert family.name.endswith("_total"), f"counter {family.name} without _total"
            assert all(s.value >= 0 for s in family.samples), family
        if family.kind == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    buckets = [s for s in family.samples if s.name.endswith("_bucket")]
    bounds = [float(s.labels["le"]) for s in buckets]
    counts = [s.value for s in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == math.inf, family
    assert len(set(bounds)) == len(bounds), family
    assert counts == sorted(counts), f"{family.name}: buckets not cumulative"
    (total,) = [s.value for s in family.samples if s.name == family.name + "_count"]
    (sum_,) = [s.value for s in family.samples if s.name == family.name + "_sum"]
    assert counts[-1] == total and sum_ >= 0, family


@dataclass
class Scrape:
    families: dict[str, Family]

    def value(self, name: str, **labels: str) -> float:
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        raise AssertionError(f"no sample {name}{labels}")

    def buckets(self, name: str) -> dict[str, float]:
        return {
            s.labels["le"]: s.value
            for s in self.families[name].samples
            if s.name == f"{name}_bucket"
        }


async def scrape(server: BotServer) -> Scrape:
    """GET /metrics on a new connection, parsed."""
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{server.url}/metrics")
    assert answer.status_code == 200, answer.text
    return Scrape(parse_metrics(answer.text))


async def scrape_until(
    server: BotServer, ready: Callable[[Scrape], bool], timeout: float = 10
) -> Scrape:
    """Scrape until `ready` (a handler's latency is observed just after its commit)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await scrape(server)
        if ready(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


LATENCY = "sosekni_handler_latency_seconds"


# ----------------------------------------------------------------------------- /metrics


async def test_metrics_endpoint_serves_well_formed_prometheus_text(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, _, _ = bot
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{server.url}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse_metrics(answer.text)
    kinds = {name: family.kind for name, family in families.items()}
    assert {
        "sosekni_updates_received_total": "counter",
        "sosekni_updates_processed_total": "counter",
        "sosekni_updates_failed_total": "counter",
        "sosekni_messages_sent_total": "counter",
        "sosekni_messages_failed_total": "counter",
        "sosekni_messages_pending": "gauge",
        "sosekni_request_decisions_total": "counter",
        LATENCY: "histogram",
    }.items() <= kinds.items()
    decisions = families["sosekni_request_decisions_total"].samples
    assert [s.labels for s in decisions] == [{"response": "approved"}, {"response": "rejected"}]
    latency = Scrape(families)
    assert list(latency.buckets(LATENCY)) == [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ]  # fmt: skip
    assert {s.name for s in families[LATENCY].samples} == {
        f"{LATENCY}_bucket",
        f"{LATENCY}_sum",
        f"{LATENCY}_count",
    }


async def test_metrics_change_by_exactly_what_a_known_scenario_did(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admins = [user(next_id(), "Olga", "olga"), user(next_id(), "Ivan", None)]
    for admin in admins:
        await db.add_admin(admin["id"])
    before = await scrape(server)

    clients = [user(next_id()) for _ in range(3)]
    for client in clients:
        assert (await server.post(message(client, "/request Plot 42"))).status_code == 200
    await db.settle()
    first = await db.value(
        "SELECT id FROM client_request WHERE client_telegram_id = {}", clients[0]["id"]
    )
    copy = await db.value(
        "SELECT message_id FROM admin_notification WHERE request_id = {} AND chat_id = {}",
        first,
        admins[0]["id"],
    )
    on = bot_message(admins[0]["id"], copy, tg.sent_texts(admins[0]["id"])[0])
    tap = callback(admins[0], f"approve:{first}", on)
    assert (await server.post(tap)).status_code == 200
    assert (await server.post(tap)).status_code == 200  # Telegram delivering it again
    assert (await server.post(message(clients[1], "/status"), secret="wrong")).status_code == 403
    await db.settle()
    after = await scrape_until(
        server, lambda s: s.value(f"{LATENCY}_count") - before.value(f"{LATENCY}_count") >= 4
    )

    def change(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    requests, approval = 3, 1
    assert change("sosekni_updates_received_total") == requests + approval
    assert change("sosekni_updates_duplicate_total") == 1
    assert change("sosekni_updates_refused_total") == 1
    assert change("sosekni_updates_processed_total") == requests + approval
    assert change("sosekni_updates_failed_total") == 0
    # Each request: a confirmation and one card per administrator. The approval: the
    # client's message, an edit of each card, the answer to the tap.
    assert change("sosekni_messages_sent_total") == requests * 3 + (1 + 2 + 1)
    assert change("sosekni_messages_failed_total") == 0
    assert after.value("sosekni_messages_pending") == 0
    assert change("sosekni_request_decisions_total", response="approved") == 1
    assert change("sosekni_request_decisions_total", response="rejected") == 0
    assert after.value("sosekni_requests_pending") == requests - approval
    assert change(f"{LATENCY}_count") == requests + approval
    assert change(f"{LATENCY}_sum") > 0
    grown = {
        le: count - before.buckets(LATENCY)[le] for le, count in after.buckets(LATENCY).items()
    }
    assert grown["+Inf"] == requests + approval
    assert all(0 <= n <= requests + approval for n in grown.values())


async def test_metrics_are_the_whole_servers_whichever_worker_answers(
    two_workers: tuple[BotServer, Db], telegram: FakeTelegram
) -> None:
    server, db = two_workers
    updates = [message(user(next_id()), "/start") for _ in range(40)]
    answers = await asyncio.gather(*(server.post(update) for update in updates))
    assert [a.status_code for a in answers] == [200] * 40
    await db.settle()
    await scrape_until(server, lambda s: s.value(f"{LATENCY}_count") >= 40)

    for _ in range(10):
        found = await scrape(server)  # a new connection each time
        assert found.value("sosekni_updates_received_total") == 40
        assert found.value("sosekni_updates_processed_total") == 40
        assert found.value(f"{LATENCY}_count") == 40
        assert found.buckets(LATENCY)["+Inf"] == 40
        assert found.value("sosekni_messages_sent_total") == 40
    assert len(telegram.calls("sendMessage")) == 40


# ----------------------------------------------------------------------------- /health


async def test_health_shows_the_outbox_backlog_while_telegram_fails_and_none_after(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = await db.new_admin()
    client = user(next_id())
    tg.fail_next(10_000, status=500, method="sendMessage")

    async def health() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(f"{server.url}/health")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "ok" and body["checks"]["database"] == "ok"
        return body["checks"]

    async def failed_sends(at_least: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            rows = await db.fetch("SELECT attempts, last_error, status FROM outbox_message")
            tried = [r for r in rows if r["last_error"] and r["attempts"] >= at_least]
            if len(rows) == 2 and len(tried) >= (2 if at_least == 1 else 1):
                return
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)

    assert (await server.post(message(client, "/request Plot 42"))).status_code == 200
    await failed_sends(at_least=1)
    first = await health()
    assert first["inbox"] == {"backlog": 0, "oldest_age_seconds": 0.0, "overdue_seconds": 0.0}
    assert first["outbox"]["backlog"] == 2  # the confirmation and the card
    assert first["outbox"]["oldest_age_seconds"] > 0
    assert first["outbox"]["failed"] == 0
    metrics = await scrape(server)
    assert metrics.value("sosekni_messages_pending") == 2
    await failed_sends(at_least=2)
    later = await health()
    assert later["outbox"]["backlog"] == 2
    assert later["outbox"]["oldest_age_seconds"] > first["outbox"]["oldest_age_seconds"]

    tg.recover()
    await db.settle()
    drained = await health()
    assert drained["inbox"] == {"backlog": 0, "oldest_age_seconds": 0.0, "overdue_seconds": 0.0}
    assert drained["outbox"] == {
        "backlog": 0,
        "oldest_age_seconds": 0.0,
        "overdue_seconds": 0.0,
        "failed": 0,
    }
    assert len(tg.sent_texts(client["id"])) == 1
    assert len(tg.sent_texts(admin["id"])) == 1
    assert (await scrape(server)).value("sosekni_messages_pending") == 0


# ----------------------------------------------------------------------------- logs


@dataclass
class LoggedRun:
    """A full run of a DEBUG server, its whole log, and the request lines it must contain."""

    log: str
    expected: list[tuple[str, int, int]]  # (message, update_id, request_id)


async def full_run(fake: FakeTelegram, tmp: Path, log_format: str) -> LoggedRun:
    """Requests, decisions by button and by text reply, a refused tap, refused posts, a retry."""
    url = migrated_database("sqlite", None, tmp)
    admin = user(next_id(), "Olga", "olga")
    with running_bot(
        url,
        fake.base_url,
        tmp / "serve.log",
        ADMIN_TELEGRAM_ID=str(admin["id"]),
        LOG_LEVEL="DEBUG",
        LOG_FORMAT=log_format,
    ) as (server, db):
        fake.reset()
        expected: list[tuple[str, int, int]] = []

        async def send(update: dict[str, Any]) -> int:
            answer = await server.post(update)
            assert answer.status_code == 200, answer.text
            await db.settle()
            return int(update["update_id"])

        async def request(client: dict[str, Any]) -> int:
            update_id = await send(message(client, "/request Plot 42, moving in"))
            request_id = await db.value(
                "SELECT id FROM client_request WHERE client_telegram_id = {}", client["id"]
            )
            stored = f"request #{request_id} stored for client {client['id']}"
            expected.append((stored, update_id, request_id))
            return int(request_id)

        async def card(request_id: int) -> dict[str, Any]:
            message_id = await db.value(
                "SELECT message_id FROM admin_notification WHERE request_id = {}", request_id
            )
            text = next(t for t in fake.sent_texts(admin["id"]) if f"#{request_id}<" in t)
            return bot_message(admin["id"], message_id, text)

        fake.fail_next(1, status=500, method="sendMessage")
        first = await request(user(next_id()))
        tapped = await send(callback(admin, f"approve:{first}", await card(first)))
        expected.append((f"request #{first} approved by {admin['id']}", tapped, first))

        second = await request(user(next_id()))
        replied = await send(message(admin, "Reject: not a resident", reply_to=await card(second)))
        expected.append((f"request #{second} rejected by {admin['id']}", replied, second))

        third = await request(user(next_id()))
        stranger = user(next_id(), "Mallory", "mallory")
        refused = await send(callback(stranger, f"approve:{third}", await card(third)))
        expected.append(
            (f"refused a decision by {stranger['id']}: not an active administrator", refused, third)
        )

        for secret in (None, "", SECRET[:-1], SECRET + "x", TOKEN):
            answer = await server.post(message(user(next_id()), "/start"), secret=secret)
            assert answer.status_code == 403
        assert (await server.post(b"{broken")).status_code == 400
        await db.settle()
    return LoggedRun(server.log(), expected)


@pytest.fixture(scope="module")
async def json_run(
    fake_telegram: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LoggedRun]:
    yield await full_run(fake_telegram, tmp_path_factory.mktemp("log-json"), "json")


@pytest.fixture(scope="module")
async def text_run(
    fake_telegram: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LoggedRun]:
    yield await full_run(fake_telegram, tmp_path_factory.mktemp("log-text"), "text")


REQUEST_LINE = re.compile(r"request #\d+ |refused a decision by ")


def test_json_log_is_one_object_per_line_with_ids_on_request_lines(json_run: LoggedRun) -> None:
    entries = []
    for number, line in enumerate(json_run.log.splitlines(), start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        assert datetime.fromisoformat(entry["time"]).utcoffset() is not None, line
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        assert isinstance(entry["logger"], str) and isinstance(entry["message"], str), line
        entries.append(entry)
    assert any(e["level"] == "DEBUG" for e in entries)
    assert any(
        e["level"] == "WARNING"
        and re.match(r"outbox \d+ \(sendMessage\) not sent, retry", e["message"])
        for e in entries
    ), "the failed sendMessage was not logged as a retry"
    about_requests = [
        (e["message"], e.get("update_id"), e.get("request_id"))
        for e in entries
        if REQUEST_LINE.match(e["message"])
    ]
    assert about_requests == json_run.expected


def test_text_log_lines_about_a_request_end_with_their_ids(text_run: LoggedRun) -> None:
    about_requests = [
        line.split(": ", 1)[1]
        for line in text_run.log.splitlines()
        if REQUEST_LINE.search(line) and " sosekni.services.requests: " in line
    ]
    assert about_requests == [
        f"{text} [update_id={update_id} request_id={request_id}]"
        for text, update_id, request_id in text_run.expected
    ]


@pytest.mark.parametrize("run", ["json_run", "text_run"])
def test_debug_log_of_a_full_run_never_shows_the_token_or_the_webhook_secret(
    run: str, request: pytest.FixtureRequest
) -> None:
    log = request.getfixturevalue(run).log
    assert "DEBUG" in log and "not sent, retry" in log and "approved by" in log
    assert TOKEN not in log
    assert TOKEN.split(":", 1)[1] not in log
    assert SECRET not in log
