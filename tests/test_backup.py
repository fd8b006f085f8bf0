"""`sosekni-ops backup create | list | prune | verify | restore`, on SQLite and on Postgres.

Every test runs the real `sosekni-ops` executable against a database of its own: a copy of one
that `sosekni-ops migrate` built once per engine for this module (a SQLite file copied into the
test's directory, or a Postgres database created from it as a template), which is much faster
than migrating again for every test. Each command costs a Python start of about two seconds,
so commands that do not depend on each other run concurrently. The tests check the files in
BACKUP_DIR byte for byte, the exact output, and every row the database holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pkgutil
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import sosekni.piccolo_migrations
from tests.fakes.postgres import create_database, drop_database
from tests.harness import Db, base_env, clone_database, ops_command, run_ops

API = "http://127.0.0.1:9"  # never called: no backup command talks to Telegram
ENGINES = pytest.mark.parametrize("engine", ["sqlite", "postgres"])
STAMP = "%Y%m%dT%H%M%SZ"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"
BOT_TABLES = {
    "administrator",
    "client_request",
    "outbox_message",
    "inbox_update",
    "admin_notification",
    "migration",  # Piccolo's record of the applied migrations
}
EXT = {"sqlite": "sqlite3", "postgres": "dump"}


# ----------------------------------------------------------------------------- helpers


async def ops(*args: str, env: dict[str, str], **how: Any) -> subprocess.CompletedProcess[str]:
    """`sosekni-ops ARGS` through the harness's `run_ops` (`typed` stdin, `columns`, `ops`),
    in a thread so that several can run at once."""
    return await asyncio.to_thread(run_ops, *args, env=env, **how)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit 1 and exactly one `error:` line; returns its message."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0].removeprefix("error: ")


def printed(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The non-blank lines of stdout (a finished progress bar leaves a blank line)."""
    return [line for line in done.stdout.splitlines() if line.strip()]


def stamp(at: datetime) -> str:
    return at.strftime(STAMP)


def stamp_of(name: str) -> datetime:
    found = re.search(r"-(\d{8}T\d{6}Z)\.(?:dump|sqlite3)$", name)
    assert found, name
    return datetime.strptime(found.group(1), STAMP).replace(tzinfo=UTC)


def shown(at: datetime) -> str:
    """How `backup list` shows a backup's time."""
    return f"{at:%Y-%m-%d %H:%M:%S}"


def whole_seconds(at: datetime) -> datetime:
    return at.replace(microsecond=0)


def sha256sum_line(path: Path) -> str:
    """What `sha256sum NAME` prints for the file, computed here with hashlib."""
    return f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"


def checksum_of(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def copy_as(backup: Path, target: Path, checksum: bool = True) -> Path:
    """A copy of a real backup under another name, with a matching `.sha256` if asked."""
    shutil.copyfile(backup, target)
    if checksum:
        checksum_of(target).write_text(sha256sum_line(target))
    return target


def damage(path: Path) -> None:
    """Flip one bit in the middle of the file."""
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))


