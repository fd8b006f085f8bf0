"""GET /metrics in Prometheus text format.

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
        values = self.snapshot()
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_number(v)}" for labels, v in samples)

        received, duplicate, refused, unreadable = values[: len(COUNTERS)]
        metric(
            "sosekni_updates_received_total",
            "counter",
            "Updates the webhook accepted and stored (since the server started).",
            [("", received)],
        )
        metric(
            "sosekni_updates_duplicate_total",
            "counter",
            "Updates acknowledged again without processing (update_id already stored).",
            [("", duplicate)],
        )
        metric(
            "sosekni_updates_refused_total",
            "counter",
            "Webhook calls refused (bad secret, content type, body, size or storage down).",
            [("", refused)],
        )
        metric(
            "sosekni_updates_unreadable_total",
            "counter",
            "Updates acknowledged but kept as failed: the bot cannot read them.",
            [("", unreadable)],
        )
        total = dict(zip(TOTALS, values[len(COUNTERS) : len(COUNTERS) + len(TOTALS)], strict=True))
        metric(
            "sosekni_updates_processed_total",
            "counter",
            "Updates processed by the handlers (since the server started).",
            [("", total["updates_processed"])],
        )
        metric(
            "sosekni_updates_failed_total",
            "counter",
            "Updates given up after repeated handler failures (since the server started).",
            [("", total["updates_failed"])],
        )
        metric(
            "sosekni_updates_pending",
            "gauge",
            "Updates stored but not processed yet.",
            [("", await _count("inbox_update", INBOX_OPEN))],
        )
        metric(
            "sosekni_messages_sent_total", "counter",
            "Bot API calls delivered, per queued message (since the server started).",
            [("", total["messages_sent"])],
        )  # fmt: skip
        metric(
            "sosekni_messages_failed_total", "counter",
            "Bot API calls Telegram refused for good (e.g. bot blocked, chat not found).",
            [("", total["messages_failed"])],
        )  # fmt: skip
        metric(
            "sosekni_messages_pending", "gauge", "Bot API calls queued, not delivered yet.",
            [("", await _count("outbox_message", OUTBOX_OPEN))],
        )  # fmt: skip
        decisions = {
            status: await _count("client_request", f"status = '{status}'")
            for status in ("approved", "rejected", "pending")
        }
        metric(
            "sosekni_request_decisions_total",
            "counter",
            "Requests decided, by response.",
            [
                ('{response="approved"}', decisions.get("approved", 0)),
                ('{response="rejected"}', decisions.get("rejected", 0)),
            ],
        )
        metric(
            "sosekni_requests_pending", "gauge", "Requests waiting for a decision.",
            [("", decisions.get("pending", 0))],
        )  # fmt: skip
        base = len(COUNTERS) + len(TOTALS)
        buckets = [
            (f'{{le="{bound:g}"}}', values[base + n]) for n, bound in enumerate(LATENCY_BUCKETS)
        ]
        count = values[base + len(LATENCY_BUCKETS)]
        name = "sosekni_handler_latency_seconds"
        lines.append(f"# HELP {name} Time to process one update through the handlers.")
        lines.append(f"# TYPE {name} histogram")
        lines.extend(f"{name}_bucket{labels} {_number(v)}" for labels, v in buckets)
        lines.append(f'{name}_bucket{{le="+Inf"}} {_number(count)}')
        lines.append(f"{name}_sum {values[base + len(LATENCY_BUCKETS) + 1]:.6f}")
        lines.append(f"{name}_count {_number(count)}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


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
