"""The database engine chosen by DATABASE_URL, and what every query needs of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType

from sosekni.tables import ALL_TABLES, ClientRequest

SQLITE_BUSY_TIMEOUT_S = 30
SQLITE_FILE_MODE = 0o600  # requests hold personal data; SQLite's -wal and -shm copy this mode


def engine_for(database_url: str) -> Engine:
    """A Piccolo engine for `postgresql://…` or `sqlite:///path`."""
    parsed = urlparse(database_url)
    if parsed.scheme == "sqlite":
        path = database_url[len("sqlite:///") :]
        create_sqlite_file(path)
        return SQLiteEngine(path=path, timeout=SQLITE_BUSY_TIMEOUT_S)
    dsn = database_url.replace("postgres://", "postgresql://", 1)
    return _PostgresEngine(config={"dsn": dsn})


def create_sqlite_file(path: str) -> None:
    """Create a missing SQLite database file 0600, before SQLite would create it 0644.

    An empty file is a valid empty database. SQLite gives its -wal, -shm and journal files
    the main file's mode, so they are private too. An existing file's mode is left as the
    operator set it. When the file cannot be created (no such directory, no permission)
    nothing happens here: SQLite's own open reports it.
    """
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE))


class _PostgresEngine(PostgresEngine):
    """Piccolo's engine without its connection at construction.

    Piccolo's constructor connects once, synchronously, to read the server version, and
    prints a warning when it cannot: it would block the event loop and print to a
    command's output. The pool opens later, where failures are handled.
    """

    async def check_version(self) -> None:
        return None


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
        await engine.start_connection_pool(min_size=1, max_size=max_size, reset=_keep_session)


async def _keep_session(connection: Any) -> None:
    """Pool release without asyncpg's reset query (advisory unlock, UNLISTEN, RESET ALL).

    Pooled connections hold no session state: the sender's advisory lock and LISTEN live
    on the lease's own connection. asyncpg still rolls back an unfinished transaction.
    """


async def close_pool(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine) and engine.pool is not None:
        await engine.close_connection_pool()


def utcnow() -> datetime:
    return datetime.now(UTC)


def current_engine() -> Engine:
    return ClientRequest._meta.db


async def sql(query: str, *args: Any) -> list[dict[str, Any]]:
    """Run SQL with `{}` placeholders on the bound engine (inside the current transaction)."""
    return await ClientRequest.raw(query, *args).run()


@asynccontextmanager
async def transaction() -> AsyncIterator[None]:
    """One database transaction; on SQLite it takes the write lock up front (IMMEDIATE)."""
    engine = current_engine()
    if isinstance(engine, SQLiteEngine):
        async with engine.transaction(transaction_type=TransactionType.immediate):
            yield
    else:
        async with engine.transaction():
            yield


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database cannot be reached (not that a query was wrong)."""
    import asyncpg

    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError)):
        return True
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.TooManyConnectionsError):
        return True
    if isinstance(
        exc, asyncpg.exceptions.AdminShutdownError | asyncpg.exceptions.CannotConnectNowError
    ):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc).lower()
        return "locked" in message or "unable to open" in message or "disk i/o" in message
    return False


def as_utc(value: Any) -> Any:
    """A timestamp read by raw SQL as an aware UTC datetime (SQLite may hand back text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def row_times(row: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if name in row:
            row[name] = as_utc(row[name])
    return row
