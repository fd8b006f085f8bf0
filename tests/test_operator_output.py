"""`sosekni-ops` output that clients cannot forge, exports that leak nothing, private files.

Client names and texts, administrator names and reasons are written by others. The commands
run in-process through Typer's CliRunner on a database of each engine migrated by the CLI;
"terminal" runs swap the shared consoles for one that believes it writes to a colour
terminal, which is where Rich would turn `[link=…]` into an OSC 8 hyperlink.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

import ops.admin
import ops.common
import ops.deploy
import ops.deploys.deployer
import ops.deploys.layout
import ops.health
import ops.requests
from ops.cli import app
from tests.harness import Db

OSC8 = "\x1b]8;"  # the start of a terminal hyperlink
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINK = "[link=https://evil.example/]Anna[/link]"
CLOSE = "[/bold]x"
RAW_LINK = "\x1b]8;;https://evil.example/\x1b\\Olga\x1b]8;;\x1b\\"  # the sequence itself
RAW_LINK_SHOWN = "\\x1b]8;;https://evil.example/\\x1b\\Olga\\x1b]8;;\\x1b\\"


@dataclass
class Site:
    url: str
    env: dict[str, str]
    db: Db
    tmp: Path

    def ops(self, *args: str, **env: str) -> Result:
        return CliRunner().invoke(app, list(args), env={**self.env, **env})

    def insert(self, query: str, *values: Any) -> None:
        asyncio.run(self.db.fetch(query, *values))


def env_for(url: str, tmp: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "ADMIN_TELEGRAM_ID": "1",
        "SOSEKNI_ENV_FILE": "/nonexistent/.env",
        "TELEGRAM_BOT_TOKEN": "123456:TEST-fake-token",
        "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9",  # nothing listens
        "DEPLOY_ROOT": str(tmp / "deploy"),
        "BACKUP_DIR": str(tmp / "backups"),
        "COLUMNS": "250",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Site:
    """A database migrated by `sosekni-ops migrate`, of each engine."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'bot.db'}"
    found = Site(url, env_for(url, tmp_path), Db(url), tmp_path)
    done = found.ops("migrate")
    assert done.exit_code == 0, done.output
    return found


