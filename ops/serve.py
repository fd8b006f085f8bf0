"""`serve` (the Sanic webhook server) and `poll` (long polling for local development)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import warnings
from collections.abc import Iterator
from typing import Annotated

import typer

from ops.common import console, fail, plain, settings_or_fail, with_database
from sosekni import lifecycle, logs, migrations

log = logging.getLogger("sosekni.poll")
serve_log = logging.getLogger("sosekni.serve")

# poll asks getUpdates for the raw JSON (stored as the webhook stores it), on purpose.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.getUpdates'")


def _migrate_sqlite(settings) -> None:
    from sosekni.db import sql

    async def work() -> list[str]:
        await sql("PRAGMA journal_mode=WAL")
        return await migrations.forwards()

    applied = with_database(settings, work)
    if applied:
        console.print(plain(f"applied {len(applied)} migration(s) to {settings.database_url}"))


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: SERVE_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (default: SERVE_PORT, 8080).", min=1, max=65535),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
) -> None:
    """Run the Sanic webhook server (POST /webhook/telegram, GET /health).

    On the embedded SQLite database it applies migrations first.

    Example: sosekni-ops serve --host 127.0.0.1 --port 8080 --workers 2
    """
    settings = settings_or_fail(need_token=True, need_webhook_secret=True)
    host = settings.serve_host if host is None else host
    port = settings.serve_port if port is None else port
    if settings.is_sqlite:
        _migrate_sqlite(settings)
    logs.configure(settings.log_level, settings.log_format, settings.secrets)
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from sosekni.app import create_app

    inherited = systemd_socket()
    if inherited is None:
        _check_can_listen(host, port)
    loader = AppLoader(factory=create_app)
    app = loader.load()
    if inherited is None:
        app.prepare(host=host, port=port, workers=workers, access_log=False)
    else:
        address = inherited.getsockname()
        serve_log.info("listening on %s:%s, the socket systemd passed", address[0], address[1])
        app.prepare(sock=inherited, workers=workers, access_log=False)
    with _children_skip_the_cli():
        Sanic.serve(primary=app, app_loader=loader)
    lifecycle.release_helpers()


@contextlib.contextmanager
def _children_skip_the_cli() -> Iterator[None]:
    """Spawned processes start without re-running this command line.

    Sanic starts its state manager and every worker with the 'spawn' method, and a spawned
    child first re-runs the parent's `__main__` (the `sosekni-ops` script, or `ops.cli` under
    `python -m`): Typer, Rich, pydantic and every command module, ~0.3 s a process (more on a
    busy machine) for nothing, since what a child runs comes from its pickled arguments
    (`sanic.worker.serve` and the `AppLoader` of `sosekni.app.create_app`), imported by name.
    multiprocessing re-runs `__main__` only when it knows where it came from (its `__spec__`
    or `__file__`): both are hidden while Sanic serves, as under `python -c`, and put back.
    """
    main = sys.modules["__main__"]
    saved = {key: vars(main)[key] for key in ("__spec__", "__file__") if key in vars(main)}
    main.__spec__ = None
    vars(main).pop("__file__", None)
    try:
        yield
    finally:
        vars(main).update(saved)


class _KeptSocket(socket.socket):
    """The listening socket systemd passed, which must outlive this process.

    Sanic shuts its listening sockets down when it stops. On a socket systemd holds (socket
    activation) that would stop the listener for everyone: the connections queued while this
    process stops and the next one starts would be refused. Closing this process's descriptor
    is all a stop should do. Pickled for a spawned worker as a plain socket.
    """

    def shutdown(self, how: int) -> None:
        pass

    def __reduce_ex__(self, protocol: object) -> tuple[object, ...]:
        from multiprocessing.reduction import _reduce_socket  # type: ignore[attr-defined]

        return _reduce_socket(self)


SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first passed descriptor


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed to this process (`sosekni.socket`), or None.

    Socket activation: systemd holds the socket while the service restarts, so connections
    wait in the kernel's queue instead of being refused, and the next process accepts them.
    The variables are removed so that no child takes them for its own.
    """
    pid, count = os.environ.pop("LISTEN_PID", None), os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or pid.strip() != str(os.getpid()):
        return None
    if count.strip() != "1":
        fail(f"systemd passed {count} sockets (LISTEN_FDS); the service listens on one")
    try:
        sock = _KeptSocket(fileno=SD_LISTEN_FDS_START)
    except OSError as exc:
        fail(f"the socket systemd passed (descriptor 3) is unusable: {exc.strerror or exc}")
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        fail("the socket systemd passed is not a listening TCP socket (ListenStream=)")
    return sock


def _check_can_listen(host: str, port: int) -> None:
    """Fail with one line now rather than with a traceback from every worker."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def poll(
    timeout: Annotated[int, typer.Option(help="Long-poll timeout in seconds.", min=1, max=50)] = 25,
) -> None:
    """Run the bot with long polling (getUpdates): local development without a public URL.

    Updates go through the same inbox, handlers and outbox as with the webhook. Telegram
    refuses getUpdates while a webhook is set: run `sosekni-ops webhook delete` first.

    Example: sosekni-ops poll
    """
    settings = settings_or_fail(need_token=True)
    if settings.is_sqlite:
        _migrate_sqlite(settings)
    logs.configure(settings.log_level, settings.log_format, settings.secrets)
    asyncio.run(_poll(settings, timeout))


async def _poll(settings, timeout: int) -> None:
    from telegram import Update
    from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter

    from sosekni.delivery import inbox
    from sosekni.delivery.outbox import retry_seconds
    from sosekni.delivery.policy import Backoff
    from sosekni.runtime import Runtime
    from sosekni.updates import allowed_updates

    kinds = allowed_updates(settings.community_chat_id)
    runtime = Runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    bot = runtime.application.bot
    offset: int | None = None
    fetching = Backoff(2, 30)  # Telegram unreachable: 2, 4, 8 … 30 s between tries
    console.print("polling Telegram for updates; Ctrl-C stops")
    try:
        while not stop.is_set():
            kwargs: dict[str, object] = {"timeout": timeout, "allowed_updates": kinds}
            if offset is not None:
                kwargs["offset"] = offset
            fetch = asyncio.create_task(
                bot.do_api_request("getUpdates", api_kwargs=kwargs, read_timeout=timeout + 10)
            )
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if fetch not in done:
                fetch.cancel()
                break
            stopped.cancel()
            try:
                updates = fetch.result()
            except Conflict:
                fail(
                    "Telegram refuses getUpdates while a webhook is set: "
                    "run `sosekni-ops webhook delete` first",
                    settings,
                )
            except InvalidToken:
                fail("Telegram rejected TELEGRAM_BOT_TOKEN", settings)
            except RetryAfter as exc:
                await asyncio.sleep(retry_seconds(exc))
                continue
            except NetworkError as exc:
                delay = fetching.next()
                log.warning("getUpdates failed (%s); retrying in %.0fs", exc.message, delay)
                await asyncio.sleep(delay)
                continue
            fetching.reset()
            for data in updates:
                offset = data["update_id"] + 1
                try:
                    kind, chat_id = inbox.describe(Update.de_json(data, None), data)
                except Exception as exc:
                    log.warning("skipping update %s: %s", data["update_id"], exc)
                    continue
                storing = Backoff(0.5, 10)
                while True:
                    try:
                        await inbox.store(data["update_id"], json.dumps(data), kind, chat_id)
                        break
                    except Exception as exc:  # keep the update until the database is back
                        log.warning("cannot store update (%s); retrying", type(exc).__name__)
                        await asyncio.sleep(storing.next())
    finally:
        await runtime.stop()
