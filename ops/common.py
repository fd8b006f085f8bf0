"""What every `sosekni-ops` command shares: settings, the database, one-line failures."""

from __future__ import annotations

import re
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from sosekni import logs
from sosekni.config import ConfigError, Settings, load_settings
from sosekni.logs import Redactor

# `sosekni.db` (Piccolo, asyncpg, aiosqlite) is imported inside the functions that open the
# database: every command loads this module, and help pages or deploy need no database.

console = Console()
error_console = Console(stderr=True, soft_wrap=True)  # one line, however long
T = TypeVar("T")
# C0 and C1 control characters but tab and newline: ESC starts terminal sequences (OSC 8
# hyperlinks, colours, cursor moves) that Rich would pass straight to the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: object) -> Text:
    """A stored or typed value as literal text: never Rich markup, no terminal control codes.

    Client names and texts, administrator names, reasons, paths and error messages are
    written by others; printed as markup a `[/bold]` in a first name crashes the command and
    a `[link=…]` forges a hyperlink. Control characters show as visible escapes (`\\x1b`).
    """
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)))


class OpsError(Exception):
    """A command failed in a way the operator can act on: one line, no traceback.

    Raised anywhere in `ops/` (`fail`, or a subclass such as `BackupError`, `DeployError`);
    printed once, as one red line with the secrets it names redacted, where every command
    is invoked (`OpsGroup`).
    """

    def __init__(self, message: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.secrets = secrets


def ops_command() -> list[str]:
    """How to run `sosekni-ops` of this Python environment as a child process."""
    script = Path(sys.executable).with_name("sosekni-ops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ops.cli"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def fail(message: str, settings: Settings | None = None) -> NoReturn:
    """Stop the command with one line (the settings' secrets are redacted from it)."""
    raise OpsError(message, settings.secrets if settings is not None else ())


def report(exc: OpsError) -> NoReturn:
    """Print one red line (secrets redacted, the message as plain text) and exit 1."""
    message = str(exc).strip()
    message = message.splitlines()[0] if message else "failed"
    if exc.secrets:
        message = Redactor(exc.secrets)(message)
    error_console.print(Text.assemble(("error:", "bold red"), " ", plain(message)), highlight=False)
    raise typer.Exit(code=1)


class OpsGroup(TyperGroup):
    """The command group that turns an `OpsError` (or a file error) from any subcommand into
    its one red line: the one error path of `sosekni-ops`."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OpsError as exc:
            report(exc)
        except OSError as exc:  # a file or directory the operator named
            report(OpsError(f"{exc.filename or ''}: {exc.strerror or exc}".strip(": ")))


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


def health_url(settings: Settings) -> str:
    """The service's `/health` as seen from its own host: `http://SERVE_HOST:SERVE_PORT/health`.

    The one place `deploy`, `rollback` and `health` find the running app when no URL is
    given. An address meaning "all addresses" (`0.0.0.0`, `::`) is reached on the loopback
    of its family; an IPv6 address goes in brackets.
    """
    import ipaddress

    host = settings.serve_host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        return f"http://{host}:{settings.serve_port}/health"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    # An IPv6 zone (`fe80::1%eth0`) is percent-encoded inside the brackets (RFC 6874).
    shown = f"[{str(address).replace('%', '%25')}]" if address.version == 6 else str(address)
    return f"http://{shown}:{settings.serve_port}/health"


def where(settings: Settings) -> str:
    """The database location for messages, without its password."""
    from urllib.parse import urlparse

    if settings.is_sqlite:
        return settings.database_url
    parsed = urlparse(settings.database_url)
    return f"{parsed.hostname or 'localhost'}:{parsed.port or 5432}{parsed.path}"


def with_database(settings: Settings, work: Callable[[], Awaitable[T]]) -> T:
    """Bind the engine from DATABASE_URL, run `work`, and turn failures into one line."""
    from sosekni.db import bind, close_pool, engine_for, is_unavailable

    async def main() -> T:
        engine = engine_for(settings.database_url)
        bind(engine)
        try:
            return await work()
        finally:
            await close_pool(engine)

    import asyncio  # not at the top: help pages and deploy need no event loop

    if settings.is_sqlite:
        _open_sqlite_or_fail(settings)
    try:
        return asyncio.run(main())
    except (OpsError, typer.Exit):
        raise
    except Exception as exc:
        if is_unavailable(exc):
            fail(f"cannot reach the database at {where(settings)}: {exc}", settings)
        if _missing_table(exc):
            fail(f"the database at {where(settings)} is not migrated: run `sosekni-ops migrate`")
        fail(f"{type(exc).__name__}: {exc}", settings)


def _missing_table(exc: Exception) -> bool:
    """The driver's own "no such table" (the database was never migrated)."""
    if isinstance(exc, sqlite3.OperationalError):
        return str(exc).startswith("no such table")
    from asyncpg.exceptions import UndefinedTableError

    return isinstance(exc, UndefinedTableError)


def _open_sqlite_or_fail(settings: Settings) -> None:
    """Check the SQLite file opens before aiosqlite's thread tries (its failure is noisy)."""
    from sosekni.db import create_sqlite_file

    path = settings.database_url[len("sqlite:///") :]
    create_sqlite_file(path)
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        fail(f"cannot reach the database at {where(settings)}: {exc}", settings)
