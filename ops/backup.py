"""`backup create | list | prune | verify | restore`: pg_dump/pg_restore, or SQLite's backup API.

Every backup is one file in BACKUP_DIR, mode 0600, named
`sosekni-<database>-<UTC time>.<dump|sqlite3>`, with a `sha256sum`-style `.sha256` beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ops.backups.files import backups_in, check_checksum, existing_backup, prune
from ops.backups.operations import create_backup, restore_backup, verify_backup
from ops.common import console, fail, plain, settings_or_fail

app = typer.Typer(
    help="Back up and restore the database.\n\n"
    "Examples: sosekni-ops backup create"
    " · sosekni-ops backup verify BACKUP_FILE"
    " · sosekni-ops backup prune --keep-days 30",
    no_args_is_help=True,
)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


FileArg = Annotated[Path, typer.Argument(help="A backup file from `sosekni-ops backup list`.")]


@app.command("create")
def create() -> None:
    """Back up the database into BACKUP_DIR (pg_dump -Fc, or SQLite's online backup).

    Example: sosekni-ops backup create
    """
    settings = settings_or_fail(need_admins=False)
    backup = create_backup(settings)
    size = _human(backup.path.stat().st_size)
    console.print(
        plain(f"backup written: {backup.path} ({size}, sha256 in {backup.checksum_path.name})")
    )


@app.command("list")
def list_() -> None:
    """List the backups in BACKUP_DIR, newest first.

    Example: sosekni-ops backup list
    """
    settings = settings_or_fail(need_admins=False)
    found = backups_in(settings.backup_dir)
    table = Table(
        "file", "database", "taken (UTC)", "size", "checksum", title=plain(settings.backup_dir)
    )
    for b in found:
        has_sum = "[green]yes[/]" if b.checksum_path.exists() else "[red]missing[/]"
        table.add_row(
            plain(b.path.name), plain(b.database), f"{b.taken_at:%Y-%m-%d %H:%M:%S}",
            _human(b.path.stat().st_size), has_sum,
        )  # fmt: skip
    console.print(table)
    console.print(f"{len(found)} backup(s)")


@app.command("prune")
def prune_command(
    keep_days: Annotated[
        int, typer.Option("--keep-days", help="Delete backups older than this.", min=0)
    ] = 30,
) -> None:
    """Delete backups older than --keep-days; the newest one is always kept.

    Example: sosekni-ops backup prune --keep-days 30
    """
    settings = settings_or_fail(need_admins=False)
    deleted = prune(settings.backup_dir, keep_days)
    for b in deleted:
        console.print(plain(f"deleted {b.path.name}"))
    console.print(f"{len(deleted)} backup(s) deleted, {len(backups_in(settings.backup_dir))} kept")


@app.command("verify")
def verify(file: FileArg) -> None:
    """Check a backup's SHA-256 and restore it into a scratch database to prove it works.

    Example: sosekni-ops backup verify backups/sosekni-sosekni-20261125T030000Z.dump
    """
    settings = settings_or_fail(need_admins=False)
    found = verify_backup(settings, file)
    console.print(plain(f"{file.name}: checksum ok, {found}"))


@app.command("restore")
def restore(
    file: FileArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Replace the live database with a backup (a safety backup is taken first).

    Stop the service first (`systemctl stop sosekni`) so nothing writes meanwhile.

    Example: sosekni-ops backup restore backups/sosekni-sosekni-20261125T030000Z.dump --yes
    """
    settings = settings_or_fail(need_admins=False)
    existing_backup(file)
    check_checksum(file)
    if not yes and not _confirmed(
        f"Replace the live database with {file.name}? Everything since then is lost"
    ):
        fail("restore cancelled; nothing changed")
    safety = restore_backup(settings, file)
    console.print(plain(f"restored {file.name}; the database as it was is in {safety.path.name}"))


def _confirmed(question: str) -> bool:
    """The operator's yes; no answer at all (end of input, Ctrl-C) is a no."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        return False
