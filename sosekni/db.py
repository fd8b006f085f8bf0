"""The database engine chosen by DATABASE_URL, and what every query needs of it."""

from __future__ import annotations

from urllib.parse import urlparse

from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

from sosekni.tables import ALL_TABLES

SQLITE_BUSY_TIMEOUT_S = 30


def engine_for(database_url: str) -> Engine:
    """A Piccolo engine for `postgresql://…` or `sqlite:///path`."""
    parsed = urlparse(database_url)
    if parsed.scheme == "sqlite":
        path = database_url[len("sqlite:///") :]
        return SQLiteEngine(path=path, timeout=SQLITE_BUSY_TIMEOUT_S)
    dsn = database_url.replace("postgres://", "postgresql://", 1)
    return PostgresEngine(config={"dsn": dsn})


def bind(engine: Engine) -> None:
    """Point every table (and Piccolo's own finder) at this engine."""
    import piccolo_conf

    piccolo_conf.DB = engine
    for table in ALL_TABLES:
        table._meta.db = engine
    from piccolo.apps.migrations.tables import Migration

    Migration._meta.db = engine


def is_postgres(engine: Engine) -> bool:
    return engine.engine_type in ("postgres", "cockroach")


async def open_pool(engine: Engine, max_size: int = 10) -> None:
    if isinstance(engine, PostgresEngine) and engine.pool is None:
        await engine.start_connection_pool(min_size=1, max_size=max_size)


async def close_pool(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine) and engine.pool is not None:
        await engine.close_connection_pool()
