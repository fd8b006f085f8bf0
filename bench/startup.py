"""Start-up: how long `sosekni-ops` takes to answer, and `serve` to become ready (issue 12).

An operator types `sosekni-ops --help` or `releases` and waits for every import on the way;
a deploy or a restart waits for `serve` to answer /health. Both are measured as an operator
meets them: a fresh process, wall-clock time, the median of `--repeats`.

* CLI: `--help`, `migrate --help` and `releases` (no database, no Telegram), each a fresh
  `sosekni-ops` process, from spawn to exit.
* serve: `sosekni-ops serve --workers N` on a fresh SQLite file (which it migrates first, as
  an operator's first start does) against the Telegram stand-in (`sosekni.standin`), from spawn
  until every worker has logged that its bot is ready and GET /health answers 200. It uses
  `bench.run.Server`, which polls every 0.2 s: that is the resolution of this figure.
  With `--postgres ADMIN_DSN` the same on Postgres too: each start-up gets a new database
  there, migrated beforehand (outside the figure: `serve` does not migrate Postgres).

`--ops "python -m ops.cli" --cwd OTHER_CHECKOUT` measures another tree with this venv (for a
before/after: `git worktree add /tmp/before main`). Prints a Markdown table.

    uv run python -m bench.startup                      # 10 CLI repeats, 3 serve repeats
    uv run python -m bench.startup --repeats 20 --serve-repeats 5 --workers 1 2
    uv run python -m bench.startup --repeats 0 --workers 1 2 \
        --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.run import ROOT, Config, Database, FakeApi, Server, server_env
from tests.harness import ops_command, run_ops

CLI_CASES: tuple[tuple[str, ...], ...] = (("--help",), ("migrate", "--help"), ("releases",))


def time_cli(ops: list[str], args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> float:
    """Seconds from spawn to exit of one `sosekni-ops ARGS` (which must succeed)."""
    started = time.perf_counter()
    done = run_ops(*args, env=env, columns="100", ops=ops, cwd=cwd)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"sosekni-ops {' '.join(args)} failed: {done.stderr.strip()}")
    return elapsed


def time_serve(
    ops: list[str], cwd: Path, api: FakeApi, workers: int, folder: Path, url: str | None = None
) -> float:
    """Seconds from spawning `serve` until it is ready: on `url`, or a fresh SQLite file."""
    name = f"serve-{time.monotonic_ns()}"
    server = Server(
        config=Config("sosekni", workers, 0, 0),
        env=server_env(url or f"sqlite:///{folder / name}.db", api.base_url),
        log_path=folder / f"{name}.log",
        ops=ops,
        cwd=cwd,
    )
    started = time.perf_counter()
    try:
        server.start(timeout=120)
        return time.perf_counter() - started
    finally:
        server.stop()


def postgres_figures(
    args: argparse.Namespace, ops: list[str], api: FakeApi, folder: Path
) -> dict[str, float]:
    """`serve` start-ups on Postgres, each on a new database migrated beforehand."""
    database = Database(args.postgres, f"startup_{uuid.uuid4().hex[:6]}")
    figures: dict[str, float] = {}
    try:
        for workers in args.workers:
            runs = []
            for _ in range(args.serve_repeats):
                url = asyncio.run(database.fresh(api.base_url, ops, args.cwd))
                runs.append(time_serve(ops, args.cwd, api, workers, folder, url))
                asyncio.run(database.drop(url))
            figures[f"serve --workers {workers} until ready (Postgres)"] = statistics.median(runs)
    finally:
        asyncio.run(database.drop_all())
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs of each CLI command")
    parser.add_argument("--serve-repeats", type=int, default=3, help="start-ups of serve")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="serve --workers")
    parser.add_argument("--ops", help="the sosekni-ops command (default: this venv's script)")
    parser.add_argument("--cwd", type=Path, default=ROOT, help="the tree it runs in")
    parser.add_argument("--postgres", metavar="ADMIN_DSN", help="also serve on Postgres")
    args = parser.parse_args(argv)
    ops = shlex.split(args.ops) if args.ops else ops_command()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sosekni-startup-") as tmp:
        folder = Path(tmp)
        env = server_env(f"sqlite:///{folder / 'cli.db'}", "http://127.0.0.1:9")
        env |= {"DEPLOY_ROOT": str(folder / "deploy")}
        for case in CLI_CASES if args.repeats > 0 else ():
            time_cli(ops, case, args.cwd, env)  # warm the bytecode and the page cache
            runs = [time_cli(ops, case, args.cwd, env) for _ in range(args.repeats)]
            figures[f"sosekni-ops {' '.join(case)}"] = statistics.median(runs)
        api = FakeApi()
        try:
            for workers in args.workers:
                runs = [
                    time_serve(ops, args.cwd, api, workers, folder)
                    for _ in range(args.serve_repeats)
                ]
                figures[f"serve --workers {workers} until ready (SQLite)"] = statistics.median(runs)
            if args.postgres:
                figures |= postgres_figures(args, ops, api, folder)
        finally:
            api.close()
    print(f"| what (median; {args.repeats} CLI runs, {args.serve_repeats} serve runs) | s |")
    print("|---|---|")
    for what, seconds in figures.items():
        print(f"| `{what}` | {seconds:.2f} |")
    return figures


if __name__ == "__main__":
    main()
