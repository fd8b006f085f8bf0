"""``python -m sosekni.standin --port 0``: the Telegram stand-in as a process of its own.

Prints ``listening on PORT`` once it accepts connections; the records are read over
``GET /bench/calls``, ``GET /bench/details`` and forgotten with ``POST /bench/reset``. Runs on
uvloop (the benchmark's numbers are the bot's, not the stand-in's). SIGTERM or SIGINT ends it
with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from sosekni.standin.botapi import DEFAULT_TOKEN, DEFAULT_USERNAME, TelegramStandIn
from sosekni.standin.server import run_fast


async def serve(standin: TelegramStandIn) -> None:
    """Serve until SIGTERM or SIGINT."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    port = await standin.open()
    print(f"listening on {port}", flush=True)
    try:
        await done.wait()
    finally:
        await standin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sosekni.standin", description="Run the Telegram Bot API stand-in."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the only bot token accepted")
    parser.add_argument("--username", default=DEFAULT_USERNAME, help="the bot's username")
    args = parser.parse_args(argv)
    standin = TelegramStandIn(args.token, port=args.port, username=args.username, host=args.host)
    run_fast(serve(standin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
