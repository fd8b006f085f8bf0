"""`sosekni-ops stats` and the numbers behind it and `/stats`, on both engines (the
Telegram command itself is in test_states.py, through the webhook)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.harness import base_env, on_database, ops_in_process
from tests.stats_data import IVAN, OLGA, seed
from tests.test_cli import table_rows

API = "http://127.0.0.1:9"  # the command never calls Telegram


async def test_periods_count_states_times_and_decisions(bound_database: str) -> None:
    from sosekni.db import utcnow
    from sosekni.services import stats

    now = utcnow()
    await seed(now)
    week, month = await stats.periods(now)

    assert (week.days, week.total, week.decisions) == (7, 5, 3)
    assert week.by_status == {
        "pending": 1,
        "approved": 2,
        "rejected": 1,
        "cancelled": 1,
        "expired": 0,
    }
    assert (week.median_seconds, week.p90_seconds) == (3600, 7200)
    assert [(a.telegram_id, a.name, a.approved, a.rejected) for a in week.by_admin] == [
        (OLGA, "Olga", 1, 1),
        (IVAN, "Ivan <i>", 1, 0),
    ]
    assert (month.total, month.decisions) == (7, 4)
    assert month.by_status["expired"] == 1 and month.by_status["approved"] == 3
    assert (month.median_seconds, month.p90_seconds) == (5400, 86400)
    assert [(a.telegram_id, a.approved, a.rejected) for a in month.by_admin] == [
        (OLGA, 1, 1),
        (IVAN, 2, 0),
    ]
    (empty,) = await stats.periods(now - timedelta(days=100), (7,))
    assert (empty.total, empty.decisions, empty.median_seconds, empty.by_admin) == (0, 0, None, [])


def test_percentile_is_the_nearest_rank() -> None:
    from sosekni.services.stats import duration, percentile

    assert percentile([], 0.9) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([float(n) for n in range(1, 11)], 0.9) == 9.0
    assert percentile([float(n) for n in range(1, 12)], 0.9) == 10.0
    assert [duration(s) for s in (None, 44.6, 600, 3900, 86400 + 4 * 3600)] == [
        "—",
        "45 s",
        "10 min",
        "1 h 05 min",
        "1 d 4 h",
    ]


@pytest.fixture
def seeded_url(migrated_url: str) -> str:
    from sosekni.db import utcnow

    on_database(migrated_url, lambda: seed(utcnow()))
    return migrated_url


def test_ops_stats_prints_both_windows_and_each_administrator(seeded_url: str) -> None:
    done = ops_in_process(["stats"], base_env(seeded_url, API))

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    rows = table_rows(done.stdout)
    assert rows[:9] == [
        ["requests", "5", "7"],
        ["pending", "1", "1"],
        ["approved", "2", "3"],
        ["rejected", "1", "1"],
        ["cancelled", "1", "1"],
        ["expired", "0", "1"],
        ["decisions", "3", "4"],
        ["median time to decision", "1 h 00 min", "1 h 30 min"],
        ["90th percentile", "2 h 00 min", "1 d 0 h"],
    ]
    assert rows[9:] == [
        ["Olga", str(OLGA), "1 approved · 1 rejected", "1 approved · 1 rejected"],
        ["Ivan <i>", str(IVAN), "1 approved · 0 rejected", "2 approved · 0 rejected"],
    ]


def test_ops_stats_days_json(seeded_url: str) -> None:
    done = ops_in_process(["stats", "--days", "60", "--json"], base_env(seeded_url, API))

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    report = json.loads(done.stdout)
    (window,) = report["periods"]
    assert (window["days"], window["total"], window["decisions"]) == (60, 8, 5)
    assert window["by_status"]["rejected"] == 2
    assert window["median_seconds"] == 3600
    assert window["by_admin"][0] == {
        "telegram_id": OLGA,
        "name": "Olga",
        "approved": 1,
        "rejected": 2,
    }


def test_ops_stats_refuses_a_window_of_no_days(tmp_path: Path) -> None:
    done = ops_in_process(["stats", "--days", "0"], base_env(f"sqlite:///{tmp_path}/x.db", API))
    assert done.returncode == 2
    assert "--days" in done.stderr
