"""What every `sosekni-ops` command shares: settings, the database, one-line failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console

from sosekni import logs
from sosekni.config import ConfigError, Settings, load_settings
from sosekni.db import bind, close_pool, engine_for, is_unavailable
from sosekni.logs import Redactor

console = Console()
error_console = Console(stderr=True, soft_wrap=True)  # one line, however long
T = TypeVar("T")


def fail(message: str, settings: Settings | None = None) -> NoReturn:
    """Print one red line (secrets redacted) and exit 1."""
    message = message.strip().splitlines()[0] if message.strip() else "failed"
    if settings is not None:
        message = Redactor(settings.secrets)(message)
    error_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code=1)


def settings_or_fail(**need: bool) -> Settings:
    try:
        settings = load_settings(**need)
    except ConfigError as exc:
        fail(str(exc))
    logs.configure(
        "WARNING" if settings.log_level == "INFO" else settings.log_level,
        settings.log_format,
        settings.secrets,
    )
    return settings


def where(settings: Settings) -> str:
    """The database location for messages, without its password."""
    from urllib.parse import urlparse

    if settings.is_sqlite:
        return settings.database_url
    parsed = urlparse(settings.database_url)
    return f"{parsed.hostname or 'localhost'}:{parsed.port or 5432}{parsed.path}"


def with_database(settings: Settings, work: Callable[[], Awaitable[T]]) -> T:
    """Bind the engine from DATABASE_URL, run `work`, and turn failures into one line."""

    async def main() -> T:
        engine = engine_for(settings.database_url)
        bind(engine)
        try:
            return await work()
        finally:
            await close_pool(engine)

    if settings.is_sqlite:
        _open_sqlite_or_fail(settings)
    try:
        return asyncio.run(main())
    except typer.Exit:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            fail(f"cannot reach the database at {where(settings)}: {exc}", settings)
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            fail(f"the database at {where(settings)} is not migrated: run `sosekni-ops migrate`")
        if "does not exist" in str(exc) and "relation" in str(exc):
            fail(f"the database at {where(settings)} is not migrated: run `sosekni-ops migrate`")
        fail(f"{type(exc).__name__}: {exc}", settings)


def _open_sqlite_or_fail(settings: Settings) -> None:
    """Check the SQLite file opens before aiosqlite's thread tries (its failure is noisy)."""
    try:
        sqlite3.connect(settings.database_url[len("sqlite:///") :]).close()
    except sqlite3.Error as exc:
        fail(f"cannot reach the database at {where(settings)}: {exc}", settings)
