"""SQLite backups through the online backup API (a consistent copy of a live database)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ops.common import console
from sosekni.config import Settings


def sqlite_copy(source: Path, target: Path, what: str) -> None:
    """Copy a live SQLite database page by page (readers and writers may go on)."""
    from rich.progress import Progress  # here, not at the top: ~20 ms that --help need not pay

    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(what, total=1)

        def step(_status: int, remaining: int, total: int) -> None:
            progress.update(task, total=total, completed=total - remaining)

        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(target, timeout=30)
        try:
            src.backup(dst, pages=256, progress=step)
        finally:
            dst.close()
            src.close()


def sqlite_path(settings: Settings) -> Path:
    return Path(settings.database_url[len("sqlite:///") :])
