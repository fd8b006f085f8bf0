"""The ceiling baseline: a bare Sanic route answering 200 and doing nothing else.

Same Sanic, same worker model and the same route as `sosekni-ops serve`, so the ratio of the
bot's acknowledged throughput to this one is the cost of everything the bot does per update.
Run: ``python -m bench.ceiling --port 8080 --workers 2``.
"""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from bench.serve import arguments, serve

OK = b'{"ok":true}'


async def webhook(request: Request) -> HTTPResponse:
    return HTTPResponse(OK, content_type="application/json")


def create_app() -> Sanic:
    app = Sanic("bench_ceiling", configure_logging=False)
    app.config.MOTD = False
    app.add_route(webhook, "/webhook/telegram", methods=["POST"])
    return app


def main() -> None:
    serve(create_app, arguments(__doc__))


if __name__ == "__main__":
    main()
