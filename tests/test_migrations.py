"""`sosekni-ops migrate`, `migrate status` and `migrate --down N`, on SQLite and on Postgres.

Every test runs the real executable against a fresh database of its own (empty, or a copy of
one `sosekni-ops migrate` produced once per engine, which is faster than migrating again) and
checks the exit code, the exact output and the schema the database holds afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import pkgutil
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

import sosekni.piccolo_migrations
from tests.fakes.postgres import create_database, drop_database
from tests.harness import Db, base_env, clone_database, run_ops

API = "http://127.0.0.1:9"  # never called: migrations do not talk to Telegram
APP_TABLES = {
    "administrator",
    "client_request",
    "inbox_update",
    "outbox_message",
    "admin_notification",
}
RULE_INDEXES = {
    "client_request_one_pending",
    "admin_notification_copy",
    "inbox_update_due",
    "outbox_message_due",
}


def _migrations() -> list[tuple[str, str]]:
    """(ID, DESCRIPTION) of every migration file, oldest first."""
    found = []
    for info in pkgutil.iter_modules(sosekni.piccolo_migrations.__path__):
        module = importlib.import_module(f"sosekni.piccolo_migrations.{info.name}")
        found.append((module.ID, module.DESCRIPTION))
    return sorted(found)


MIGRATIONS = _migrations()
IDS = [migration_id for migration_id, _ in MIGRATIONS]
RULES_ID = "2026-11-25T19:20:00:000000"  # the migration that adds RULE_INDEXES
SINCE_RULES = IDS[IDS.index(RULES_ID) :]  # it and every newer one
CLAIM_INDEXES = {
    "inbox_update_open",
    "inbox_update_open_chat",
    "outbox_message_open",
    "outbox_message_open_chat",
    "outbox_message_failed",
}


@dataclass
class Target:
    """One database the CLI is pointed at, with a probe to check what it holds."""

    url: str
    db: Db
    env: dict[str, str]

    @classmethod
    def at(cls, url: str) -> Target:
        return cls(url, Db(url), base_env(url, API))

    @property
    def where(self) -> str:
        """How the CLI names this database in its messages (no password)."""
        if self.url.startswith("sqlite:"):
            return self.url
        parsed = urlparse(self.url)
        return f"{parsed.hostname}:{parsed.port or 5432}{parsed.path}"

    def ops(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_ops(*args, env=self.env)

    async def tables(self) -> set[str]:
        if self.db.sqlite_path is not None:
            rows = await self.db.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = await self.db.fetch(
                "SELECT table_name AS name FROM information_schema.tables "
                "WHERE table_schema = 'public'"
            )
        return {r["name"] for r in rows}

    async def indexes(self) -> set[str]:
        if self.db.sqlite_path is not None:
            rows = await self.db.fetch("SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            rows = await self.db.fetch(
                "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'"
            )
        return {r["name"] for r in rows}

    async def applied(self) -> list[str]:
        """The migrations recorded as applied, in the order they ran."""
        rows = await self.db.fetch(
            "SELECT name FROM migration WHERE app_name = {} ORDER BY id", "sosekni"
        )
        return [r["name"] for r in rows]

    async def insert_request(self, client_id: int, status: str = "pending") -> None:
        await self.db.fetch(
            "INSERT INTO client_request (client_telegram_id, client_first_name, text, status) "
            "VALUES ({}, {}, {}, {})",
            client_id,
            "Anna",
            "Plot 42",
            status,
        )


@dataclass
class Databases:
    """One engine (SQLite files or a Postgres server) with a migrated template database."""

    kind: str
    admin_dsn: str | None
    root: Path
    template_url: str = ""
    made: list[str] = field(default_factory=list)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def _new(self) -> str:
        if self.admin_dsn is None:
            return f"sqlite:///{self.root / f'db{next(self.numbers)}.db'}"
        url = create_database(self.admin_dsn)
        self.made.append(url)
        return url

    def empty(self) -> Target:
        return Target.at(self._new())

    def migrated(self) -> Target:
        """A copy of the template database (faster than migrating)."""
        if self.admin_dsn is None:
            url = self._new()
            shutil.copyfile(self.template_url[len("sqlite:///") :], url[len("sqlite:///") :])
            return Target.at(url)
        url = clone_database(self.admin_dsn, self.template_url)
        self.made.append(url)
        return Target.at(url)

    def cleanup(self) -> None:
        if self.admin_dsn is not None:
            for url in self.made:
                drop_database(self.admin_dsn, url)


@contextlib.contextmanager
def databases_of(kind: str, request: pytest.FixtureRequest, root: Path) -> Iterator[Databases]:
    """A `Databases` of `kind` whose template database was migrated by `sosekni-ops migrate`."""
    admin_dsn = request.getfixturevalue("postgres_admin_dsn") if kind == "postgres" else None
    found = Databases(kind, admin_dsn, root)
    try:
        template = found.empty()
        done = template.ops("migrate")
        assert done.returncode == 0, done.stderr + done.stdout
        found.template_url = template.url
        yield found
    finally:
        found.cleanup()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databases]:
    with databases_of(request.param, request, tmp_path_factory.mktemp("dbs")) as found:
        yield found


@pytest.fixture
def empty(databases: Databases) -> Target:
    """A fresh, empty database."""
    return databases.empty()


@pytest.fixture
def migrated(databases: Databases) -> Target:
    """A fresh database with every migration applied by `sosekni-ops migrate`."""
    return databases.migrated()


def status_rows(stdout: str) -> list[tuple[str, str, str]]:
    """The (migration, description, applied) rows of the `migrate status` table."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def expected_status(applied: int) -> list[tuple[str, str, str]]:
    """Every migration, the oldest `applied` of them applied."""
    return [
        (migration_id, description, "yes" if n < applied else "no")
        for n, (migration_id, description) in enumerate(MIGRATIONS)
    ]


