"""`backup create | list | prune | verify | restore`: pg_dump/pg_restore, or SQLite's backup API.

Every backup is one file in BACKUP_DIR, mode 0600, named
`sosekni-<database>-<UTC time>.<dump|sqlite3>`, with a `sha256sum`-style `.sha256` beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse, urlunparse

import typer
from rich.table import Table

from ops.common import console, fail, plain, settings_or_fail
from sosekni.config import Settings

app = typer.Typer(
    help="Back up and restore the database.\n\n"
    "Examples: sosekni-ops backup create"
    " · sosekni-ops backup verify BACKUP_FILE"
    " · sosekni-ops backup prune --keep-days 30",
    no_args_is_help=True,
)

NAME_RE = re.compile(
    r"^sosekni-(?P<db>[A-Za-z0-9_.-]+)-(?P<at>\d{8}T\d{6}Z)\.(?P<ext>dump|sqlite3)$"
)
STAMP = "%Y%m%dT%H%M%SZ"


class BackupError(Exception):
    """A backup step that failed; the message is one line for the operator."""


@dataclass(frozen=True)
class Backup:
    path: Path
    database: str
    taken_at: datetime
    kind: str  # "postgres" or "sqlite"

    @property
    def checksum_path(self) -> Path:
        return self.path.with_name(self.path.name + ".sha256")


def parse_name(path: Path) -> Backup | None:
    match = NAME_RE.match(path.name)
    if match is None:
        return None
    taken = datetime.strptime(match["at"], STAMP).replace(tzinfo=UTC)
    kind = "postgres" if match["ext"] == "dump" else "sqlite"
    return Backup(path, match["db"], taken, kind)


def backups_in(directory: Path) -> list[Backup]:
    """Backups in the directory, newest first."""
    if not directory.is_dir():
        return []
    found = [b for p in directory.iterdir() if p.is_file() and (b := parse_name(p)) is not None]
    return sorted(found, key=lambda b: b.taken_at, reverse=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


# ----------------------------------------------------------------------------- Postgres


@dataclass(frozen=True)
class PgTarget:
    """A Postgres database as libpq tools want it: no password on the command line."""

    url: str

    @property
    def parsed(self):
        return urlparse(self.url)

    @property
    def name(self) -> str:
        return unquote(self.parsed.path.lstrip("/")) or "postgres"

    def env(self) -> dict[str, str]:
        p = self.parsed
        env = dict(os.environ)
        env.update(PGHOST=p.hostname or "localhost", PGPORT=str(p.port or 5432))
        env["PGUSER"] = unquote(p.username) if p.username else env.get("PGUSER", "postgres")
        env["PGDATABASE"] = self.name
        if p.password:
            env["PGPASSWORD"] = unquote(p.password)
        return env

    def with_database(self, name: str) -> PgTarget:
        p = self.parsed
        return PgTarget(urlunparse(p._replace(path=f"/{name}")))


async def _pg(url: str, query: str, *args: object) -> object:
    import asyncpg  # here, not at the top: only a PostgreSQL backup talks to the server

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def server_major(target: PgTarget) -> int:
    try:
        number = asyncio.run(_pg(target.url, "SHOW server_version_num"))
    except Exception as exc:
        raise BackupError(f"cannot reach the database {target.name}: {exc}") from exc
    return int(str(number)) // 10000


def pg_binary(name: str, major: int) -> str:
    """`pg_dump`/`pg_restore` able to work with a server of this major version."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/{name}")]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if not candidate.exists():
            continue
        out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True)
        found = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
        if found and int(found.group(1)) >= major:
            return str(candidate)
        if found:
            raise BackupError(
                f"{candidate} is version {found.group(1)} but the server is PostgreSQL {major}: "
                f"install postgresql-client-{major}"
            )
    raise BackupError(f"{name} is not installed: install postgresql-client-{major}")


