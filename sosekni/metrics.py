"""GET /metrics in Prometheus text format.

Totals that the database knows (updates processed and failed, messages sent, failed and
pending, decisions) are counted there, so they are exact across workers and restarts.
What only the processes see (updates received, handler latency) lives in one shared
memory array that every Sanic worker of the server writes to, so any worker answering a
scrape reports the whole server since it started.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from sosekni.db import sql

COUNTERS = ("updates_received", "updates_duplicate", "updates_refused", "updates_unreadable")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Layout: counters, then one slot per bucket and +Inf, then the latency sum.
_SIZE = len(COUNTERS) + len(LATENCY_BUCKETS) + 2


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
        index = COUNTERS.index(counter)
        with self.array.get_lock():
            self.array[index] += amount

    def observe_latency(self, seconds: float) -> None:
        base = len(COUNTERS)
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
        inbox = await _counts("inbox_update")
        metric(
            "sosekni_updates_processed_total",
            "counter",
            "Updates processed by the handlers.",
            [("", inbox.get("done", 0))],
        )
        metric(
            "sosekni_updates_failed_total",
            "counter",
            "Updates given up after repeated handler failures.",
            [("", inbox.get("failed", 0))],
        )
        metric(
            "sosekni_updates_pending",
            "gauge",
            "Updates stored but not processed yet.",
            [("", inbox.get("new", 0) + inbox.get("processing", 0))],
        )
        outbox = await _counts("outbox_message")
        metric(
            "sosekni_messages_sent_total", "counter", "Bot API calls delivered.",
            [("", outbox.get("sent", 0))],
        )  # fmt: skip
        metric(
            "sosekni_messages_failed_total", "counter",
            "Bot API calls Telegram refused for good (e.g. bot blocked, chat not found).",
            [("", outbox.get("failed", 0))],
        )  # fmt: skip
        metric(
            "sosekni_messages_pending", "gauge", "Bot API calls queued, not delivered yet.",
            [("", outbox.get("pending", 0) + outbox.get("sending", 0))],
        )  # fmt: skip
        decisions = await _counts("client_request")
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
        base = len(COUNTERS)
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


async def _counts(table: str) -> dict[str, int]:
    rows = await sql(f"SELECT status, count(*) AS n FROM {table} GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


metrics = Metrics()  # rebound to the server's shared array by `use`


def use(array: Any = None) -> Metrics:
    """Point the process-wide `metrics` at the server's shared array (or a private one)."""
    metrics.array = array if array is not None else _LocalArray()
    return metrics
