"""`stats [--days N] [--json]`: requests by status, time to decision, decisions per
administrator."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ops.common import console, plain, settings_or_fail, with_database

# The services (Piccolo and the drivers) are imported inside the command, as in ops.requests.


def stats(
    days: Annotated[
        int | None,
        typer.Option(help="One window of this many days instead of 7 and 30.", min=1, max=3650),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for other tools.")] = False,
) -> None:
    """Requests by status, median and 90th percentile time to decision, and decisions per
    administrator, over the last 7 and 30 days (or --days N).

    Requests count in a window when submitted in it (by their status now); decisions, and
    their times, when made in it. Times to decision are from submission to the decision.

    Examples: sosekni-ops stats · sosekni-ops stats --days 90 --json
    """
    from sosekni.db import utcnow
    from sosekni.services import stats as numbers

    settings = settings_or_fail(need_admins=False)
    windows = (days,) if days is not None else numbers.DEFAULT_PERIODS
    now = utcnow()
    found = with_database(settings, lambda: numbers.periods(now, windows))
    if as_json:
        report = {"at": now.isoformat(), "periods": [p.as_dict() for p in found]}
        print(json.dumps(report, ensure_ascii=False))
        return
    table = Table("", *(f"last {p.days} days" for p in found))
    table.add_row("requests", *(str(p.total) for p in found))
    for state in numbers.STATES:
        table.add_row(f"  {state}", *(str(p.by_status[state]) for p in found))
    table.add_row("decisions", *(str(p.decisions) for p in found))
    table.add_row("median time to decision", *(numbers.duration(p.median_seconds) for p in found))
    table.add_row("90th percentile", *(numbers.duration(p.p90_seconds) for p in found))
    console.print(table)
    admins = Table("administrator", "id", *(f"last {p.days} days" for p in found))
    ids = dict.fromkeys(a.telegram_id for p in found for a in p.by_admin)
    for admin_id in ids:
        name = next(a.name for p in found for a in p.by_admin if a.telegram_id == admin_id)
        cells = []
        for p in found:
            mine = [a for a in p.by_admin if a.telegram_id == admin_id]
            cells.append(
                f"{mine[0].approved} approved · {mine[0].rejected} rejected" if mine else ""
            )
        admins.add_row(plain(name), str(admin_id), *cells)
    if ids:
        console.print(admins)
    else:
        console.print("no decisions")