def _run_with_progress(command: list[str], env: dict[str, str], what: str, total: int) -> None:
    """Run a pg tool with --verbose, advancing a bar per table it reports."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as progress:
        task = progress.add_task(what, total=max(total, 1))
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert process.stderr is not None
        errors = []
        for line in process.stderr:
            table = re.search(r'(?:contents of table|processing data for table) "?([^"\s]+)', line)
            if table:
                progress.update(task, advance=1, description=f"{what}: {table.group(1)}")
            elif "error" in line.lower() or "fatal" in line.lower():
                errors.append(line.strip())
        if process.wait() != 0:
            raise BackupError(errors[-1] if errors else f"{command[0]} exited {process.returncode}")
        progress.update(task, completed=max(total, 1))


def _table_count(target: PgTarget) -> int:
    query = (
        "SELECT count(*) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    return int(asyncio.run(_pg(target.url, query)))  # type: ignore[arg-type]


def dump_postgres(target: PgTarget, path: Path) -> None:
    binary = pg_binary("pg_dump", server_major(target))
    command = [binary, "--format=custom", "--no-owner", "--verbose", f"--file={path}"]
    old = os.umask(0o077)
    try:
        _run_with_progress(command, target.env(), "dumping", _table_count(target))
    finally:
        os.umask(old)


def restore_postgres(target: PgTarget, path: Path) -> None:
    binary = pg_binary("pg_restore", server_major(target))
    command = [
        binary, "--clean", "--if-exists", "--no-owner", "--single-transaction",
        "--exit-on-error", "--verbose", f"--dbname={target.name}", str(path),
    ]  # fmt: skip
    listed = subprocess.run([binary, "--list", str(path)], capture_output=True, text=True)
    total = listed.stdout.count(" TABLE DATA ")
    _run_with_progress(command, target.env(), "restoring", total)


# ----------------------------------------------------------------------------- SQLite


def _sqlite_copy(source: Path, target: Path, what: str) -> None:
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


# ----------------------------------------------------------------------------- operations


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
            _sqlite_copy(source, partial, "copying")
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
    _private_file(backup.checksum_path, f"{digest}  {final.name}\n")
    return backup


def check_checksum(path: Path) -> None:
    checksum = path.with_name(path.name + ".sha256")
    if not checksum.exists():
        raise BackupError(f"{checksum.name} is missing: cannot tell whether {path.name} is intact")
    expected = checksum.read_text().split()[0] if checksum.read_text().strip() else ""
    if sha256_of(path) != expected:
        raise BackupError(f"{path.name} does not match its SHA-256: the file is damaged")


def verify_backup(settings: Settings, path: Path) -> str:
    """Checksum, then a test restore into a scratch database; returns what was found."""
    backup = _existing(path)
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
        asyncio.run(_pg(live.url, f'CREATE DATABASE "{scratch_name}"'))
    except Exception as exc:
        raise BackupError(f"cannot create a scratch database to verify into: {exc}") from exc
    scratch = live.with_database(scratch_name)
    try:
        restore_postgres(scratch, backup.path)
        try:
            count = asyncio.run(_pg(scratch.url, "SELECT count(*) FROM client_request"))
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BackupError(
                f"{backup.path.name} restored, but holds no bot tables ({first})"
            ) from None
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(_pg(live.url, f'DROP DATABASE IF EXISTS "{scratch_name}" WITH (FORCE)'))
    return f"test restore ok, {count} request(s)"


def restore_backup(settings: Settings, path: Path) -> Backup:
    """Safety backup of the live database, then replace it with the backup's content."""
    backup = _existing(path)
    check_checksum(backup.path)
    if (backup.kind == "sqlite") != settings.is_sqlite:
        raise BackupError(f"{backup.path.name} is a {backup.kind} backup; DATABASE_URL is not")
    safety = create_backup(settings)
    if backup.kind == "sqlite":
        _sqlite_copy(backup.path, sqlite_path(settings), "restoring")
    else:
        restore_postgres(PgTarget(settings.database_url), backup.path)
    return safety


def _existing(path: Path) -> Backup:
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file")
    backup = parse_name(path)
    if backup is None:
        raise BackupError(f"{path.name} is not a sosekni backup (sosekni-<db>-<time>.dump|sqlite3)")
    return backup


def prune(directory: Path, keep_days: int, now: datetime | None = None) -> list[Backup]:
    """Delete backups older than keep_days, always keeping the newest; return those deleted."""
    now = now or datetime.now(UTC)
    found = backups_in(directory)
    old = [b for b in found[1:] if now - b.taken_at > timedelta(days=keep_days)]
    for b in old:
        b.path.unlink()
        b.checksum_path.unlink(missing_ok=True)
    return old


# ----------------------------------------------------------------------------- commands


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _guard(action):
    try:
        return action()
    except BackupError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".strip(": "))
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # one line, never a traceback
        fail(f"{type(exc).__name__}: {exc}")


FileArg = Annotated[Path, typer.Argument(help="A backup file from `sosekni-ops backup list`.")]


@app.command("create")
def create() -> None:
    """Back up the database into BACKUP_DIR (pg_dump -Fc, or SQLite's online backup).

    Example: sosekni-ops backup create
    """
    settings = settings_or_fail(need_admins=False)
    backup = _guard(lambda: create_backup(settings))
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
    deleted = _guard(lambda: prune(settings.backup_dir, keep_days))
    for b in deleted:
        console.print(plain(f"deleted {b.path.name}"))
    console.print(f"{len(deleted)} backup(s) deleted, {len(backups_in(settings.backup_dir))} kept")


@app.command("verify")
def verify(file: FileArg) -> None:
    """Check a backup's SHA-256 and restore it into a scratch database to prove it works.

    Example: sosekni-ops backup verify backups/sosekni-sosekni-20261125T030000Z.dump
    """
    settings = settings_or_fail(need_admins=False)
    found = _guard(lambda: verify_backup(settings, file))
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
    _guard(lambda: (_existing(file), check_checksum(file)))
    if not yes and not typer.confirm(
        f"Replace the live database with {file.name}? Everything since then is lost",
        default=False,
    ):
        fail("restore cancelled; nothing changed")
    safety = _guard(lambda: restore_backup(settings, file))
    console.print(plain(f"restored {file.name}; the database as it was is in {safety.path.name}"))
