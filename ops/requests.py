"""`requests list [--status S]`, `requests export FILE.csv`: the audit view."""

from __future__ import annotations

import csv
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from ops.common import console, fail, settings_or_fail, with_database
from sosekni.render import when
from sosekni.services import requests

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


class Status(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


@app.command("list")
def list_(
    status: Annotated[Status | None, typer.Option(help="Only requests in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
) -> None:
    """Show requests, newest first, with who decided what and when.

    Examples: sosekni-ops requests list · sosekni-ops requests list --status pending
    """
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
        table.add_row(
            str(r["id"]), r["status"], client, short, when(r["submitted_at"]),
            r["admin_name"] or "", when(r["responded_at"]) if r["responded_at"] else "",
            r["reason"] or "",
        )  # fmt: skip
    console.print(table)
    console.print(f"{len(rows)} request(s)")


@app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="The CSV file to write.")],
    status: Annotated[Status | None, typer.Option(help="Only requests in this state.")] = None,
) -> None:
    """Write every request and its decision to a CSV file (UTF-8, times in UTC ISO 8601).

    Example: sosekni-ops requests export requests-2026-11.csv
    """
    settings = settings_or_fail(need_admins=False)
    if file.suffix.lower() != ".csv":
        fail(f"{file}: the export file must end in .csv")
    if not file.parent.exists():
        fail(f"{file.parent}: no such directory")
    rows = with_database(settings, lambda: requests.audit(status.value if status else None))
    partial = file.with_name(file.name + ".partial")
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("exporting", total=len(rows))
        with partial.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            for r in reversed(rows):
                writer.writerow(
                    [
                        v.isoformat() if hasattr(v, "isoformat") else ("" if v is None else v)
                        for v in (r[c] for c in COLUMNS)
                    ]
                )
                progress.advance(task)
    os.replace(partial, file)
    console.print(f"exported {len(rows)} request(s) to {file}")