def table_rows(stdout: str) -> list[list[str]]:
    """The body rows of a Rich table, as lists of stripped cells."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


async def scratch_databases(admin_dsn: str) -> set[str]:
    """Databases named as `backup verify` names its scratch databases."""
    rows = await Db(admin_dsn).fetch(
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'sosekni_verify_')"
    )
    return {r["datname"] for r in rows}


# ----------------------------------------------------------------------------- fixtures


@dataclass
class Templates:
    """Per engine: a database `sosekni-ops migrate` built, and a backup `backup create` took."""

    urls: dict[str, str]
    backups: dict[str, Path]


@pytest.fixture(scope="module")
def templates(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Templates]:
    tmp = tmp_path_factory.mktemp("templates")
    urls = {
        "sqlite": f"sqlite:///{tmp / 'bot.db'}",
        "postgres": create_database(postgres_admin_dsn, "sosekni_template"),
    }
    envs = [base_env(url, API, BACKUP_DIR=str(tmp / "backups")) for url in urls.values()]
    try:
        with ThreadPoolExecutor(2) as pool:
            for command in (("migrate",), ("backup", "create")):
                for done in [pool.submit(run_ops, *command, env=env) for env in envs]:
                    assert done.result().returncode == 0, done.result().stderr
        found = {p.suffix: p for p in (tmp / "backups").iterdir()}
        yield Templates(urls, {kind: found[f".{ext}"] for kind, ext in EXT.items()})
    finally:
        drop_database(postgres_admin_dsn, urls["postgres"])


@dataclass
class Site:
    """One migrated database, its BACKUP_DIR (not created yet), and a probe into the database."""

    engine: str
    url: str
    env: dict[str, str]
    backups: Path
    db: Db

    @property
    def ext(self) -> str:
        return EXT[self.engine]

    @property
    def database(self) -> str:
        """The <db> part of backup names: the SQLite file's stem, or the database name."""
        if self.engine == "sqlite":
            return Path(self.url[len("sqlite:///") :]).stem
        return self.url.rsplit("/", 1)[1]

    def name_at(self, at: datetime) -> str:
        return f"sosekni-{self.database}-{stamp(at)}.{self.ext}"

    def backup_files(self) -> list[Path]:
        """The backups in BACKUP_DIR (not their `.sha256`), oldest first."""
        found = [p for p in self.backups.iterdir() if p.suffix == f".{self.ext}"]
        return sorted(found, key=lambda p: stamp_of(p.name))

    async def create(self) -> Path:
        """`backup create`; returns the one new backup file."""
        before = names(self.backups)
        done = await ops("backup", "create", env=self.env)
        assert done.returncode == 0, done.stdout + done.stderr
        new = sorted(names(self.backups) - before)
        assert len(new) == 2 and new[1] == new[0] + ".sha256", new
        return self.backups / new[0]

    async def add_request(self, client: int, status: str, text: str = "Plot 7") -> None:
        decided = status != "pending"
        await self.db.fetch(
            "INSERT INTO client_request (client_telegram_id, client_username, "
            "client_first_name, client_language, text, status, submitted_at, "
            "admin_telegram_id, admin_name, response, reason, responded_at, created_at, "
            "updated_at) VALUES ({}, {}, {}, {}, {}, {}, CURRENT_TIMESTAMP, {}, {}, {}, {}, "
            f"{'CURRENT_TIMESTAMP' if decided else 'NULL'}, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)",
            client,
            f"user{client}",
            "Anna",
            "ru",
            text,
            status,
            501 if decided else None,
            "Olga" if decided else None,
            status if decided else None,
            "no plot 7 here" if status == "rejected" else None,
        )

    async def add_outbox(self, chat_id: int, status: str) -> None:
        sent = status == "sent"
        await self.db.fetch(
            "INSERT INTO outbox_message (method, chat_id, payload, purpose, request_id, "
            "admin_telegram_id, status, attempts, next_attempt_at, last_error, created_at, "
            "sent_at) VALUES ('sendMessage', {}, {}, 'decision', NULL, NULL, {}, {}, "
            "CURRENT_TIMESTAMP, {}, CURRENT_TIMESTAMP, "
            f"{'CURRENT_TIMESTAMP' if sent else 'NULL'})",
            chat_id,
            f'{{"chat_id": {chat_id}, "text": "Request approved"}}',
            status,
            1 if sent else 3,
            None if sent else "429 Too Many Requests",
        )

    async def add_inbox(self, update_id: int, status: str) -> None:
        await self.db.fetch(
            "INSERT INTO inbox_update (update_id, kind, chat_id, payload, status, attempts, "
            "next_attempt_at, received_at, processed_at) VALUES ({}, 'message', {}, {}, {}, "
            "1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
            f"{'CURRENT_TIMESTAMP' if status == 'done' else 'NULL'})",
            update_id,
            update_id * 10,
            f'{{"update_id": {update_id}}}',
            status,
        )

    async def add_notification(self, client: int, admin: int, message_id: int) -> None:
        """An administrator's copy of the client's newest request."""
        request_id = await self.db.value(
            "SELECT id FROM client_request WHERE client_telegram_id = {} ORDER BY id DESC",
            client,
        )
        await self.db.fetch(
            "INSERT INTO admin_notification (request_id, admin_telegram_id, chat_id, "
            "message_id, created_at) VALUES ({}, {}, {}, {}, CURRENT_TIMESTAMP)",
            request_id,
            admin,
            admin,
            message_id,
        )

    async def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table in key order, and the indexes, constraints and sequences."""
        if self.engine == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'"
        tables = {r["name"] for r in await self.db.fetch(query)}
        assert tables >= BOT_TABLES, tables
        # In the order of each table's first column, its key (`blocked_chat` has no `id`).
        found = {t: await self.db.fetch(f'SELECT * FROM "{t}" ORDER BY 1') for t in tables}
        if self.engine == "sqlite":
            found["schema"] = await self.db.fetch(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            )
        else:
            # Postgres prints a CHECK's IN list differently once it has been dumped and
            # reloaded, so constraints are compared by name and kind, indexes by definition.
            found["schema"] = await self.db.fetch(
                "SELECT indexname AS name, indexdef AS definition FROM pg_indexes "
                "WHERE schemaname = 'public' UNION ALL "
                "SELECT conname, contype::text FROM pg_constraint "
                "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
            )
            found["sequences"] = await self.db.fetch(
                "SELECT sequencename, last_value FROM pg_sequences "
                "WHERE schemaname = 'public' ORDER BY 1"
            )
        return found


@pytest.fixture
def site(
    engine: str, templates: Templates, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Site]:
    """A fresh copy of the engine's migrated database; BACKUP_DIR does not exist yet."""
    admin_dsn = ""
    if engine == "postgres":
        admin_dsn = request.getfixturevalue("postgres_admin_dsn")
        url = clone_database(admin_dsn, templates.urls["postgres"])
    else:
        shutil.copyfile(templates.urls["sqlite"][len("sqlite:///") :], tmp_path / "bot.db")
        url = f"sqlite:///{tmp_path / 'bot.db'}"
    backups = tmp_path / "var" / "backups"
    yield Site(engine, url, base_env(url, API, BACKUP_DIR=str(backups)), backups, Db(url))
    if admin_dsn:
        drop_database(admin_dsn, url)


