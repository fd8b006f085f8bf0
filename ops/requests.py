"""`requests list [--status S]`, `requests export FILE.csv`: the audit view."""

from __future__ import annotations

import contextlib
import csv
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.table import Table

from ops.common import console, fail, plain, settings_or_fail, with_database

# The services (and through them Piccolo and the database drivers) are imported inside the
# commands: `sosekni-ops --help` and the commands that need no database should not load them.

app = typer.Typer(
    help="Client requests and their decisions.\n\n"
    "Examples: sosekni-ops requests list --status pending"
    " · sosekni-ops requests export requests.csv",
    no_args_is_help=True,
)

COLUMNS = (
    "id", "status", "client_telegram_id", "client_username", "client_first_name",
    "client_language", "text", "submitted_at", "admin_telegram_id", "admin_name", "response",
    "reason", "responded_at",
)  # fmt: skip
# A spreadsheet reads a cell starting with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_MODE = 0o600  # the export holds personal data: names, usernames, request texts


def cell(value: object) -> object:
    """One CSV cell: times in ISO 8601, None empty, text that a spreadsheet would run as a
    formula prefixed with `'` so it shows as the text the client typed."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class Status(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    cancelled = "cancelled"
    expired = "expired"


@app.command("list")
def list_(
    status: Annotated[Status | None, typer.Option(help="Only requests in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
) -> None:
    """Show requests, newest first, with who decided what and when, and whether the client
    blocked the bot ("client unreachable").

    Examples: sosekni-ops requests list · sosekni-ops requests list --status pending
    """
    from sosekni.render import when
    from sosekni.services import requests

    settings = settings_or_fail(need_admins=False)
    rows = with_database(
        settings, lambda: requests.audit(status.value if status else None, limit=limit)
    )
    table = Table("#", "status", "client", "text", "submitted", "decided by", "decided", "reason")
    for r in rows:
        client = f"{r['client_first_name']} ({r['client_telegram_id']})"
        if r["client_username"]:
            client += f" @{r['client_username']}"
        short = r["text"] if len(r["text"]) <= 60 else r["text"][:59] + "…"
        state = r["status"] + (", client unreachable" if r.get("unreachable_at") else "")
        table.add_row(
            str(r["id"]), state, plain(client), plain(short), when(r["submitted_at"]),
            plain(r["admin_name"] or ""), when(r["responded_at"]) if r["responded_at"] else "",
            plain(r["reason"] or ""),
        )  # fmt: skip
    console.print(table)
    console.print(f"{len(rows)} request(s)")


@app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="The CSV file to write.")],
    status: Annotated[Status | None, typer.Option(help="Only requests in this state.")] = None,
) -> None:
    """Write every request and its decision to a CSV file (UTF-8, times in UTC ISO 8601).

    The file is created readable by its owner only (0600): it holds personal data. A cell
    starting with = + - @ tab or CR gets a leading ' so spreadsheets show it as text.

    Example: sosekni-ops requests export requests-2026-11.csv
    """
    from rich.progress import Progress

    from sosekni.services import requests

    settings = settings_or_fail(need_admins=False)
    if file.suffix.lower() != ".csv":
        fail(f"{file}: the export file must end in .csv")
    if not file.parent.exists():
        fail(f"{file.parent}: no such directory")
    rows = with_database(settings, lambda: requests.audit(status.value if status else None))
    partial = file.with_name(file.name + ".partial")
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("exporting", total=len(rows))
        try:
            with _create_private(partial) as out:
                writer = csv.writer(out)
                writer.writerow(COLUMNS)
                for r in reversed(rows):
                    writer.writerow([cell(r[c]) for c in COLUMNS])
                    progress.advance(task)
            os.replace(partial, file)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            fail(f"{exc.filename or file}: {exc.strerror or exc}")
    console.print(plain(f"exported {len(rows)} request(s) to {file}"))


def _create_private(path: Path) -> TextIO:
    """Open a new file for writing, created 0600 from the first byte (no window in which
    another user could open it); a leftover of an interrupted export is replaced."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, EXPORT_MODE), "w", newline="", encoding="utf-8")
