"""`sosekni-ops serve` with benchmark instruments, without touching the app's code.

Exactly what `ops/serve.py` does (same factory `sosekni.app.create_app`, same Sanic worker
model), plus, when asked through the environment (each Sanic worker reads it):

* ``BENCH_LIFT_LIMITS=1``: the app gets a `DeliveryPolicy` with Telegram's limits (30
  messages/s overall, 1/s per chat, 20/min per group) lifted, to measure the pipeline rather
  than the policy;
* ``BENCH_BACKOFF_SCALE=FACTOR``: the retry backoff is FACTOR times the default
  (`DeliveryPolicy.scaled`), so the fault tests watch real processes back off 0.2, 0.4,
  0.8 … seconds instead of 1, 2, 4 …; a test hook, not a product setting;
* ``BENCH_PROFILE=PREFIX``: pyinstrument samples each worker from server start to stop and
  writes ``PREFIX-<pid>.txt`` (and ``.html``);
* ``BENCH_SQL_COUNTS=PREFIX``: every statement sent through asyncpg (including transaction
  control and the pool's reset on release) is counted and written to ``PREFIX-<pid>.json``.

The plain benchmark runs the real ``sosekni-ops serve``; this wrapper is only used for the
variants above. Run: ``python -m bench.serve --port 8080 --workers 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sanic import Sanic

if TYPE_CHECKING:
    from sosekni.config import Settings


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _count_sql(app: Sanic, prefix: str) -> None:
    import asyncpg.connection

    counts: Counter[str] = Counter()
    spaces = re.compile(r"\s+")

    def wrap(name: str) -> None:
        original = getattr(asyncpg.connection.Connection, name)

        async def counted(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            counts[spaces.sub(" ", query.strip())[:110]] += 1
            return await original(self, query, *args, **kwargs)

        setattr(asyncpg.connection.Connection, name, counted)

    for name in ("execute", "fetch", "fetchval", "fetchrow"):
        wrap(name)

    @app.after_server_stop
    async def write_counts(app: Sanic) -> None:
        _write(f"{prefix}-{os.getpid()}.json", json.dumps(dict(counts.most_common()), indent=1))


def _profile(app: Sanic, prefix: str) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")

    @app.after_server_start
    async def start_profile(app: Sanic) -> None:
        profiler.start()

    @app.before_server_stop
    async def write_profile(app: Sanic) -> None:
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        _write(f"{prefix}-{os.getpid()}.txt", text)
        _write(f"{prefix}-{os.getpid()}.html", profiler.output_html())


def create_bench_app() -> Sanic:
    """`sosekni.app.create_app()` with the instruments the environment asks for."""
    from sosekni.app import create_app
    from sosekni.delivery.policy import DEFAULT_POLICY

    policy = DEFAULT_POLICY
    if os.environ.get("BENCH_LIFT_LIMITS") == "1":
        policy = policy.lifted()
    if scale := os.environ.get("BENCH_BACKOFF_SCALE"):
        policy = policy.scaled(float(scale))
    app = create_app(policy=policy)
    if prefix := os.environ.get("BENCH_SQL_COUNTS"):
        _count_sql(app, prefix)
    if prefix := os.environ.get("BENCH_PROFILE"):
        _profile(app, prefix)
    return app


def arguments(description: str | None, workers: bool = True) -> argparse.Namespace:
    """The command line every bench server takes: --host, --port and (Sanic's) --workers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    if workers:
        parser.add_argument("--workers", type=int, default=1)
    return parser.parse_args()


def bot_settings() -> Settings:
    """The bot's settings from the environment, and its logging, as `sosekni-ops serve` has."""
    from sosekni import logs
    from sosekni.config import load_settings

    settings = load_settings(need_token=True, need_webhook_secret=True)
    logs.configure(settings.log_level, settings.log_format, settings.secrets)
    return settings


def serve(factory: Callable[[], Sanic], args: argparse.Namespace) -> None:
    """Sanic's worker model on `factory`'s app, as `sosekni-ops serve` runs the bot's."""
    from sanic.worker.loader import AppLoader

    loader = AppLoader(factory=factory)
    app = loader.load()
    app.prepare(host=args.host, port=args.port, workers=args.workers, access_log=False)
    Sanic.serve(primary=app, app_loader=loader)


def main() -> None:
    args = arguments(__doc__)
    bot_settings()
    serve(create_bench_app, args)


if __name__ == "__main__":
    main()
