"""The operator's commands: `admin`, `requests`, their failures and their help.

The commands run in-process through Typer's `CliRunner` (a real process pays ~1.5 s of
imports each) against real databases (SQLite files, and Postgres) and are checked for exit
codes, the exact output and what the database holds. A few runs of the real `sosekni-ops`
executable remain, at the end, to prove the installed entry point itself: its help, its exit
code and its one red error line. (The template database is still migrated by the real
executable: see `tests/test_migrations.py`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from ops import common
from tests.fakes.postgres import create_database, drop_database
from tests.harness import TEMPLATES, base_env, ops_in_process, run_ops
from tests.test_migrations import API, Databases, Target

RED, PLAIN = "\x1b[1;31m", "\x1b[0m"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"
EXPORT_COLUMNS = [
    "id", "status", "client_telegram_id", "client_username", "client_first_name",
    "client_language", "text", "submitted_at", "admin_telegram_id", "admin_name", "response",
    "reason", "responded_at",
]  # fmt: skip
TIME_COLUMNS = ("submitted_at", "responded_at")
DATA_COMMANDS = [
    ("migrate",),
    ("migrate", "status"),
    ("migrate", "--down", "1"),
    ("admin", "add", "501", "--name", "Olga"),
    ("admin", "list"),
    ("admin", "deactivate", "501"),
    ("requests", "list"),
    ("requests", "export", "/tmp/sosekni-never-written.csv"),
]
UNREACHABLE_SQLITE_COMMANDS = [("admin", "list"), ("requests", "list"), ("migrate", "status")]
NOT_MIGRATED_COMMANDS = [
    ("admin", "add", "501", "--name", "Olga"),
    ("admin", "list"),
    ("requests", "export", "/tmp/sosekni-never-written.csv"),
]
HELP_PAGES = [
    (),
    ("serve",),
    ("poll",),
    ("sandbox",),
    ("migrate",),
    ("migrate", "status"),
    ("admin",),
    ("admin", "add"),
    ("admin", "list"),
    ("admin", "deactivate"),
    ("requests",),
    ("requests", "list"),
    ("requests", "export"),
    ("health",),
    ("deploy",),
    ("rollback",),
    ("releases",),
    ("stats",),
    ("webhook",),
    ("webhook", "set"),
    ("webhook", "info"),
    ("webhook", "delete"),
    ("backup",),
    ("backup", "create"),
    ("backup", "list"),
    ("backup", "prune"),
    ("backup", "verify"),
    ("backup", "restore"),
]


def table_rows(stdout: str) -> list[list[str]]:
    """The body rows of a Rich table; a cell's wrapped lines are joined with a newline."""
    rows: list[list[str]] = []
    for line in stdout.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if rows and cells[0] == "":
            rows[-1] = [
                f"{old}\n{new}" if new else old for old, new in zip(rows[-1], cells, strict=True)
            ]
        else:
            rows.append(cells)
    return rows


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def label(args: tuple[str, ...]) -> str:
    return " ".join(args) or "sosekni-ops"


@contextlib.contextmanager
def error_colours(coloured: bool) -> Iterator[None]:
    """The error console coloured as `sosekni-ops` colours it at start, for one run.

    The real process builds its error console at import and colours it if FORCE_COLOR is set
    then. In this process it was built long before, under pytest's captured stderr, so the
    console's own detection is run again under FORCE_COLOR (or colour is turned off) and the
    console is put back after. The real-process tests below check the colour without this.
    """
    console = common.error_console
    before = console._color_system  # Rich picks colours once, when built
    if coloured:
        with mock.patch.dict(os.environ, {"FORCE_COLOR": "1"}):
            console._color_system = console._detect_color_system()
    else:
        console._color_system = None
    try:
        yield
    finally:
        console._color_system = before


