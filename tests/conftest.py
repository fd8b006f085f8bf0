"""Shared fixtures: the fake Bot API, a real PostgreSQL, and the bot as a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.postgres import create_database, drop_database, postgres_server
from tests.fakes.telegram import FakeTelegram
from tests.harness import TEMPLATES, TOKEN, BotServer, Db, base_env


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


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The session's migrated SQLite template goes with the session."""
    TEMPLATES.remove_sqlite()


@pytest.fixture
def postgres_url(postgres_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty Postgres database for one test."""
    dsn = create_database(postgres_admin_dsn)
    yield dsn
    drop_database(postgres_admin_dsn, dsn)


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of each engine, of its own, for in-process tests."""
    admin_dsn = (
        request.getfixturevalue("postgres_admin_dsn") if request.param == "postgres" else None
    )
    url = TEMPLATES.copy(request.param, admin_dsn, tmp_path)
    yield url
    if admin_dsn is not None:
        drop_database(admin_dsn, url)


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
def server(
    backend: str,
    fake_telegram: FakeTelegram,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BotServer, Db]]:
    """One running bot per module and backend, on a migrated database of its own."""
    admin_dsn = request.getfixturevalue("postgres_admin_dsn") if backend == "postgres" else None
    tmp = tmp_path_factory.mktemp(f"bot-{backend}")
    url = migrated_database(backend, admin_dsn, tmp)
    bot = BotServer(base_env(url, fake_telegram.base_url), log_path=tmp / "serve.log").start()
    yield bot, Db(url)
    bot.stop()
    if admin_dsn is not None:
        drop_database(admin_dsn, url)


@pytest.fixture(scope="module")
def two_workers(
    fake_telegram: FakeTelegram, postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BotServer, Db]]:
    """A `serve --workers 2` of this module's own on Postgres: its counters start at zero."""
    tmp = tmp_path_factory.mktemp("workers")
    url = migrated_database("postgres", postgres_admin_dsn, tmp)
    server = BotServer(base_env(url, fake_telegram.base_url), workers=2, log_path=tmp / "serve.log")
    server.start()
    yield server, Db(url)
    server.stop()
    drop_database(postgres_admin_dsn, url)


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
