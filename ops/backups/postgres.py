"""PostgreSQL backups with the server's own major version of pg_dump / pg_restore."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

from ops.backups.files import BackupError
from ops.common import console


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


async def pg_value(url: str, query: str, *args: object) -> object:
    import asyncpg  # here, not at the top: only a PostgreSQL backup talks to the server

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def server_major(target: PgTarget) -> int:
    try:
        number = asyncio.run(pg_value(target.url, "SHOW server_version_num"))
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


def run_with_progress(command: list[str], env: dict[str, str], what: str, total: int) -> None:
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


def table_count(target: PgTarget) -> int:
    query = (
        "SELECT count(*) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    return int(asyncio.run(pg_value(target.url, query)))  # type: ignore[arg-type]


def dump_postgres(target: PgTarget, path: Path) -> None:
    binary = pg_binary("pg_dump", server_major(target))
    command = [binary, "--format=custom", "--no-owner", "--verbose", f"--file={path}"]
    old = os.umask(0o077)
    try:
        run_with_progress(command, target.env(), "dumping", table_count(target))
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
    run_with_progress(command, target.env(), "restoring", total)