def in_process(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`sosekni-ops ARGS` run in this process with exactly `env`, as `run_ops` runs it.

    A process pays ~1.5 s of imports; this pays none. The result has a finished process's
    shape so the tests read both alike. Variables of this process that `env` lacks are removed
    for the run; the logging the command configures and the error colours are put back after.
    An exception that escapes the command is appended to stderr as the real process would
    print it, so "no traceback" still means no traceback.
    """
    with error_colours(env.get("FORCE_COLOR", "") != ""):
        return ops_in_process(args, env)


async def ops(target: Target, *args: str) -> subprocess.CompletedProcess[str]:
    """`sosekni-ops ARGS` on `target`, in-process, off the test's event loop.

    The commands run their own `asyncio.run`, which cannot start inside the test's running
    loop, so the command runs in a worker thread while the test waits for it.
    """
    return await asyncio.to_thread(in_process, args, target.env)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databases]:
    """Databases of one engine whose migrated ones copy the session's template (the real
    `migrate` is `test_migrations.py`'s subject, not these commands')."""
    kind = request.param
    admin_dsn = request.getfixturevalue("postgres_admin_dsn") if kind == "postgres" else None
    found = Databases(kind, admin_dsn, tmp_path_factory.mktemp("dbs"))
    found.template_url = TEMPLATES.url(kind, admin_dsn)
    yield found
    found.cleanup()


@pytest.fixture
def migrated(databases: Databases) -> Target:
    """A fresh database with every migration applied."""
    return databases.migrated()


sqlite_only = pytest.mark.parametrize("databases", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def outcomes(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, ...], subprocess.CompletedProcess[str]]]:
    """Commands that need no prepared data, run in-process, by (situation, *args)."""
    tmp = tmp_path_factory.mktemp("outcomes")
    empty_file = tmp / "never-migrated.db"
    empty_file.touch()
    empty_postgres = create_database(postgres_admin_dsn)
    # Rich colours the error line when told the output is a terminal; `migrate` would then
    # also draw its spinner on stdout, so it runs uncoloured.
    colour = {"FORCE_COLOR": "1"}
    jobs: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, str]]] = {}
    for args in DATA_COMMANDS:
        env = base_env(UNREACHABLE, API, **({} if args[0] == "migrate" else colour))
        jobs[("unreachable-postgres", *args)] = (args, env)
    missing_dir = f"sqlite:///{tmp / 'no-such-dir' / 'bot.db'}"
    for args in UNREACHABLE_SQLITE_COMMANDS:
        jobs[("unreachable-sqlite", *args)] = (args, base_env(missing_dir, API, **colour))
    for args in NOT_MIGRATED_COMMANDS:
        jobs[("not-migrated-sqlite", *args)] = (args, base_env(f"sqlite:///{empty_file}", API))
    jobs[("not-migrated-postgres", "admin", "list")] = (
        ("admin", "list"),
        base_env(empty_postgres, API),
    )
    for args in HELP_PAGES:
        jobs[("help", *args)] = ((*args, "--help"), base_env(f"sqlite:///{empty_file}", API))
    jobs[("bad-status",)] = (
        ("requests", "list", "--status", "bogus"),
        base_env(f"sqlite:///{empty_file}", API),
    )
    try:
        yield {key: in_process(*job) for key, job in jobs.items()}
    finally:
        drop_database(postgres_admin_dsn, empty_postgres)


# ----------------------------------------------------------------------------- admin


async def test_admin_add_creates_an_active_administrator_with_a_name(migrated: Target) -> None:
    done = await ops(migrated, "admin", "add", "501", "--name", "Olga")

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == "administrator 501 'Olga' is active\n"
    rows = await migrated.db.fetch("SELECT telegram_id, name, active FROM administrator")
    assert [(r["telegram_id"], r["name"], bool(r["active"])) for r in rows] == [(501, "Olga", True)]


async def test_admin_deactivate_then_list_shows_id_name_and_inactive(migrated: Target) -> None:
    await migrated.db.add_admin(501, name="Olga")
    await migrated.db.add_admin(502, name="Ivan")

    done = await ops(migrated, "admin", "deactivate", "502")

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == "administrator 502 deactivated\n"
    listed = await ops(migrated, "admin", "list")
    assert (listed.returncode, listed.stderr) == (0, ""), listed.stderr
    assert "administrators" in listed.stdout
    assert [row[:3] for row in table_rows(listed.stdout)] == [
        ["501", "Olga", "yes"],
        ["502", "Ivan", "no"],
    ]
    # The record stays: deactivated, never deleted.
    assert await migrated.db.value("SELECT count(*) FROM administrator") == 2


async def test_admin_add_of_an_existing_id_reactivates_and_keeps_the_name(
    migrated: Target,
) -> None:
    await migrated.db.add_admin(502, active=False, name="Ivan")

    done = await ops(migrated, "admin", "add", "502")

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == "administrator 502 'Ivan' is active\n"
    rows = await migrated.db.fetch("SELECT telegram_id, name, active FROM administrator")
    assert [(r["telegram_id"], r["name"], bool(r["active"])) for r in rows] == [(502, "Ivan", True)]


async def test_admin_deactivate_of_an_unknown_id_fails_with_one_line(migrated: Target) -> None:
    await migrated.db.add_admin(501, name="Olga")

    done = await ops(migrated, "admin", "deactivate", "999")

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "error: no administrator with Telegram id 999\n"
    assert bool(await migrated.db.value("SELECT active FROM administrator")) is True


# ----------------------------------------------------------------------------- requests


def stamp(target: Target, moment: datetime | None) -> Any:
    """A timestamp as each engine stores it (SQLite: Piccolo's text form)."""
    if moment is None or target.db.sqlite_path is None:
        return moment
    return str(moment)


async def insert_requests(target: Target) -> dict[str, list[int]]:
    """Four requests in every state; their ids by status, newest first."""
    t0 = datetime(2026, 11, 20, 9, 30, 15, 123456, tzinfo=UTC)
    rows = [
        (2001, "anna", "Anna", "en", "Plot 42, moving in", "pending", None, None, None, None),
        (
            2002, None, "Boris", "ru", 'Dacha "12", gate\ncode please', "approved",
            501, "Olga (@olga)", None, timedelta(hours=2),
        ),
        (
            2003, "vera", "Вера", "ru", "Участок 7", "rejected",
            502, "Ivan", "not a member; ask the chair", timedelta(days=1),
        ),
        (2004, "dima", "Dima", "en", "x" * 80, "pending", None, None, None, None),
    ]  # fmt: skip
    for n, (client, username, first, lang, text, status, admin, name, reason, after) in enumerate(
        rows
    ):
        submitted = t0 + timedelta(minutes=n)
        responded = submitted + after if after is not None else None
        await target.db.fetch(
            "INSERT INTO client_request (client_telegram_id, client_username, client_first_name, "
            "client_language, text, status, submitted_at, admin_telegram_id, admin_name, "
            "response, reason, responded_at, created_at, updated_at) "
            "VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            client,
            username,
            first,
            lang,
            text,
            status,
            stamp(target, submitted),
            admin,
            name,
            None if status == "pending" else status,
            reason,
            stamp(target, responded),
            stamp(target, submitted),
            stamp(target, responded or submitted),
        )
    found = await target.db.fetch("SELECT id, status FROM client_request ORDER BY id DESC")
    by_status: dict[str, list[int]] = {"all": [int(r["id"]) for r in found]}
    for status in ("pending", "approved", "rejected"):
        by_status[status] = [int(r["id"]) for r in found if r["status"] == status]
    return by_status


async def test_requests_list_shows_every_request_newest_first_with_its_decision(
    migrated: Target,
) -> None:
    ids = await insert_requests(migrated)

    done = await ops(migrated, "requests", "list")

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    rows = table_rows(done.stdout)
    assert [int(row[0]) for row in rows] == ids["all"]
    by_id = {int(row[0]): row for row in rows}
    approved = by_id[ids["approved"][0]]
    assert approved[1:4] == ["approved", "Boris (2002)", 'Dacha "12", gate\ncode please']
    assert approved[4:] == [
        "2026-11-20 09:31 UTC",
        "Olga (@olga)",
        "2026-11-20 11:31 UTC",
        "",
    ]
    rejected = by_id[ids["rejected"][0]]
    assert rejected[1:3] == ["rejected", "Вера (2003) @vera"]
    assert rejected[5:] == ["Ivan", "2026-11-21 09:32 UTC", "not a member; ask the chair"]
    long_text = by_id[ids["pending"][0]][3]
    assert long_text == "x" * 59 + "…"
    assert done.stdout.endswith("\n4 request(s)\n")


async def test_requests_list_with_status_shows_only_matching_rows(migrated: Target) -> None:
    ids = await insert_requests(migrated)
    statuses = ["pending", "approved", "rejected"]

    done = [await ops(migrated, "requests", "list", "--status", s) for s in statuses]

    for status, listed in zip(statuses, done, strict=True):
        assert (listed.returncode, listed.stderr) == (0, ""), listed.stderr
        rows = table_rows(listed.stdout)
        assert [int(row[0]) for row in rows] == ids[status], status
        assert {row[1] for row in rows} == {status}
        assert listed.stdout.endswith(f"\n{len(ids[status])} request(s)\n")


def test_requests_list_refuses_an_unknown_status(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    done = outcomes[("bad-status",)]
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Invalid value for '--status'" in done.stderr
    assert "'bogus' is not one of 'pending', 'approved', 'rejected'" in done.stderr
    assert "Traceback" not in done.stderr


def csv_value(column: str, value: Any) -> Any:
    """A value of the export or of the database, in one comparable form."""
    if value is None or value == "":
        return ""
    if column in TIME_COLUMNS:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return str(value)


async def test_requests_export_writes_a_csv_whose_rows_equal_the_database(
    migrated: Target, tmp_path: Path
) -> None:
    await insert_requests(migrated)
    out = tmp_path / "requests-2026-11.csv"

    done = await ops(migrated, "requests", "export", str(out))

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.strip() == f"exported 4 request(s) to {out}"
    assert files_in(tmp_path) == [out.name]
    with out.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        exported = list(reader)
    assert header == EXPORT_COLUMNS
    database = await migrated.db.fetch("SELECT * FROM client_request ORDER BY id")
    assert [[csv_value(c, v) for c, v in zip(header, row, strict=True)] for row in exported] == [
        [csv_value(c, row[c]) for c in EXPORT_COLUMNS] for row in database
    ]
    # Times are written in UTC ISO 8601.
    assert exported[0][EXPORT_COLUMNS.index("submitted_at")] == "2026-11-20T09:30:15.123456+00:00"


@sqlite_only
def test_requests_export_prints_only_its_summary_line(migrated: Target, tmp_path: Path) -> None:
    out = tmp_path / "empty.csv"
    done = in_process(("requests", "export", str(out)), migrated.env)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"exported 0 request(s) to {out}\n"


@sqlite_only
async def test_requests_export_refuses_a_non_csv_name_and_a_missing_directory(
    migrated: Target, tmp_path: Path
) -> None:
    await insert_requests(migrated)
    not_csv = tmp_path / "requests.txt"
    no_dir = tmp_path / "missing" / "requests.csv"

    done = [await ops(migrated, "requests", "export", str(path)) for path in (not_csv, no_dir)]

    assert [(d.returncode, d.stdout) for d in done] == [(1, ""), (1, "")]
    assert done[0].stderr == f"error: {not_csv}: the export file must end in .csv\n"
    assert done[1].stderr == f"error: {no_dir.parent}: no such directory\n"
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("args", DATA_COMMANDS, ids=label)
def test_unreachable_postgres_fails_with_a_red_line_naming_the_database(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]], args: tuple[str, ...]
) -> None:
    done = outcomes[("unreachable-postgres", *args)]
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("error:" if args[0] == "migrate" else f"{RED}error:{PLAIN} ")
    assert ANSI.sub("", last).startswith("error: cannot reach the database at 127.0.0.1:1/x: ")


