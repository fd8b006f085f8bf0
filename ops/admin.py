"""`admin add ID [--name]`, `admin list`, `admin deactivate ID`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ops.common import console, fail, plain, settings_or_fail, with_database

# The services (and through them Piccolo and the database drivers) are imported inside the
# commands: `sosekni-ops --help` and the commands that need no database should not load them.

app = typer.Typer(
    help="Administrators who decide on requests.\n\n"
    "Examples: sosekni-ops admin add 123456789 --name Olga"
    " · sosekni-ops admin list",
    no_args_is_help=True,
)

TelegramId = Annotated[int, typer.Argument(help="The administrator's Telegram user id.")]


@app.command("add")
def add(
    telegram_id: TelegramId,
    name: Annotated[str | None, typer.Option(help="A name to recognise them by.")] = None,
) -> None:
    """Add an administrator, or re-activate one; either way ADMIN_TELEGRAM_ID no longer governs it.

    It stays an administrator until `admin deactivate`, whatever the list says.

    Example: sosekni-ops admin add 123456789 --name "Olga"
    """
    from sosekni.services import admins

    settings = settings_or_fail(need_admins=False)
    record = with_database(settings, lambda: admins.add(telegram_id, name))
    console.print(plain(f"administrator {record.telegram_id} {record.name!r} is active"))


@app.command("list")
def list_() -> None:
    """List administrators, active and deactivated, and where each came from.

    source: config (ADMIN_TELEGRAM_ID; revoked at start once not listed) or cli (`admin add`
    or `admin deactivate`; kept whatever the list says).

    Example: sosekni-ops admin list
    """
    from sosekni.render import when
    from sosekni.services import admins

    settings = settings_or_fail(need_admins=False)
    records = with_database(settings, admins.list_all)
    table = Table("telegram id", "name", "active", "source", "since", title="administrators")
    for r in records:
        table.add_row(
            str(r.telegram_id),
            plain(r.name),
            "[green]yes[/]" if r.active else "[red]no[/]",
            r.source,
            when(r.created_at),
        )
    console.print(table)


@app.command("deactivate")
def deactivate(telegram_id: TelegramId) -> None:
    """Deactivate an administrator: they can no longer decide (their record stays).

    They stay deactivated even while ADMIN_TELEGRAM_ID lists them; `admin add` undoes it.

    Example: sosekni-ops admin deactivate 123456789
    """
    from sosekni.services import admins

    settings = settings_or_fail(need_admins=False)
    if not with_database(settings, lambda: admins.deactivate(telegram_id)):
        fail(f"no administrator with Telegram id {telegram_id}")
    console.print(f"administrator {telegram_id} deactivated")
