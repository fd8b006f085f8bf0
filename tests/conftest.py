"""Shared fixtures: the fake Bot API, a real PostgreSQL, the bot as a real server, and the
webhook app in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from sosekni.standin import FakeTelegram
from tests import skips
from tests.fakes.postgres import create_database, drop_database, postgres_server
from tests.harness import COLUMNS, SECRET, TEMPLATES, TOKEN, BotServer, Db, base_env

if TYPE_CHECKING:
    from sanic import Sanic


@pytest.fixture(scope="session")
def fake_telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def telegram(fake_telegram: FakeTelegram) -> FakeTelegram:
    """The session's fake Bot API, emptied for this test."""
    fake_telegram.reset()
    return fake_telegram


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn
        TEMPLATES.drop_postgres(dsn)


@pytest.fixture(scope="session", autouse=True)
def wide_console() -> None:
    """In-process commands print as wide as `run_ops`' real ones (COLUMNS), so a line holding a
    temporary path never wraps at 80 columns however long pytest makes the path."""
    from ops.common import console

    console.width = COLUMNS


# The files that take longest, in that order: started first, so that the parallel workers
# (pytest-xdist, one file per worker at a time) finish together instead of one of them
# starting the provisioning test last.
STARTED_FIRST = (
    "test_ansible.py",
    "test_deploy.py",
    "test_load_and_limits.py",
    "test_workflow.py",
    "test_shutdown.py",
    "test_faults.py",
    "test_sandbox_browser.py",
    "test_socket_activation.py",
    "test_sandbox.py",
    "test_bench_smoke.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(STARTED_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as is


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: half as many workers again as CPUs. A test file spends much of its time
    waiting on the processes it starts (servers, pg_dump, uv, ansible), so a worker more
    than the CPUs keeps them busy: 335 s against 408 s for the suite on 2 CPUs."""
    return max(2, (os.cpu_count() or 1) * 3 // 2)


def pytest_configure(config: pytest.Config) -> None:
    if skips.wanted() and not hasattr(config, "workerinput"):  # the controller sees every report
        config.pluginmanager.register(skips.NoSkips(), "sosekni-no-skips")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The session's migrated SQLite template goes with the session."""
    TEMPLATES.remove_sqlite()


@pytest.fixture
def postgres_url(postgres_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty Postgres database for one test."""
    dsn = create_database(postgres_admin_dsn)
    yield dsn
    drop_database(postgres_admin_dsn, dsn)


@contextlib.contextmanager
def migrated_copy(backend: str, request: pytest.FixtureRequest, tmp: Path) -> Iterator[str]:
    """A migrated database of `backend` of its own (a copy of the session's template; a
    SQLite file in `tmp`), dropped on leaving. Only Postgres asks for the Postgres server."""
    admin_dsn = request.getfixturevalue("postgres_admin_dsn") if backend == "postgres" else None
    url = TEMPLATES.copy(backend, admin_dsn, tmp)
    try:
        yield url
    finally:
        if admin_dsn is not None:
            drop_database(admin_dsn, url)


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of each engine, of its own, for in-process tests."""
    with migrated_copy(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture
async def bound_database(migrated_url: str) -> AsyncIterator[str]:
    """`migrated_url` bound (and pooled on Postgres) as the services' engine in this loop."""
    from sosekni.db import bind, close_pool, engine_for, open_pool

    engine = engine_for(migrated_url)
    bind(engine)
    await open_pool(engine, 10)
    yield migrated_url
    await close_pool(engine)


def migrated_database(kind: str, admin_dsn: str | None, tmp: Path, api: str = "") -> str:
    """A migrated database of `kind` of its own ("sqlite": in `tmp`), copied from the
    session's template; the caller drops a Postgres one. `api` is no longer needed."""
    return TEMPLATES.copy(kind, admin_dsn, tmp)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def module_database(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One migrated database per module and backend, for servers the module starts itself."""
    with migrated_copy(backend, request, tmp_path_factory.mktemp(f"db-{backend}")) as url:
        yield url


@contextlib.contextmanager
def running_bot(
    url: str,
    api: str,
    log_path: Path,
    *,
    workers: int = 1,
    runner: Callable[..., BotServer] = BotServer,
    **env: str,
) -> Iterator[tuple[BotServer, Db]]:
    """`sosekni-ops serve --workers N` on `url` (with `env` over `base_env`) and a probe of
    its database; stopped on leaving (stopping it before is fine). `runner` is the server
    class (e.g. `PacedBotServer`)."""
    server = runner(base_env(url, api, **env), workers=workers, log_path=log_path)
    try:
        server.start()
        yield server, Db(url)
    finally:
        server.stop()


StartBot = Callable[..., tuple[BotServer, Db]]


@pytest.fixture
def start_bot(
    request: pytest.FixtureRequest,
    fake_telegram: FakeTelegram,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StartBot]:
    """The server factory: `start_bot(backend="postgres", workers=1, url=None, **env)` runs
    the bot against the fake Bot API until the test ends, on a migrated database of its own
    (or on `url`, the caller's); `env` goes over `base_env`."""
    with contextlib.ExitStack() as stack:

        def start(
            backend: str = "postgres", workers: int = 1, url: str | None = None, **env: str
        ) -> tuple[BotServer, Db]:
            tmp = tmp_path_factory.mktemp(f"bot-{backend}")
            if url is None:
                url = stack.enter_context(migrated_copy(backend, request, tmp))
            api = fake_telegram.base_url
            running = running_bot(url, api, tmp / "serve.log", workers=workers, **env)
            return stack.enter_context(running)

        yield start


@pytest.fixture(scope="module")
def server(
    module_database: str, fake_telegram: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BotServer, Db]]:
    """One running bot per module and backend, on a migrated database of its own."""
    log_path = tmp_path_factory.mktemp("bot") / "serve.log"
    with running_bot(module_database, fake_telegram.base_url, log_path) as running:
        yield running


@pytest.fixture(scope="module")
def two_workers(
    request: pytest.FixtureRequest,
    fake_telegram: FakeTelegram,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BotServer, Db]]:
    """A `serve --workers 2` of this module's own on Postgres: its counters start at zero."""
    tmp = tmp_path_factory.mktemp("workers")
    with (
        migrated_copy("postgres", request, tmp) as url,
        running_bot(url, fake_telegram.base_url, tmp / "serve.log", workers=2) as running,
    ):
        yield running


@pytest.fixture
async def bot(
    server: tuple[BotServer, Db], telegram: FakeTelegram
) -> AsyncIterator[tuple[BotServer, Db, FakeTelegram]]:
    """The module's running bot with empty tables and a clean fake Bot API."""
    running, db = server
    await db.settle()
    await db.reset()
    telegram.reset()
    yield running, db, telegram
    await asyncio.sleep(0)


# ----------------------------------------------------------------------------- webhook_app


class InputOnlyRuntime:
    """Stands in for `Runtime` in `create_app`'s listeners: no workers, no bot start-up.

    The input rules (secret, content type, JSON shape, update_id, what is stored and how)
    are the route's alone: the route, its error handler and the listeners' other work run
    exactly as in production, on the engine the fixture bound to a migrated database.
    """

    def __init__(self, settings: object, policy: object = None) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.startup_error: str | None = None

    async def start(self) -> None:
        """Nothing to start: the engine is bound and its pool open for the whole test."""

    async def stop(self) -> None:
        """Nothing to stop: no background work ran."""


@dataclass
class WebhookApp:
    """The Sanic app `create_app` builds, served in-process through its ASGI interface."""

    app: Sanic
    client: httpx.AsyncClient
    db: Db

    async def post(
        self,
        body: dict[str, Any] | bytes | str,
        *,
        secret: str | bytes | None = SECRET,
        content_type: str | bytes | None = "application/json",
    ) -> httpx.Response:
        """POST /webhook/telegram as Telegram does (or as a hostile sender would)."""
        headers: dict[str, str | bytes] = {}
        if content_type is not None:
            headers["content-type"] = content_type
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        content = json.dumps(body) if isinstance(body, dict) else body
        return await self.client.post("/webhook/telegram", content=content, headers=headers)

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path)


@contextlib.asynccontextmanager
async def serving(url: str, api_base: str) -> AsyncIterator[WebhookApp]:
    """`create_app` on `url`, started once through the ASGI lifespan (as an ASGI server
    does) and driven by an httpx client over ASGI: one start-up, then plain requests.

    sanic-testing's `asgi_client` would instead run the server listeners around every
    request, some 30 ms each; the lifespan keeps a request at the cost of the route.
    """
    from sanic import Sanic

    import sosekni.app
    import sosekni.runtime
    from sosekni.config import load_settings
    from sosekni.db import bind, close_pool, engine_for, open_pool
    from sosekni.metrics import shared_array

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Sanic, "test_mode", True)  # one app per test, all named "sosekni"
        patch.setattr(sosekni.runtime, "Runtime", InputOnlyRuntime)  # what each worker builds
        settings = load_settings(base_env(url, api_base), need_token=True)
        app = sosekni.app.create_app(settings)
        app.shared_ctx.metrics = shared_array()  # what the main process gives its workers
        engine = engine_for(url)
        bind(engine)
        await open_pool(engine, 2)
        inbound: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        outbound: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        lifespan = asyncio.create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbound.get, outbound.put)
        )
        try:
            await inbound.put({"type": "lifespan.startup"})
            assert (await outbound.get())["type"] == "lifespan.startup.complete"
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
                yield WebhookApp(app, client, Db(url))
            await inbound.put({"type": "lifespan.shutdown"})
            assert (await outbound.get())["type"] == "lifespan.shutdown.complete"
        finally:
            lifespan.cancel()
            await asyncio.gather(lifespan, return_exceptions=True)
            await close_pool(engine)
            Sanic.unregister_app(app)  # the name is free again for whoever builds the next


@pytest.fixture(scope="module")
def webhook_database(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One migrated database per module and engine for `webhook_app`, emptied per test."""
    with migrated_copy(backend, request, tmp_path_factory.mktemp("webhook-app")) as url:
        yield url


@pytest.fixture
async def webhook_app(webhook_database: str, telegram: FakeTelegram) -> AsyncIterator[WebhookApp]:
    """The production webhook app in-process, on each engine's migrated database, emptied."""
    await Db(webhook_database).reset()
    async with serving(webhook_database, telegram.base_url) as served:
        yield served