def test_unreachable_postgres_error_is_the_only_line(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    extra = {
        label(args): outcomes[("unreachable-postgres", *args)].stderr.splitlines()
        for args in DATA_COMMANDS
    }
    assert {name: len(lines) for name, lines in extra.items()} == dict.fromkeys(extra, 1), extra


@pytest.mark.parametrize("args", UNREACHABLE_SQLITE_COMMANDS, ids=label)
def test_unreachable_sqlite_fails_with_a_red_line_naming_the_database(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]], args: tuple[str, ...]
) -> None:
    done = outcomes[("unreachable-sqlite", *args)]
    assert (done.returncode, done.stdout) == (1, "")
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"{RED}error:{PLAIN} cannot reach the database at sqlite:///")
    assert errors[0].endswith("no-such-dir/bot.db: unable to open database file")


def test_unreachable_sqlite_prints_no_traceback(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    stderr = {
        label(args): outcomes[("unreachable-sqlite", *args)].stderr
        for args in UNREACHABLE_SQLITE_COMMANDS
    }
    assert [name for name, text in stderr.items() if "Traceback" in text] == [], stderr


@pytest.mark.parametrize("args", NOT_MIGRATED_COMMANDS, ids=label)
def test_non_migrated_sqlite_says_to_run_migrate(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]], args: tuple[str, ...]
) -> None:
    done = outcomes[("not-migrated-sqlite", *args)]
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("error: the database at sqlite:///")
    assert done.stderr.endswith(" is not migrated: run `sosekni-ops migrate`\n")
    assert len(done.stderr.splitlines()) == 1


