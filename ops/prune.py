"""`prune [--dry-run]`: delete delivery bookkeeping older than its retention, now.

The running service does the same by itself every hour (`sosekni.delivery.retention`);
this is for an operator who wants it done at once (after lowering a retention period, or
before a backup), or who wants to see what the service would delete.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ops.common import console, settings_or_fail, with_database

# The retention queries (and through them Piccolo) and Rich's progress bar are imported
# inside the command: `sosekni-ops --help` and the other commands should not load them.


def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete delivery bookkeeping older than its retention (the service does it hourly).

    Inbox rows finished over INBOX_RETENTION_DAYS ago; outbox rows over OUTBOX_RETENTION_DAYS ago.

    Requests, decisions and administrators are the audit record: never deleted.

    Examples: sosekni-ops prune --dry-run · sosekni-ops prune
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sosekni.db import utcnow
    from sosekni.delivery.retention import Retention, count_old
    from sosekni.delivery.retention import prune as prune_rows
    from sosekni.render import when

    settings = settings_or_fail(need_admins=False)
    retention = Retention.of(settings)
    now = utcnow()

    async def work() -> dict[str, int]:
        if dry_run:
            return await prune_rows(retention, now, dry_run=True)
        totals = {
            kept.table: await count_old(kept, cutoff) for kept, cutoff in retention.cutoffs(now)
        }
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} row(s)"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            tasks = {
                table: progress.add_task(f"deleting from {table}", total=total)
                for table, total in totals.items()
            }
            return await prune_rows(
                retention,
                now,
                progress=lambda table, done: progress.update(tasks[table], completed=done),
            )

    found = with_database(settings, work)
    verb = "would be deleted" if dry_run else "deleted"
    for kept, cutoff in retention.cutoffs(now):
        console.print(
            f"{kept.table}: {found[kept.table]} row(s) {verb} (finished before {when(cutoff)})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