@pytest.fixture(params=["plain", "terminal"])
def output(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Either the consoles as imported (not a terminal) or forced colour terminals."""
    if request.param == "terminal":
        out = Console(force_terminal=True, color_system="truecolor", width=250)
        err = Console(force_terminal=True, color_system="truecolor", stderr=True, soft_wrap=True)
        for module in (
            ops.common,
            ops.admin,
            ops.requests,
            ops.deploy,
            ops.deploys.deployer,
            ops.health,
        ):
            monkeypatch.setattr(module, "console", out)
        monkeypatch.setattr(ops.common, "error_console", err)
    return request.param


def shown(result: Result) -> str:
    """What a person reads: the output without colour codes."""
    return ANSI.sub("", result.output)


def table_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def clean(result: Result) -> None:
    """Finished by itself (no exception escaped) and printed no terminal hyperlink."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert OSC8 not in result.output


# ----------------------------------------------------------------------------- plain text


def test_requests_list_prints_client_data_literally(site: Site, output: str) -> None:
    site.insert(
        "INSERT INTO client_request (client_telegram_id, client_username, client_first_name, "
        "text, status, admin_name, reason) VALUES ({}, {}, {}, {}, {}, {}, {})",
        1001, "[red]anna", CLOSE, LINK, "rejected", "[bold]Ivan", "[/] no",
    )  # fmt: skip
    site.insert(
        "INSERT INTO client_request (client_telegram_id, client_first_name, text, status) "
        "VALUES ({}, {}, {}, {})",
        1002, RAW_LINK, "Plot 7", "pending",
    )  # fmt: skip

    done = site.ops("requests", "list")

    clean(done)
    assert done.exit_code == 0, done.output
    text = shown(done)
    for literal in (f"{CLOSE} (1001) @[red]anna", LINK, "[bold]Ivan", "[/] no", RAW_LINK_SHOWN):
        assert literal in text
    assert "2 request(s)" in text


def test_admin_list_shows_each_source_and_names_literally(site: Site, output: str) -> None:
    added = site.ops("admin", "add", "501", "--name", LINK)
    clean(added)
    assert shown(added) == f"administrator 501 {LINK!r} is active\n"
    site.insert(
        "INSERT INTO administrator (telegram_id, name, active, source) VALUES ({}, {}, {}, {})",
        502, CLOSE, True, "config",
    )  # fmt: skip

    done = site.ops("admin", "list")

    clean(done)
    assert done.exit_code == 0, done.output
    rows = [row[:4] for row in table_rows(shown(done))]
    assert rows == [["501", LINK, "yes", "cli"], ["502", CLOSE, "yes", "config"]]


def test_an_error_line_echoing_typed_input_is_one_plain_line(site: Site, output: str) -> None:
    done = site.ops("requests", "export", str(site.tmp / f"{CLOSE}.txt"))

    clean(done)
    assert done.exit_code == 1
    assert ANSI.sub("", done.stderr) == (
        f"error: {site.tmp / (CLOSE + '.txt')}: the export file must end in .csv\n"
    )


def test_releases_print_a_typed_ref_literally(tmp_path: Path, output: str) -> None:
    release = tmp_path / "deploy" / "releases" / "20261129T200000Z-abc"
    release.mkdir(parents=True)
    (release / ops.deploys.layout.METADATA).write_text(
        json.dumps({"name": release.name, "ref": LINK, "sha": "abc", "status": CLOSE})
    )
    env = env_for(f"sqlite:///{tmp_path / 'bot.db'}", tmp_path)

    done = CliRunner().invoke(app, ["releases"], env=env)

    clean(done)
    assert done.exit_code == 0, done.output
    (row,) = table_rows(shown(done))
    assert row[1:3] == [release.name, LINK]
    assert row[-1] == CLOSE


def test_health_details_print_a_typed_url_literally(site: Site, output: str) -> None:
    url = f"http://127.0.0.1:9/{CLOSE}"

    done = site.ops("health", "--url", url)

    clean(done)
    assert done.exit_code == 1  # nothing listens there, nor at the Bot API
    assert f"{url}/health: ConnectError" in shown(done)


# ----------------------------------------------------------------------------- export


def export_rows(site: Site, file: Path) -> list[dict[str, str]]:
    done = site.ops("requests", "export", str(file))
    assert done.exit_code == 0, done.output
    with file.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_export_neutralises_every_cell_a_spreadsheet_would_run(site: Site) -> None:
    hostile = {
        "client_first_name": '=HYPERLINK("https://evil.example/","Anna")',
        "client_username": "@SUM(1+1)",
        "text": "+1+cmd|' /C calc'!A0",
        "admin_name": "-2+3",
        "reason": "\t=1",
    }
    site.insert(
        "INSERT INTO client_request (client_telegram_id, client_username, client_first_name, "
        "text, status, admin_name, reason) VALUES ({}, {}, {}, {}, {}, {}, {})",
        1001, hostile["client_username"], hostile["client_first_name"], hostile["text"],
        "rejected", hostile["admin_name"], hostile["reason"],
    )  # fmt: skip
    site.insert(
        "INSERT INTO client_request (client_telegram_id, client_first_name, text, status) "
        "VALUES ({}, {}, {}, {})",
        1002, "Anna", "\r=2 plots, a=b", "pending",
    )  # fmt: skip

    first, second = export_rows(site, site.tmp / "out.csv")

    assert {name: first[name] for name in hostile} == {
        name: "'" + value for name, value in hostile.items()
    }
    assert (second["client_first_name"], second["text"]) == ("Anna", "'\r=2 plots, a=b")
    assert first["client_telegram_id"] == "1001"  # numbers and plain text stay as they are


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_export_is_written_0600_new_or_over_an_existing_file(site: Site) -> None:
    site.insert(
        "INSERT INTO client_request (client_telegram_id, client_first_name, text, status) "
        "VALUES ({}, {}, {}, {})",
        1001, "Anna", "Plot 42", "pending",
    )  # fmt: skip
    file = site.tmp / "out.csv"
    old_umask = os.umask(0o022)
    try:
        assert len(export_rows(site, file)) == 1
        assert mode(file) == 0o600

        file.write_text("old\n")
        file.chmod(0o644)
        leftover = file.with_name(file.name + ".partial")  # an interrupted export's
        leftover.write_text("half")
        leftover.chmod(0o644)
        assert len(export_rows(site, file)) == 1
    finally:
        os.umask(old_umask)

    assert mode(file) == 0o600
    assert not leftover.exists()
    assert sorted(p.name for p in site.tmp.iterdir() if p.name.startswith("out")) == ["out.csv"]


# ----------------------------------------------------------------------------- SQLite file


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_migrate_creates_a_new_sqlite_database_0600_with_its_wal_files(
    tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "bot.db"
    done = CliRunner().invoke(app, ["migrate"], env=env_for(f"sqlite:///{path}", tmp_path))
    assert done.exit_code == 0, done.output

    assert mode(path) == 0o600
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("INSERT INTO administrator (telegram_id, name, active) VALUES (7, '', 1)")
        conn.commit()
        assert {p.name: mode(p) for p in tmp_path.glob("bot.db*")} == {
            "bot.db": 0o600,
            "bot.db-wal": 0o600,
            "bot.db-shm": 0o600,
        }
    finally:
        conn.close()


def test_an_existing_sqlite_database_keeps_the_mode_the_operator_gave_it(
    tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "bot.db"
    sqlite3.connect(path).close()
    path.chmod(0o640)

    done = CliRunner().invoke(app, ["migrate"], env=env_for(f"sqlite:///{path}", tmp_path))

    assert done.exit_code == 0, done.output
    assert mode(path) == 0o640