def test_non_migrated_postgres_says_to_run_migrate(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    done = outcomes[("not-migrated-postgres", "admin", "list")]
    assert (done.returncode, done.stdout) == (1, "")
    assert re.fullmatch(
        r"error: the database at 127\.0\.0\.1:\d+/\w+ is not migrated: "
        r"run `sosekni-ops migrate`\n",
        done.stderr,
    ), done.stderr


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("args", HELP_PAGES, ids=label)
def test_help_works_for_every_command_and_lists_its_usage(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]], args: tuple[str, ...]
) -> None:
    done = outcomes[("help", *args)]
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert f"Usage: sosekni-ops {' '.join(args)}".replace("  ", " ") in done.stdout
    assert "--help" in done.stdout


@pytest.mark.parametrize("args", HELP_PAGES, ids=label)
def test_help_of_every_command_shows_an_example(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]], args: tuple[str, ...]
) -> None:
    done = outcomes[("help", *args)]
    assert done.returncode == 0
    assert re.search(r"Examples?: sosekni-ops \w", done.stdout), done.stdout


def commands_listed(help_page: str) -> list[str]:
    """The command names in a help page's "Commands:" section, in order."""
    _, _, section = help_page.partition("\nCommands:\n")
    return re.findall(r"^  (\w+) ", section, flags=re.MULTILINE)


