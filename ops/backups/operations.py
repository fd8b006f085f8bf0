"""Create, verify and restore a backup of whichever database DATABASE_URL names."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.backups.files import (
    STAMP,
    Backup,
    BackupError,
    check_checksum,
    existing_backup,
    parse_name,
    private_file,
    sha256_of,
)
from ops.backups.postgres import PgTarget, dump_postgres, pg_value, restore_postgres
from ops.backups.sqlite import sqlite_copy, sqlite_path
from sosekni.config import Settings


def database_name(settings: Settings) -> str:
    if settings.is_sqlite:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", sqlite_path(settings).stem) or "sqlite"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", PgTarget(settings.database_url).name)


def create_backup(settings: Settings, directory: Path | None = None) -> Backup:
    """Take a backup now; return it (file 0600 and its checksum)."""
    directory = directory or settings.backup_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.now(UTC)
    ext = "sqlite3" if settings.is_sqlite else "dump"

    def name_at(moment: datetime) -> Path:
        return directory / f"sosekni-{database_name(settings)}-{moment:{STAMP}}.{ext}"

    while True:  # two backups in one second: the next free second's name
        final = name_at(now)
        partial = final.with_name(final.name + ".partial")
        if not final.exists():
            try:  # O_EXCL: a backup still being written keeps its .partial to itself
                os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                pass
        now += timedelta(seconds=1)
    try:
        if settings.is_sqlite:
            source = sqlite_path(settings)
            if not source.exists():
                raise BackupError(f"{source}: no such database file")
            sqlite_copy(source, partial, "copying")
        else:
            dump_postgres(PgTarget(settings.database_url), partial)
        os.chmod(partial, 0o600)
        digest = sha256_of(partial)
        while True:  # link, not rename: never replace a backup that finished meanwhile
            try:
                os.link(partial, final)
                break
            except FileExistsError:
                now += timedelta(seconds=1)
                final = name_at(now)
        partial.unlink()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    backup = parse_name(final)
    assert backup is not None
    private_file(backup.checksum_path, f"{digest}  {final.name}\n")
    return backup


def verify_backup(settings: Settings, path: Path) -> str:
    """Checksum, then a test restore into a scratch database; returns what was found."""
    backup = existing_backup(path)
    check_checksum(backup.path)
    if backup.kind == "sqlite":
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "verify.db"
            shutil.copyfile(backup.path, copy)
            conn = sqlite3.connect(copy)
            try:
                result = conn.execute("PRAGMA integrity_check").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM client_request").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise BackupError(
                    f"{backup.path.name} is not a usable SQLite database: {exc}"
                ) from exc
            finally:
                conn.close()
        if result != "ok":
            raise BackupError(f"{backup.path.name}: integrity check says {result}")
        return f"integrity ok, {tables} request(s)"
    if settings.is_sqlite:
        raise BackupError("a Postgres dump needs a postgresql:// DATABASE_URL to verify against")
    live = PgTarget(settings.database_url)
    scratch_name = f"sosekni_verify_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(pg_value(live.url, f'CREATE DATABASE "{scratch_name}"'))
    except Exception as exc:
        raise BackupError(f"cannot create a scratch database to verify into: {exc}") from exc
    scratch = live.with_database(scratch_name)
    try:
        restore_postgres(scratch, backup.path)
        try:
            count = asyncio.run(pg_value(scratch.url, "SELECT count(*) FROM client_request"))
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BackupError(
                f"{backup.path.name} restored, but holds no bot tables ({first})"
            ) from None
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(
                pg_value(live.url, f'DROP DATABASE IF EXISTS "{scratch_name}" WITH (FORCE)')
            )
    return f"test restore ok, {count} request(s)"


def restore_backup(settings: Settings, path: Path) -> Backup:
    """Safety backup of the live database, then replace it with the backup's content."""
    backup = existing_backup(path)
    check_checksum(backup.path)
    if (backup.kind == "sqlite") != settings.is_sqlite:
        raise BackupError(f"{backup.path.name} is a {backup.kind} backup; DATABASE_URL is not")
    safety = create_backup(settings)
    if backup.kind == "sqlite":
        sqlite_copy(backup.path, sqlite_path(settings), "restoring")
    else:
        restore_postgres(PgTarget(settings.database_url), backup.path)
    return safety