# ----------------------------------------------------------------------------- restore


@ENGINES
async def test_restore_brings_back_every_row_of_every_table_and_its_safety_backup_undoes_it(
    site: Site,
) -> None:
    done = await ops("admin", "add", "501", "--name", "Olga", env=site.env)
    assert done.returncode == 0, done.stdout + done.stderr
    await site.db.add_admin(502, name="Ivan")
    await site.add_request(1001, "pending")
    await site.add_request(1002, "approved", "Plot 12, moving in")
    await site.add_request(1003, "rejected", "Plot 7 & co <b>")
    await site.add_request(1003, "pending", "Plot 7 again")
    await site.add_outbox(1002, "sent")
    await site.add_outbox(1003, "pending")
    await site.add_inbox(9001, "done")
    await site.add_inbox(9002, "new")
    await site.add_notification(1001, 501, 77)
    await site.add_notification(1001, 502, 78)
    taken = await site.snapshot()
    assert {t: len(taken[t]) for t in BOT_TABLES} == {
        "administrator": 2,
        "client_request": 4,
        "outbox_message": 2,
        "inbox_update": 2,
        "admin_notification": 2,
        "migration": len(list(pkgutil.iter_modules(sosekni.piccolo_migrations.__path__))),
    }

    backup = await site.create()

    # Change rows, delete rows and add rows, in every table.
    await site.db.fetch(
        "UPDATE client_request SET status = 'approved', response = 'approved', "
        "admin_telegram_id = 502, admin_name = 'Ivan', responded_at = CURRENT_TIMESTAMP "
        "WHERE client_telegram_id = 1001"
    )
    await site.db.fetch("UPDATE administrator SET name = 'Olga K', active = {}", False)
    await site.db.fetch("DELETE FROM administrator WHERE telegram_id = 502")
    await site.db.fetch("DELETE FROM client_request WHERE status = 'rejected'")
    await site.db.fetch("UPDATE outbox_message SET status = 'sent', attempts = 4")
    await site.db.fetch("DELETE FROM inbox_update WHERE status = 'done'")
    await site.db.fetch("DELETE FROM admin_notification WHERE message_id = 78")
    await site.db.fetch("DELETE FROM migration WHERE id = 2")
    await site.add_request(1004, "pending", "Plot 99")
    await site.add_outbox(1004, "pending")
    await site.add_inbox(9003, "new")
    await site.add_notification(1004, 501, 79)
    await site.db.add_admin(503, name="Petr")
    changed = await site.snapshot()
    assert [t for t in sorted(BOT_TABLES) if changed[t] == taken[t]] == []

    done = await ops("backup", "restore", str(backup), "--yes", env=site.env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert await site.snapshot() == taken
    (safety,) = (p for p in site.backup_files() if p != backup)
    assert printed(done) == [f"restored {backup.name}; the database as it was is in {safety.name}"]
    assert checksum_of(safety).read_text() == sha256sum_line(safety)

    # The safety backup, restored with "y" typed at the prompt, brings back the changed state.
    done = await ops("backup", "restore", str(safety), env=site.env, typed="y\n")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(
        f"Replace the live database with {safety.name}? Everything since then is lost [y/N]: "
    )
    assert await site.snapshot() == changed


@ENGINES
async def test_restore_unconfirmed_or_of_a_damaged_or_other_engine_backup_changes_nothing(
    site: Site, templates: Templates, tmp_path: Path
) -> None:
    await site.add_request(1001, "approved")
    await site.add_request(1002, "pending")
    await site.db.add_admin(501, name="Olga")
    before = await site.snapshot()
    backup = templates.backups[site.engine]  # an empty bot: restoring it would be plain to see
    other = "postgres" if site.engine == "sqlite" else "sqlite"
    damaged = copy_as(backup, tmp_path / backup.name)
    damage(damaged)

    answered_no, no_answer, damaged_done, other_done = await asyncio.gather(
        ops("backup", "restore", str(backup), env=site.env, typed="n\n"),
        ops("backup", "restore", str(backup), env=site.env, typed=None),
        ops("backup", "restore", str(damaged), "--yes", env=site.env),
        ops("backup", "restore", str(templates.backups[other]), "--yes", env=site.env),
    )

    assert answered_no.stdout.startswith(f"Replace the live database with {backup.name}? ")
    assert one_line_error(answered_no) == "restore cancelled; nothing changed"
    assert no_answer.stdout.startswith(f"Replace the live database with {backup.name}? ")
    assert one_line_error(no_answer) == "restore cancelled; nothing changed"  # end of input
    assert one_line_error(damaged_done) == (
        f"{damaged.name} does not match its SHA-256: the file is damaged"
    )
    assert one_line_error(other_done) == (
        f"{templates.backups[other].name} is a {other} backup; DATABASE_URL is not"
    )
    assert not site.backups.exists(), "no safety backup was taken"
    assert await site.snapshot() == before


# ----------------------------------------------------------------------------- create


@ENGINES
async def test_backup_create_writes_private_checksummed_files_named_by_database_and_utc_time(
    site: Site,
) -> None:
    assert not site.backups.parent.exists()
    start = whole_seconds(datetime.now(UTC))
    done = await ops("backup", "create", env=site.env)
    end = datetime.now(UTC)

    assert done.returncode == 0, done.stdout + done.stderr
    assert stat.S_IMODE(site.backups.stat().st_mode) == 0o700, "BACKUP_DIR was created"
    (backup,) = site.backup_files()
    assert names(site.backups) == {backup.name, checksum_of(backup).name}
    assert re.fullmatch(
        rf"sosekni-{re.escape(site.database)}-\d{{8}}T\d{{6}}Z\.{site.ext}", backup.name
    )
    assert start <= stamp_of(backup.name) <= end
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(checksum_of(backup).stat().st_mode) == 0o600
    assert checksum_of(backup).read_text() == sha256sum_line(backup)
    sha256sum = subprocess.run(
        ["sha256sum", backup.name], cwd=site.backups, capture_output=True, text=True, check=True
    )
    assert checksum_of(backup).read_text() == sha256sum.stdout
    size = backup.stat().st_size
    assert 1024 <= size < 1024 * 1024
    # Rich wraps a line longer than the terminal at a space: joined back, it is one line.
    assert " ".join(done.stdout.split()) == (
        f"backup written: {backup} ({size / 1024:.1f} KiB, sha256 in {checksum_of(backup).name})"
    )

    # A second backup within the same second must not reuse a name. The clock cannot be held
    # still, so every second from the first backup's up to half a minute from now is taken
    # already: the new backup must get the first free second after them.
    first = stamp_of(backup.name)
    last = whole_seconds(datetime.now(UTC)) + timedelta(seconds=30)
    taken = [
        first + timedelta(seconds=n) for n in range(1, int((last - first).total_seconds()) + 1)
    ]
    for at in taken:
        copy_as(backup, site.backups / site.name_at(at))
    before = {p: p.read_bytes() for p in site.backups.iterdir()}

    second = await site.create()

    assert second.name == site.name_at(taken[-1] + timedelta(seconds=1))
    assert {p: p.read_bytes() for p in before} == before, "no existing file was overwritten"
    assert checksum_of(second).read_text() == sha256sum_line(second)


@pytest.mark.parametrize("engine", ["sqlite"])
async def test_backup_started_while_another_is_being_written_leaves_that_one_alone(
    site: Site,
) -> None:
    # Another `backup create` is still writing its .partial file, in each of the next seconds.
    site.backups.mkdir(parents=True)
    now = whole_seconds(datetime.now(UTC))
    in_progress = [
        site.backups / (site.name_at(now + timedelta(seconds=n)) + ".partial") for n in range(31)
    ]
    for path in in_progress:
        path.write_bytes(b"another backup is still writing this")

    created = await site.create()

    assert [p.read_bytes() if p.exists() else None for p in in_progress] == [
        b"another backup is still writing this"
    ] * len(in_progress)
    assert checksum_of(created).read_text() == sha256sum_line(created)


# ----------------------------------------------------------------------------- list, prune


@ENGINES
async def test_backup_list_shows_backups_newest_first_with_size_and_checksum_presence(
    site: Site, templates: Templates, tmp_path: Path
) -> None:
    real = templates.backups[site.engine]
    now = whole_seconds(datetime.now(UTC))
    site.backups.mkdir(parents=True)
    newest = copy_as(real, site.backups / site.name_at(now))
    week_old = copy_as(real, site.backups / site.name_at(now - timedelta(days=7)), False)
    week_old.write_bytes(b"x" * 2048)
    day_old = copy_as(real, site.backups / site.name_at(now - timedelta(days=1)))
    (site.backups / "notes.txt").write_text("not a backup")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()

    done, empty = await asyncio.gather(
        ops("backup", "list", env=site.env),
        ops("backup", "list", env={**site.env, "BACKUP_DIR": str(empty_dir)}),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    size = f"{real.stat().st_size / 1024:.1f} KiB"
    assert table_rows(done.stdout) == [
        [newest.name, site.database, shown(now), size, "yes"],
        [day_old.name, site.database, shown(now - timedelta(days=1)), size, "yes"],
        [week_old.name, site.database, shown(now - timedelta(days=7)), "2.0 KiB", "missing"],
    ]
    assert printed(done)[-1] == "3 backup(s)"
    assert empty.returncode == 0, empty.stdout + empty.stderr
    assert table_rows(empty.stdout) == []
    assert printed(empty)[-1] == "0 backup(s)"


@ENGINES
async def test_backup_prune_deletes_backups_older_than_keep_days_but_always_keeps_the_newest(
    site: Site, templates: Templates, tmp_path: Path
) -> None:
    real = templates.backups[site.engine]
    now = whole_seconds(datetime.now(UTC))

    def aged(directory: Path, days: int) -> Path:
        return copy_as(real, directory / site.name_at(now - timedelta(days=days)))

    site.backups.mkdir(parents=True)
    kept = [aged(site.backups, 0), aged(site.backups, 1), aged(site.backups, 29)]
    expired = [aged(site.backups, 31), aged(site.backups, 400)]
    (site.backups / "notes.txt").write_text("not a backup")
    all_old = tmp_path / "all-old"
    all_old.mkdir()
    newest_old = aged(all_old, 31)
    older = [aged(all_old, 45), aged(all_old, 60)]

    done, done_all_old = await asyncio.gather(
        ops("backup", "prune", "--keep-days", "30", env=site.env),
        ops("backup", "prune", "--keep-days", "30", env={**site.env, "BACKUP_DIR": str(all_old)}),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert printed(done) == [
        *(f"deleted {p.name}" for p in expired),
        "2 backup(s) deleted, 3 kept",
    ]
    assert names(site.backups) == {"notes.txt"} | {
        name for p in kept for name in (p.name, checksum_of(p).name)
    }
    assert done_all_old.returncode == 0, done_all_old.stdout + done_all_old.stderr
    assert printed(done_all_old) == [
        *(f"deleted {p.name}" for p in older),
        "2 backup(s) deleted, 1 kept",
    ]
    assert names(all_old) == {newest_old.name, checksum_of(newest_old).name}


# ----------------------------------------------------------------------------- verify


@ENGINES
async def test_backup_verify_restores_a_good_backup_for_a_test_and_fails_a_corrupt_one(
    site: Site, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    admin_dsn = request.getfixturevalue("postgres_admin_dsn") if site.engine == "postgres" else ""
    await site.add_request(1001, "approved")
    await site.add_request(1002, "pending")
    backup = await site.create()
    # Cut in half, with a checksum that matches: only the test restore can tell.
    truncated = tmp_path / site.name_at(stamp_of(backup.name) - timedelta(seconds=1))
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    checksum_of(truncated).write_text(sha256sum_line(truncated))
    scratch_before = await scratch_databases(admin_dsn) if admin_dsn else set()

    good, corrupt = await asyncio.gather(
        ops("backup", "verify", str(backup), env=site.env),
        ops("backup", "verify", str(truncated), env=site.env),
    )

    assert good.returncode == 0, good.stdout + good.stderr
    if site.engine == "sqlite":
        assert printed(good) == [f"{backup.name}: checksum ok, integrity ok, 2 request(s)"]
        assert one_line_error(corrupt) == (
            f"{truncated.name} is not a usable SQLite database: database disk image is malformed"
        )
    else:
        assert printed(good) == [f"{backup.name}: checksum ok, test restore ok, 2 request(s)"]
        assert one_line_error(corrupt) == (
            "pg_restore: error: could not read from input file: end of file"
        )
        assert await scratch_databases(admin_dsn) == scratch_before, "no scratch database left"


async def test_backup_verify_fails_a_changed_unchecked_missing_or_misnamed_file_in_one_line(
    templates: Templates, tmp_path: Path
) -> None:
    real = templates.backups["sqlite"]
    taken = stamp_of(real.name)
    changed = copy_as(real, tmp_path / f"sosekni-bot-{stamp(taken - timedelta(days=1))}.sqlite3")
    damage(changed)
    unchecked = copy_as(real, tmp_path / f"sosekni-bot-{stamp(taken)}.sqlite3", checksum=False)
    missing = tmp_path / f"sosekni-bot-{stamp(taken - timedelta(days=2))}.sqlite3"
    misnamed = copy_as(real, tmp_path / "nightly.sqlite3")
    env = base_env(templates.urls["sqlite"], API, BACKUP_DIR=str(tmp_path))

    done = await asyncio.gather(
        *(ops("backup", "verify", str(p), env=env) for p in (changed, unchecked, missing, misnamed))
    )

    assert [one_line_error(d) for d in done] == [
        f"{changed.name} does not match its SHA-256: the file is damaged",
        f"{unchecked.name}.sha256 is missing: cannot tell whether {unchecked.name} is intact",
        f"{missing}: no such backup file",
        "nightly.sqlite3 is not a sosekni backup (sosekni-<db>-<time>.dump|sqlite3)",
    ]


async def test_backup_verify_of_a_dump_without_the_bot_tables_fails_in_one_line(
    postgres_url: str, tmp_path: Path
) -> None:
    # A backup taken before `sosekni-ops migrate` ever ran: a valid dump, but of no bot.
    env = base_env(postgres_url, API, BACKUP_DIR=str(tmp_path))
    created = await ops("backup", "create", env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    (backup,) = tmp_path.glob("*.dump")

    done = await ops("backup", "verify", str(backup), env=env)

    assert one_line_error(done).startswith(f"{backup.name}")


# ----------------------------------------------------------------------------- failures


async def test_backup_create_of_an_unreachable_database_fails_in_one_line(tmp_path: Path) -> None:
    env = base_env(UNREACHABLE, API, BACKUP_DIR=str(tmp_path / "backups"))

    done = await ops("backup", "create", env=env)

    assert one_line_error(done).startswith("cannot reach the database x: ")
    assert names(tmp_path / "backups") == set(), "no partial file is left behind"


async def test_backup_error_stays_one_line_without_a_terminal_width(tmp_path: Path) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:1/sosekni_production_database"
    env = base_env(unreachable, API, BACKUP_DIR=str(tmp_path / "backups"))

    done = await ops("backup", "create", env=env, typed=None, columns=None)

    assert one_line_error(done).startswith("cannot reach the database sosekni_production_")


async def test_backup_create_of_a_missing_sqlite_file_fails_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "never-created.db"
    env = base_env(f"sqlite:///{missing}", API, BACKUP_DIR=str(tmp_path / "backups"))

    done = await ops("backup", "create", env=env)

    assert one_line_error(done) == f"{missing}: no such database file"
    assert names(tmp_path / "backups") == set(), "no partial file is left behind"
    assert not missing.exists()


@pytest.mark.parametrize("engine", ["postgres"])
async def test_backup_create_reports_a_failing_pg_dump_in_one_line_despite_the_progress_bar(
    site: Site,
) -> None:
    # libpq reads PGOPTIONS and asyncpg does not: the server is reached and the table count
    # taken, then pg_dump itself is refused while the progress bar is on screen.
    env = {**site.env, "PGOPTIONS": "-c sosekni_no_such_setting=1"}

    done = await ops("backup", "create", env=env)

    message = one_line_error(done)
    assert message.startswith("connection to server at "), message
    assert message.endswith(
        'FATAL:  unrecognized configuration parameter "sosekni_no_such_setting"'
    ), message
    assert names(site.backups) == set(), "no partial file is left behind"


def without_versioned_binaries() -> list[str]:
    """`sosekni-ops` in a private mount namespace where /usr/lib/postgresql is empty.

    The system keeps its binaries; only this one process sees them gone.
    """
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if unshare is None or mount is None or os.geteuid() != 0:
        pytest.fail("hiding /usr/lib/postgresql needs root and util-linux's unshare and mount")
    script = f'{mount} -t tmpfs none /usr/lib/postgresql && exec "$@"'
    return [unshare, "--mount", "/bin/sh", "-c", script, "sh", *ops_command()]


async def test_backup_create_without_pg_dump_names_the_client_package_to_install(
    postgres_url: str, tmp_path: Path
) -> None:
    major = int(await Db(postgres_url).value("SHOW server_version_num")) // 10000
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = base_env(postgres_url, API, BACKUP_DIR=str(tmp_path / "b"), PATH=str(empty_bin))
    migrated = await ops("migrate", env=env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    hidden = without_versioned_binaries() if Path("/usr/lib/postgresql").exists() else None
    done = await ops("backup", "create", env=env, ops=hidden)

    assert one_line_error(done) == f"pg_dump is not installed: install postgresql-client-{major}"
    assert names(tmp_path / "b") == set(), "no partial file is left behind"


async def test_sqlite_backup_of_a_database_in_a_directory_with_a_hash_holds_its_rows(
    templates: Templates, tmp_path: Path
) -> None:
    home = tmp_path / "site#1"
    home.mkdir()
    shutil.copyfile(templates.urls["sqlite"][len("sqlite:///") :], home / "bot.db")
    url = f"sqlite:///{home / 'bot.db'}"
    await Db(url).add_admin(501, name="Olga")
    env = base_env(url, API, BACKUP_DIR=str(home / "backups"))

    done = await ops("backup", "create", env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    (backup,) = (home / "backups").glob("*.sqlite3")
    copy = Db(f"sqlite:///{backup}")
    tables = await copy.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
    assert {r["name"] for r in tables} >= BOT_TABLES
    assert await copy.value("SELECT name FROM administrator") == "Olga"
