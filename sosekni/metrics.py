"""GET /metrics in Prometheus text format, written by prometheus_client.

What the processes count lives in one shared memory array that every Sanic worker of the
server writes to, so any worker answering a scrape reports the whole server since it
started: updates received, duplicate, refused and unreadable (the webhook), processed and
failed (the inbox worker, as it marks them), messages sent and failed (the sender),
and the handler latency. These totals are counters kept as they change, not counts of
rows: retention deletes finished rows, and a count would go backwards with them (and cost
more with every row kept). Like every Prometheus counter they restart from zero with the
server. Counted in memory and not in a counters table on purpose: one row updated in every
handler's transaction would make all workers queue on its row lock on Postgres.

Gauges read the database through partial indexes of open rows, so a scrape costs what is
waiting, not what was ever done: updates and messages pending, requests pending. Decisions
by response are counted from the requests (the audit record, never deleted) through the
status index.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from sosekni.db import sql

COUNTERS = ("updates_received", "updates_duplicate", "updates_refused", "updates_unreadable")
# Totals the workers keep as they mark rows (see the module's docstring).
TOTALS = ("updates_processed", "updates_failed", "messages_sent", "messages_failed")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Layout: counters, totals, then one slot per bucket and +Inf, then the latency sum.
_SIZE = len(COUNTERS) + len(TOTALS) + len(LATENCY_BUCKETS) + 2


def shared_array() -> SynchronizedArray:
    """The array the server's main process creates for its workers to share."""
    return multiprocessing.get_context("spawn").Array("d", _SIZE)


class _LocalArray(list):
    """The same interface as a shared array, for a process that shares with nobody."""

    def __init__(self) -> None:
        super().__init__([0.0] * _SIZE)
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


class Metrics:
    def __init__(self, array: Any = None) -> None:
        # Not a multiprocessing.Array here: creating one would fix the start method early.
        self.array = array if array is not None else _LocalArray()

    def inc(self, counter: str, amount: float = 1) -> None:
        index = (*COUNTERS, *TOTALS).index(counter)
        with self.array.get_lock():
            self.array[index] += amount

    def observe_latency(self, seconds: float) -> None:
        base = len(COUNTERS) + len(TOTALS)
        with self.array.get_lock():
            for n, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.array[base + n] += 1
            self.array[base + len(LATENCY_BUCKETS)] += 1
            self.array[base + len(LATENCY_BUCKETS) + 1] += seconds

    def snapshot(self) -> list[float]:
        with self.array.get_lock():
            return list(self.array)

    async def render(self) -> str:
        """The exposition: the process counters from the shared array, the gauges and the
        decisions from the database, written by prometheus_client's text formatter."""
        values = self.snapshot()
        count = dict(zip((*COUNTERS, *TOTALS), values, strict=False))
        requests = {
            status: await _count("client_request", f"status = '{status}'")
            for status in ("approved", "rejected", "pending")
        }
        decisions = CounterMetricFamily(
            "sosekni_request_decisions_total", "Requests decided, by response.", labels=["response"]
        )
        for response in ("approved", "rejected"):
            decisions.add_metric([response], requests[response])
        families: list[Metric] = [
            *(_counter(name, help_, count[key]) for name, key, help_ in _COUNTED),
            _gauge(
                "sosekni_updates_pending",
                "Updates stored but not processed yet.",
                await _count("inbox_update", INBOX_OPEN),
            ),
            _gauge(
                "sosekni_messages_pending",
                "Bot API calls queued, not delivered yet.",
                await _count("outbox_message", OUTBOX_OPEN),
            ),
            decisions,
            _gauge(
                "sosekni_requests_pending", "Requests waiting for a decision.", requests["pending"]
            ),
        ]
        base = len(COUNTERS) + len(TOTALS)
        buckets = [(f"{bound:g}", values[base + n]) for n, bound in enumerate(LATENCY_BUCKETS)]
        buckets.append(("+Inf", values[base + len(LATENCY_BUCKETS)]))
        families.append(
            HistogramMetricFamily(
                "sosekni_handler_latency_seconds",
                "Time to process one update through the handlers.",
                buckets=buckets,
                sum_value=values[base + len(LATENCY_BUCKETS) + 1],
            )
        )
        return generate_latest(_Families(families)).decode()


# The counters, in the order they are shown: (name, array slot, help).
_COUNTED = (
    ("sosekni_updates_received_total", "updates_received",
     "Updates the webhook accepted and stored (since the server started)."),
    ("sosekni_updates_duplicate_total", "updates_duplicate",
     "Updates acknowledged again without processing (update_id already stored)."),
    ("sosekni_updates_refused_total", "updates_refused",
     "Webhook calls refused (bad secret, content type, body, size or storage down)."),
    ("sosekni_updates_unreadable_total", "updates_unreadable",
     "Updates acknowledged but kept as failed: the bot cannot read them."),
    ("sosekni_updates_processed_total", "updates_processed",
     "Updates processed by the handlers (since the server started)."),
    ("sosekni_updates_failed_total", "updates_failed",
     "Updates given up after repeated handler failures (since the server started)."),
    ("sosekni_messages_sent_total", "messages_sent",
     "Bot API calls delivered, per queued message (since the server started)."),
    ("sosekni_messages_failed_total", "messages_failed",
     "Bot API calls Telegram refused for good (e.g. bot blocked, chat not found)."),
)  # fmt: skip


def _counter(name: str, help_: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_)
    family.add_metric([], value)
    return family


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_)
    family.add_metric([], value)
    return family


class _Families:
    """What `generate_latest` asks of a registry: the families to write, in order."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


# Open rows, written exactly as the partial indexes of open rows (migration
# `claim_indexes`) are: SQLite uses a partial index only for a query that repeats its WHERE.
INBOX_OPEN = "(status = 'new' OR status = 'processing')"
OUTBOX_OPEN = "(status = 'pending' OR status = 'sending')"


async def _count(table: str, where: str) -> int:
    """Rows of `table` matching `where`, which an index must cover (see the docstring)."""
    rows = await sql(f"SELECT count(*) AS n FROM {table} WHERE {where}")
    return int(rows[0]["n"])


metrics = Metrics()  # rebound to the server's shared array by `use`


def use(array: Any = None) -> Metrics:
    """Point the process-wide `metrics` at the server's shared array (or a private one)."""
    metrics.array = array if array is not None else _LocalArray()
    return metrics
