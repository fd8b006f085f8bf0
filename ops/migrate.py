"""`migrate`, `migrate --down N`, `migrate status`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from ops.common import console, fail, plain, settings_or_fail, where, with_database
from sosekni import migrations
from sosekni.migrations import MigrationError

# `sosekni.migrations` is light: it imports Piccolo's migration machinery (and `black`,
# which Piccolo's app registry imports) only when a migration function runs.

app = typer.Typer(
    help="Piccolo migrations: apply, undo, list.\n\n"
    "Examples: sosekni-ops migrate"
    " · sosekni-ops migrate --down 1"
    " · sosekni-ops migrate status",
    no_args_is_help=False,
)


@app.callback(invoke_without_command=True)
def migrate(
    ctx: typer.Context,
    down: Annotated[
        int | None, typer.Option("--down", help="Undo the newest N applied migrations.", min=1)
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Undo every migration applied after this migration id ('none': all)."
        ),
    ] = None,
) -> None:
    """Apply every pending migration (or undo the newest N with --down N, or back to --to ID).

    Examples: sosekni-ops migrate · sosekni-ops migrate --down 1 · sosekni-ops migrate status
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_or_fail(need_admins=False)

    if down is not None and to is not None:
        fail("give --down N or --to ID, not both")

    async def work() -> list[str]:
        try:
            if down is not None:
                return await migrations.backwards(down)
            if to is not None:
                return await migrations.backwards_to(None if to == "none" else to)
            return await migrations.forwards()
        except MigrationError as exc:
            fail(str(exc), settings)

    with console.status("migrating…"):
        changed = with_database(settings, work)
    verb = "undid" if down is not None or to is not None else "applied"
    if not changed:
        console.print(plain(f"nothing to do: {where(settings)} is up to date"))
    for migration_id in changed:
        console.print(plain(f"{verb} {migration_id}"))


@app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List every migration and whether it has been applied.

    Examples: sosekni-ops migrate status · sosekni-ops migrate status --json
    """
    settings = settings_or_fail(need_admins=False)
    found = with_database(settings, migrations.status)
    if as_json:
        print(json.dumps([asdict(state) for state in found]))
        return
    table = Table(
        "migration", "description", "applied", title=plain(f"migrations on {where(settings)}")
    )
    for state in found:
        table.add_row(
            plain(state.migration_id),
            plain(state.description),
            "[green]yes[/]" if state.applied else "[yellow]no[/]",
        )
    console.print(table)
