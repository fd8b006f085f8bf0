"""`outbox list [--failed]`, `outbox retry ID|--failed`, and the same for `inbox`.

Stored values (error texts quote what Telegram or a client sent) are printed as plain text,
never read as Rich markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ops.common import console, fail, settings_or_fail, with_database

# The services (and through them Piccolo and the database drivers) are imported inside the
# commands: `sosekni-ops --help` and the commands that need no database should not load them.

ERROR_WIDTH = 80

outbox_app = typer.Typer(
    help="Outgoing Bot API calls that wait, are being sent, or failed.\n\n"
    "Examples: sosekni-ops outbox list · sosekni-ops outbox list --failed"
    " · sosekni-ops outbox retry --failed",
    no_args_is_help=True,
)
inbox_app = typer.Typer(
    help="Telegram updates that wait, are being processed, or failed.\n\n"
    "Examples: sosekni-ops inbox list · sosekni-ops inbox list --failed"
    " · sosekni-ops inbox retry 42",
    no_args_is_help=True,
)

Failed = Annotated[bool, typer.Option("--failed", help="The failed rows instead.")]
Limit = Annotated[int, typer.Option(help="Show at most this many.", min=1)]
RowId = Annotated[
    int | None, typer.Argument(help="The row's id (from `list`).", metavar="ID", min=1)
]
AllFailed = Annotated[bool, typer.Option("--failed", help="Every failed row.")]

_NOUN = {"outbox": "message", "inbox": "update"}
_FINISHED = {"outbox": "was sent already", "inbox": "was processed already"}
_BUSY = {"outbox": "is being sent right now", "inbox": "is being processed right now"}
_LIVE = {"outbox": "the running service sends it", "inbox": "the running service processes it"}


def age(since: datetime, now: datetime) -> str:
    """How long ago, in its largest unit: 42s, 5m, 3h, 2d."""
    seconds = max(int((now - since).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _list(name: str, failed: bool, limit: int) -> None:
    from sosekni.db import utcnow
    from sosekni.render import clip
    from sosekni.services import queues

    queue = queues.QUEUES[name]
    settings = settings_or_fail(need_admins=False)
    total, rows = with_database(settings, lambda: queues.listing(queue, failed=failed, limit=limit))
    now = utcnow()
    table = Table(
        "id", "status", "method" if queue is queues.OUTBOX else "kind", "chat", "attempts",
        "age", "last error",
        title=f"{queue.name}: {'failed' if failed else 'open'}",
    )  # fmt: skip
    for r in rows:
        cells = (
            str(r.id), r.status, r.what, "" if r.chat_id is None else str(r.chat_id),
            str(r.attempts), age(r.since, now), clip(" ".join(r.error.split()), ERROR_WIDTH),
        )  # fmt: skip
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    kind = "failed" if failed else "open"
    console.print(f"{len(rows)} of {total} {kind} {_NOUN[queue.name]}(s) shown", markup=False)


def _retry(name: str, row_id: int | None, failed: bool) -> None:
    from sosekni.services import queues
    from sosekni.services.queues import Retried

    queue = queues.QUEUES[name]
    if (row_id is None) == (not failed):
        fail("give exactly one of ID or --failed")
    settings = settings_or_fail(need_admins=False)
    noun = _NOUN[queue.name]
    if row_id is None:
        count = with_database(settings, lambda: queues.retry_failed(queue))
        console.print(f"{count} failed {noun}(s) queued again; {_LIVE[queue.name]}", markup=False)
        return
    done = with_database(settings, lambda: queues.retry(queue, row_id))
    if done is Retried.NOT_FOUND:
        fail(f"no {queue.name} {noun} with id {row_id}")
    if done is Retried.FINISHED:
        fail(f"{queue.name} {noun} {row_id} {_FINISHED[queue.name]}: nothing to retry")
    if done is Retried.BUSY:
        fail(f"{queue.name} {noun} {row_id} {_BUSY[queue.name]}: nothing to retry")
    console.print(f"{queue.name} {noun} {row_id} queued again; {_LIVE[queue.name]}", markup=False)


@outbox_app.command("list")
def outbox_list(failed: Failed = False, limit: Limit = 50) -> None:
    """Show messages waiting or being sent (oldest first), or with --failed those given up
    (newest first): id, method, chat, attempts, age and the last error.

    Examples: sosekni-ops outbox list · sosekni-ops outbox list --failed --limit 20
    """
    _list("outbox", failed, limit)


@outbox_app.command("retry")
def outbox_retry(row_id: RowId = None, failed: AllFailed = False) -> None:
    """Send one message again (failed, or waiting for its next try), or every failed one:
    due now, attempts reset. Give exactly one of ID or --failed.

    Examples: sosekni-ops outbox retry 42 · sosekni-ops outbox retry --failed
    """
    _retry("outbox", row_id, failed)


@inbox_app.command("list")
def inbox_list(failed: Failed = False, limit: Limit = 50) -> None:
    """Show updates waiting or being processed (oldest first), or with --failed those given
    up (newest first): id, kind, chat, attempts, age and the last error.

    Examples: sosekni-ops inbox list · sosekni-ops inbox list --failed
    """
    _list("inbox", failed, limit)


@inbox_app.command("retry")
def inbox_retry(row_id: RowId = None, failed: AllFailed = False) -> None:
    """Process one update again (failed, or waiting for its next try), or every failed one:
    due now, attempts reset. Give exactly one of ID or --failed.

    Examples: sosekni-ops inbox retry 42 · sosekni-ops inbox retry --failed
    """
    _retry("inbox", row_id, failed)
