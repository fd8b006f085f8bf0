"""A few seconds of the benchmark harness (bench/): it runs end to end and reports.

No timing is asserted (CI machines are shared and noisy); only that the harness finishes,
that the report has its figures, and that the bot lost no update and answered no error.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench import burst as bench_burst
from bench import run as bench_run
from bench.saving import raw_path
from tests.harness import Db

EXPECTED_ROW_KEYS = {
    "acked_per_s",
    "webhook_p50_ms",
    "webhook_p95_ms",
    "webhook_p99_ms",
    "processed_per_s",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "peak_rss_mb_worker",
    "cpu_s_per_1k_updates",
    "pg_xact_commit_per_update",
    "ack_vs_ceiling",
    "processed_vs_peer",
}


def test_a_short_benchmark_run_finishes_and_reports(
    postgres_admin_dsn: str, tmp_path: Path
) -> None:
    prefix = tmp_path / "smoke"
    report = bench_run.main(
        [
            "--preset",
            "smoke",
            "--pg",
            postgres_admin_dsn,
            "--out",
            str(prefix),
        ]
    )
    saved = json.loads(raw_path(prefix).read_text())
    assert saved["markdown"] == Path(f"{prefix}.md").read_text()
    assert not Path(f"{prefix}.json").exists()  # raw JSON stays out of the recorded folder
    assert "| sosekni w=1 50/s seeds=100 |" in saved["markdown"]

    rows = {row["config"]["system"]: row for row in report["rows"]}
    assert set(rows) == {"ceiling", "peer", "sosekni"}
    row = rows["sosekni"]
    assert EXPECTED_ROW_KEYS <= set(row)
    assert row["ack_vs_ceiling"] is not None and row["processed_vs_peer"] is not None
    [run] = [run for run in report["runs"] if run["config"]["system"] == "sosekni"]
    assert run["sent"] > 0
    assert run["acked"] == run["sent"], run["statuses"]
    assert run["errors"] == 0
    assert run["lost"] == 0
    assert run["inbox_failed"] == 0
    assert run["pg"]["db"]["xact_commit"] > 0
    assert run["peak_rss_mb_worker"] > 0
    # every database the harness made is gone
    left = asyncio.run(_databases_named(postgres_admin_dsn, f"sosekni_bench_{report['db_tag']}_%"))
    assert left == []


async def _databases_named(dsn: str, pattern: str) -> list[str]:
    rows = await Db(dsn).fetch("SELECT datname FROM pg_database WHERE datname LIKE {}", pattern)
    return [r["datname"] for r in rows]


BURST_RUN_KEYS = {*bench_burst.SUMMARY_KEYS, "confirmation_floor_s"}  # every figure, none None


def test_the_burst_scenario_runs_and_reports(postgres_admin_dsn: str, tmp_path: Path) -> None:
    """Scenario `burst` with 5 clients on this tree: every request shown to both, decided."""
    prefix = tmp_path / "burst"
    report = bench_burst.main(
        ["--n", "5", "--pg", postgres_admin_dsn, "--out", str(prefix), "--drain", "30"]
    )
    saved = json.loads(raw_path(prefix).read_text())
    assert saved["markdown"] == Path(f"{prefix}.md").read_text()
    assert not Path(f"{prefix}.json").exists()  # raw JSON stays out of the recorded folder
    assert "| current | 5 |" in saved["markdown"]

    [run] = report["runs"]
    assert BURST_RUN_KEYS <= set(run)
    for key in BURST_RUN_KEYS:
        assert run[key] is not None, key
    assert run["stored"] == 5
    assert run["missing_confirmations"] == 0
    for admin in ("1001", "1002"):
        figures = run["admins"][admin]
        assert figures["shown"] == 5 and figures["not_shown"] == 0, figures
        assert figures["all_shown_s_after_last_stored"] is not None
        assert figures["send_messages_request_phase"] > 0
    assert run["approved"] == 5, run["decided"]
    assert run["tap_answered_missing"] == 0
    assert run["client_outcome_missing"] == 0
    assert run["other_admin_lag_missing"] == 0
    assert run["errors"] == 0
    [row] = report["rows"]
    assert row["missing_max"] == 0
    left = asyncio.run(_databases_named(postgres_admin_dsn, f"sosekni_bench_{report['db_tag']}_%"))
    assert left == []