def applied_lines(ids: list[str], verb: str = "applied") -> str:
    return "".join(f"{verb} {migration_id}\n" for migration_id in ids)


async def assert_one_pending_rule(target: Target) -> None:
    """The partial unique index: one pending request per client, any number of decided ones."""
    await target.insert_request(1001)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        await target.insert_request(1001)
    await target.insert_request(1001, "approved")
    await target.insert_request(1001, "rejected")
    await target.insert_request(1002)
    pending = await target.db.value(
        "SELECT count(*) FROM client_request WHERE client_telegram_id = {} AND status = {}",
        1001,
        "pending",
    )
    assert pending == 1


def test_there_are_migrations_to_test() -> None:
    assert len(IDS) >= 2
    assert IDS == sorted(IDS)


async def test_migrate_on_an_empty_database_applies_every_migration(empty: Target) -> None:
    assert not (await empty.tables()) & APP_TABLES

    done = empty.ops("migrate")

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == applied_lines(IDS)
    assert APP_TABLES <= await empty.tables()
    assert RULE_INDEXES <= await empty.indexes()
    assert await empty.applied() == IDS


async def test_status_lists_each_migration_as_applied(migrated: Target) -> None:
    status = migrated.ops("migrate", "status")

    assert (status.returncode, status.stderr) == (0, ""), status.stderr
    assert f"migrations on {migrated.where}" in status.stdout
    assert status_rows(status.stdout) == expected_status(len(IDS))


async def test_second_migrate_has_nothing_to_do(migrated: Target) -> None:
    again = migrated.ops("migrate")

    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == f"nothing to do: {migrated.where} is up to date\n"
    assert await migrated.applied() == IDS


async def test_down_1_undoes_the_newest_and_migrate_reapplies_it(migrated: Target) -> None:
    down = migrated.ops("migrate", "--down", "1")

    assert (down.returncode, down.stderr) == (0, ""), down.stderr
    assert down.stdout == applied_lines([IDS[-1]], "undid")
    status = migrated.ops("migrate", "status")
    assert status_rows(status.stdout) == expected_status(len(IDS) - 1)
    assert await migrated.applied() == IDS[:-1]

    up = migrated.ops("migrate")

    assert (up.returncode, up.stderr) == (0, ""), up.stderr
    assert up.stdout == applied_lines([IDS[-1]])
    assert await migrated.applied() == IDS
    assert RULE_INDEXES | CLAIM_INDEXES <= await migrated.indexes()


async def test_down_past_the_rules_drops_them_and_migrate_restores_them(
    migrated: Target,
) -> None:
    down = migrated.ops("migrate", "--down", str(len(SINCE_RULES)))

    assert (down.returncode, down.stderr) == (0, ""), down.stderr
    assert down.stdout == applied_lines(list(reversed(SINCE_RULES)), "undid")
    status = migrated.ops("migrate", "status")
    assert status_rows(status.stdout) == expected_status(len(IDS) - len(SINCE_RULES))
    assert not (await migrated.indexes()) & (RULE_INDEXES | CLAIM_INDEXES)
    # Without the rules, nothing stops two pending requests of one client.
    await migrated.insert_request(1001)
    await migrated.insert_request(1001)
    await migrated.db.fetch("DELETE FROM client_request")

    up = migrated.ops("migrate")

    assert (up.returncode, up.stderr) == (0, ""), up.stderr
    assert up.stdout == applied_lines(SINCE_RULES)
    assert await migrated.applied() == IDS
    await assert_one_pending_rule(migrated)