def test_help_of_a_group_lists_its_subcommands(
    outcomes: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    listed = {
        (): ["serve", "poll", "migrate", "admin", "requests"],
        ("migrate",): ["status"],
        ("admin",): ["add", "list", "deactivate"],
        ("requests",): ["list", "export"],
    }
    for group, commands in listed.items():
        stdout = outcomes[("help", *group)].stdout
        shown = commands_listed(stdout)
        assert [c for c in shown if c in commands] == commands, (group, stdout)


# ----------------------------------------------------------------------------- the real executable
# The tests above run the commands in-process; these prove the installed `sosekni-ops` script
# itself: it exists, runs, exits with the right code and colours its one error line.


def test_the_installed_script_prints_its_help() -> None:
    done = run_ops("--help", env=base_env("sqlite:///never-opened.db", API))

    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert "Usage: sosekni-ops" in done.stdout
    assert re.search(r"Examples?: sosekni-ops \w", done.stdout), done.stdout
    shown = commands_listed(done.stdout)
    assert [c for c in shown if c in ("serve", "admin", "requests")] == [
        "serve",
        "admin",
        "requests",
    ]


@pytest.mark.parametrize(
    ("url", "where"),
    [
        (UNREACHABLE, "127.0.0.1:1/x"),
        ("sqlite:////nonexistent-dir/bot.db", "sqlite:////nonexistent-dir/bot.db"),
    ],
    ids=["postgres", "sqlite"],
)
def test_the_installed_script_fails_on_an_unreachable_database_with_one_red_line(
    url: str, where: str
) -> None:
    done = run_ops("admin", "list", env=base_env(url, API, FORCE_COLOR="1"))

    assert (done.returncode, done.stdout) == (1, "")
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"{RED}error:{PLAIN} cannot reach the database at {where}: ")
