"""The ceiling baseline: a bare Sanic route answering 200 and doing nothing else.

Same Sanic, same worker model and the same route as `sosekni-ops serve`, so the ratio of the
bot's acknowledged throughput to this one is the cost of everything the bot does per update.
Run: ``python -m bench.ceiling --port 8080 --workers 2``.
"""

from __future__ import annotations

import argparse

from sanic import Request, Sanic
from sanic.response import HTTPResponse

OK = b'{"ok":true}'


async def webhook(request: Request) -> HTTPResponse:
    return HTTPResponse(OK, content_type="application/json")


def create_app() -> Sanic:
    app = Sanic("bench_ceiling", configure_logging=False)
    app.config.MOTD = False
    app.add_route(webhook, "/webhook/telegram", methods=["POST"])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    from sanic.worker.loader import AppLoader

    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(host=args.host, port=args.port, workers=args.workers, access_log=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