async def test_down_more_than_applied_fails_with_one_line_and_changes_nothing(
    migrated: Target,
) -> None:
    await migrated.insert_request(1001)

    down = migrated.ops("migrate", "--down", "99")

    assert down.returncode == 1
    assert down.stdout == ""
    assert down.stderr == f"error: only {len(IDS)} migration(s) applied, cannot undo 99\n"
    assert await migrated.applied() == IDS
    assert APP_TABLES <= await migrated.tables()
    assert RULE_INDEXES <= await migrated.indexes()
    assert await migrated.db.value("SELECT count(*) FROM client_request") == 1


def test_down_all_is_refused_the_count_must_be_a_positive_number(tmp_path: Path) -> None:
    # Undoing everything is `--down N` with N the number applied (see the full-down test).
    done = Target.at(f"sqlite:///{tmp_path / 'bot.db'}").ops("migrate", "--down", "all")

    assert done.returncode == 2
    assert "--down" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bot.db").exists()


async def test_full_down_then_up_restores_every_table_and_rule(migrated: Target) -> None:
    down = migrated.ops("migrate", "--down", str(len(IDS)))

    assert (down.returncode, down.stderr) == (0, ""), down.stderr
    assert down.stdout == applied_lines(list(reversed(IDS)), "undid")
    assert not (await migrated.tables()) & APP_TABLES
    assert await migrated.applied() == []

    up = migrated.ops("migrate")

    assert (up.returncode, up.stderr) == (0, ""), up.stderr
    assert up.stdout == applied_lines(IDS)
    assert APP_TABLES <= await migrated.tables()
    assert RULE_INDEXES | CLAIM_INDEXES <= await migrated.indexes()
    await assert_one_pending_rule(migrated)
    # The other rules are back too: a status outside the three is refused.
    with pytest.raises((sqlite3.IntegrityError, asyncpg.CheckViolationError)):
        await migrated.insert_request(1003, "maybe")


async def test_a_migration_that_cannot_apply_fails_with_one_line_and_stays_unapplied(
    migrated: Target,
) -> None:
    assert migrated.ops("migrate", "--down", str(len(SINCE_RULES))).returncode == 0
    # Data the rules forbid: the unique index cannot be built over it.
    await migrated.insert_request(1001)
    await migrated.insert_request(1001)

    up = migrated.ops("migrate")

    assert up.returncode == 1
    assert up.stdout == ""
    assert await migrated.applied() == IDS[: IDS.index(RULES_ID)]
    assert not (await migrated.indexes()) & RULE_INDEXES
    assert await migrated.db.value("SELECT count(*) FROM client_request") == 2
    assert "Traceback" not in up.stderr
    lines = up.stderr.splitlines()
    assert lines[0].startswith("error: ")
    assert len(lines) == 1, up.stderr


STATES_ID = "2026-12-03T18:10:00:000000"  # cancelled and expired


async def test_the_states_migration_allows_cancelled_and_expired_and_undoes_to_rejected(
    migrated: Target,
) -> None:
    await migrated.insert_request(1004, "cancelled")
    await migrated.insert_request(1005, "expired")
    before = IDS[IDS.index(STATES_ID) - 1]

    down = migrated.ops("migrate", "--to", before)

    assert (down.returncode, down.stderr) == (0, ""), down.stderr
    assert STATES_ID not in await migrated.applied()
    rows = await migrated.db.fetch(
        "SELECT client_telegram_id, status FROM client_request ORDER BY client_telegram_id"
    )
    assert [(r["client_telegram_id"], r["status"]) for r in rows] == [
        (1004, "rejected"),
        (1005, "rejected"),
    ]
    with pytest.raises((sqlite3.IntegrityError, asyncpg.CheckViolationError)):
        await migrated.insert_request(1006, "cancelled")

    assert migrated.ops("migrate").returncode == 0
    await migrated.insert_request(1006, "expired")
    with pytest.raises((sqlite3.IntegrityError, asyncpg.CheckViolationError)):
        await migrated.insert_request(1007, "maybe")
