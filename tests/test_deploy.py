"""`sosekni-ops deploy / rollback / releases` for real: a git repository, uv, a live server.

The repository is made by the test from the project's own HEAD: v1 is HEAD, v2 adds a
migration, v3 adds a migration that fails, v4 adds a migration and never becomes healthy;
badlock (v1 with a broken uv.lock) fails fast at install, dotenv (v1) commits a `.env`.
RESTART_COMMAND is a script that stops the running server and starts `current`'s.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import pkgutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import sosekni.piccolo_migrations
from ops.common import health_url
from ops.deploys.deployer import Deployer
from ops.deploys.layout import KEEP_RELEASES, METADATA, ROLLING_BACK, Layout, Release
from sosekni.config import load_settings
from sosekni.standin import FakeTelegram
from tests.fakes.postgres import create_database, drop_database
from tests.harness import ROOT, Db, base_env, free_port, ops_command, run_ops

MIGRATION = """from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "{id}"
VERSION = "1.38.0"
DESCRIPTION = "{description}"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    async def up():
        await engine_finder().run_ddl("{up}")

    async def down():
        await engine_finder().run_ddl("{down}")

    manager.add_raw(up)
    manager.add_raw_backwards(down)
    return manager
"""

RESTART = """#!/bin/sh
# Stop the server this script started last, then start the current release's.
run="{run}"
if [ -f "$run/pid" ]; then
  old=$(cat "$run/pid")
  kill "$old" 2>/dev/null
  n=0
  while kill -0 "$old" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
fi
setsid .venv/bin/sosekni-ops serve --port {port} >> "$run/serve.log" 2>&1 < /dev/null &
echo $! > "$run/pid"
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def add_migration(tree: Path, stamp: str, description: str, up: str, down: str) -> None:
    name = f"sosekni_{stamp.replace('-', '_').replace(':', '_').lower()}.py"
    path = tree / "sosekni" / "piccolo_migrations" / name
    path.write_text(MIGRATION.format(id=stamp, description=description, up=up, down=down))


def commit_tag(tree: Path, tag: str) -> None:
    git(tree, "add", "-A")
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", tag)
    git(tree, "tag", tag)


V2 = "2099-01-02T00:00:00:000000"
V3A, V3B = "2099-01-03T00:00:00:000000", "2099-01-03T00:00:01:000000"
V4 = "2099-01-04T00:00:00:000000"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository holding v1 (HEAD) … v4."""
    base = tmp_path_factory.mktemp("repo")
    bare = base / "sosekni.git"
    work = base / "work"
    git(base, "clone", "-q", str(ROOT), str(work))
    git(work, "tag", "v1")
    add_migration(
        work, V2, "v2 probe", "CREATE TABLE deploy_probe (id integer)", "DROP TABLE deploy_probe"
    )
    commit_tag(work, "v2")
    add_migration(work, V3A, "v3 ok", "CREATE TABLE probe3 (id integer)", "DROP TABLE probe3")
    add_migration(work, V3B, "v3 broken", "SELECT * FROM no_such_table", "SELECT 1")
    commit_tag(work, "v3")
    git(work, "checkout", "-q", "v2")
    add_migration(work, V4, "v4 probe", "CREATE TABLE probe4 (id integer)", "DROP TABLE probe4")
    with (work / "sosekni" / "app.py").open("a") as app:
        app.write(
            "\n\nasync def health(request: Request) -> HTTPResponse:  # v4 never gets healthy\n"
            '    return json_response({"status": "fail"}, status=503)\n'
        )
    commit_tag(work, "v4")
    git(work, "checkout", "-q", "v1")
    (work / "uv.lock").write_text("this is not a lock file\n")
    commit_tag(work, "badlock")
    git(work, "checkout", "-q", "v1")
    (work / ".env").write_text("DATABASE_URL=sqlite:///committed-by-mistake.db\n")
    git(work, "add", "-f", ".env")
    commit_tag(work, "dotenv")
    git(base, "clone", "-q", "--bare", str(work), str(bare))
    return bare


@dataclass
class Site:
    root: Path
    run: Path
    env: dict[str, str]
    port: int
    db: Db

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def deploy(self, *args: str, timeout: str = "60"):
        return run_ops(
            *args, "--health-url", self.health, "--health-timeout", timeout,
            env=self.env, timeout=600,
        )  # fmt: skip

    def current(self) -> str:
        return Path(os.readlink(self.root / "current")).name

    def release(self, name: str) -> dict:
        return json.loads((self.root / "releases" / name / METADATA).read_text())

    def server_pid(self) -> int:
        return int((self.run / "pid").read_text())

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    async def migrations(self) -> list[str]:
        rows = await self.db.fetch("SELECT name FROM migration ORDER BY name")
        return [r["name"] for r in rows]

    async def tables(self) -> set[str]:
        rows = await self.db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}


@pytest.fixture(scope="module")
def site(
    repository: Path,
    postgres_admin_dsn: str,
    fake_telegram: FakeTelegram,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("site")
    root, run = base / "opt-sosekni", base / "run"
    run.mkdir()
    port = free_port()
    url = create_database(postgres_admin_dsn)
    (run / "restart.sh").write_text(RESTART.format(run=run, port=port))
    env = base_env(
        url,
        fake_telegram.base_url,
        DEPLOY_ROOT=str(root),
        REPO_URL=str(repository),
        RESTART_COMMAND=f"sh {run / 'restart.sh'}",
        BACKUP_DIR=str(base / "backups"),
    )
    (root / "shared").mkdir(parents=True)
    (root / "shared" / ".env").write_text(f"DATABASE_URL={url}\n")
    (root / "shared" / ".env").chmod(0o600)
    yield Site(root, run, env, port, Db(url))
    if (run / "pid").exists():
        try:
            os.kill(int((run / "pid").read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
    drop_database(postgres_admin_dsn, url)


V1_HEAD = max(  # the newest migration of the project itself
    importlib.import_module(f"sosekni.piccolo_migrations.{info.name}").ID
    for info in pkgutil.iter_modules(sosekni.piccolo_migrations.__path__)
)


async def test_a_day_of_deploys_failures_and_a_rollback(site: Site) -> None:
    # first deploy: v1
    done = site.deploy("deploy", "v1")
    assert done.returncode == 0, done.stdout + done.stderr
    v1 = site.current()
    assert site.release(v1)["status"] == "deployed"
    assert site.healthy()
    assert (site.root / "releases" / v1 / ".env").resolve() == (site.root / "shared" / ".env")
    assert (site.root / "releases" / v1 / ".venv" / "bin" / "sosekni-ops").exists()
    assert Path(site.release(v1)["backup"]).exists()
    v1_migrations = await site.migrations()
    assert v1_migrations[-1] == V1_HEAD

    # routine deploy: v2 adds a migration
    done = site.deploy("deploy", "v2")
    assert done.returncode == 0, done.stdout + done.stderr
    v2 = site.current()
    assert v2 != v1 and site.healthy()
    assert await site.migrations() == [*v1_migrations, V2]
    assert "deploy_probe" in await site.tables()
    serving = site.server_pid()

    # v3's migration fails: nothing switched, the database back at v2, v2 untouched
    done = site.deploy("deploy", "v3")
    assert done.returncode == 1
    assert "migrate failed" in done.stderr and "nothing was switched" in done.stderr
    assert site.current() == v2 and site.server_pid() == serving and site.healthy()
    assert await site.migrations() == [*v1_migrations, V2]
    assert "probe3" not in await site.tables()

    # v4 never becomes healthy: rolled back by itself to v2, its migration undone
    done = site.deploy("deploy", "v4", timeout="10")
    assert done.returncode == 1
    assert "not healthy" in done.stderr and f"rolled back to {v2}" in done.stderr
    assert site.current() == v2 and site.healthy()
    assert await site.migrations() == [*v1_migrations, V2]
    assert "probe4" not in await site.tables()
    v4 = max(n for n in os.listdir(site.root / "releases"))
    assert site.release(v4)["status"] == "rolled back"

    # the operator rolls back to v1: migrations down to v1's head
    done = site.deploy("rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.current() == v1 and site.healthy()
    assert await site.migrations() == v1_migrations
    assert "deploy_probe" not in await site.tables()

    listing = run_ops("releases", env=site.env)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    (marked,) = [line for line in lines if "current" in line and v1[:10] in line]
    assert "deployed" in marked or "serving again" in marked


def test_two_deploys_at_once_are_refused(site: Site) -> None:
    site.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(site.root / ".deploy.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = site.deploy("deploy", "v2")
    finally:
        os.close(fd)
    assert done.returncode == 1
    assert "another deploy or rollback is running" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_rollback_with_nothing_to_return_to_is_refused(tmp_path: Path) -> None:
    env = base_env("sqlite:///x.db", "http://127.0.0.1:9", DEPLOY_ROOT=str(tmp_path / "empty"))
    done = run_ops("rollback", env=env)
    assert done.returncode == 1
    assert "nothing is deployed" in done.stderr


def test_deploy_without_repo_url_or_shared_env_says_what_is_missing(tmp_path: Path) -> None:
    env = base_env("sqlite:///x.db", "http://127.0.0.1:9", DEPLOY_ROOT=str(tmp_path / "r"))
    done = run_ops("deploy", env=env)
    assert done.returncode == 1 and "shared/.env is missing" in done.stderr
    (tmp_path / "r" / "shared").mkdir(parents=True)
    (tmp_path / "r" / "shared" / ".env").write_text("")
    done = run_ops("deploy", env=env)
    assert done.returncode == 1 and "REPO_URL is not set" in done.stderr


def test_deploy_of_an_unknown_ref_fails_cleanly(site: Site) -> None:
    before = sorted(os.listdir(site.root / "releases")) if (site.root / "releases").exists() else []
    done = site.deploy("deploy", "no-such-branch")
    assert done.returncode == 1
    assert "resolving 'no-such-branch' failed" in done.stderr
    after = sorted(os.listdir(site.root / "releases")) if (site.root / "releases").exists() else []
    assert after == before


def test_only_the_last_releases_are_kept_and_never_the_current_one(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    names = [f"2026010{n}T000000Z-abcdef{n}" for n in range(1, 9)]
    for name in names:
        (layout.releases / name).mkdir(parents=True)
        layout.save(Release(name=name, status="deployed"))
    layout.switch(names[0])  # after a rollback the current one can be the oldest
    settings = load_settings(
        {"DEPLOY_ROOT": str(tmp_path), "DATABASE_URL": "sqlite:///x.db"}, need_admins=False
    )
    Deployer(settings, "http://127.0.0.1:9/health", 1).prune()
    assert layout.names() == [names[0], *names[-KEEP_RELEASES:]]


def test_failed_and_interrupted_releases_are_pruned_before_good_ones(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    good = ["20260101T000000Z-aaaaaa1", "20260102T000000Z-aaaaaa2"]
    failed = [f"2026010{n}T000000Z-bbbbbb{n}" for n in range(3, 10)]
    for name in good:
        (layout.releases / name).mkdir(parents=True)
        release = Release(name=name)
        release.note("deployed")
        layout.save(release)
    for name in failed:
        (layout.releases / name).mkdir(parents=True)
        release = Release(name=name)
        release.note("failed before the switch: uv sync --frozen --no-dev failed: no")
        layout.save(release)
    (layout.releases / "20260110T000000Z-cccccc1").mkdir()  # an orphan: no metadata at all
    layout.switch(good[1])
    settings = load_settings(
        {"DEPLOY_ROOT": str(tmp_path), "DATABASE_URL": "sqlite:///x.db"}, need_admins=False
    )
    Deployer(settings, "http://127.0.0.1:9/health", 1).prune()
    assert layout.names() == [*good, *failed[-(KEEP_RELEASES - 2) :]]
    assert sorted(os.listdir(layout.releases)) == layout.names()


def test_failed_deploys_never_push_the_rollback_target_out(site: Site) -> None:
    done = site.deploy("deploy", "v1")
    assert done.returncode == 0, done.stdout + done.stderr
    good = site.current()
    for _ in range(KEEP_RELEASES + 1):
        done = site.deploy("deploy", "badlock")
        assert done.returncode == 1 and "uv sync --frozen --no-dev failed" in done.stderr
        assert site.current() == good
    done = site.deploy("deploy", "v2")
    assert done.returncode == 0, done.stdout + done.stderr
    newer = site.current()
    assert good in os.listdir(site.root / "releases")
    assert len(os.listdir(site.root / "releases")) <= KEEP_RELEASES

    listing = run_ops("releases", env=site.env)
    assert listing.returncode == 0 and good in listing.stdout
    done = site.deploy("rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.current() == good and site.healthy()
    assert newer in os.listdir(site.root / "releases")


def test_a_ref_that_commits_env_fails_in_one_line_and_leaves_no_release(site: Site) -> None:
    releases = site.root / "releases"
    before = sorted(os.listdir(releases)) if releases.exists() else []
    done = site.deploy("deploy", "dotenv")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert ".env" in done.stderr and "shared/.env" in done.stderr
    after = sorted(os.listdir(releases)) if releases.exists() else []
    assert after == before


def test_a_deploy_killed_mid_install_is_cleaned_up_by_the_next(site: Site, tmp_path: Path) -> None:
    releases = site.root / "releases"
    before = sorted(os.listdir(releases)) if releases.exists() else []
    bin_dir, started = tmp_path / "bin", tmp_path / "uv-started"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 600\n")
    (bin_dir / "uv").chmod(0o755)
    env = {**site.env, "PATH": f"{bin_dir}:{site.env['PATH']}", "COLUMNS": "200"}
    command = [*ops_command(), "deploy", "v1", "--health-url", site.health]
    killed = subprocess.Popen(
        command, env=env, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert killed.poll() is None and time.monotonic() < deadline, "uv never started"
            time.sleep(0.05)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    (leftover,) = sorted(set(os.listdir(releases)) - set(before))
    assert site.release(leftover)["status"] == "unpacked"

    done = site.deploy("deploy", "no-such-branch")
    assert done.returncode == 1
    assert f"removed {leftover}, left by an interrupted deploy" in done.stdout
    assert sorted(os.listdir(releases)) == before


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        (None, None, "http://127.0.0.1:8080/health"),
        ("0.0.0.0", "9000", "http://127.0.0.1:9000/health"),
        ("::", "9001", "http://[::1]:9001/health"),
        ("[::]", "9002", "http://[::1]:9002/health"),
        ("::1", "9003", "http://[::1]:9003/health"),
        ("fe80::1%eth0", "9004", "http://[fe80::1%25eth0]:9004/health"),
        ("10.1.2.3", "9005", "http://10.1.2.3:9005/health"),
        ("localhost", "9006", "http://localhost:9006/health"),
    ],
)
def test_the_health_url_is_built_from_serve_host_and_serve_port(
    host: str | None, port: str | None, url: str
) -> None:
    env = {"DATABASE_URL": "sqlite:///x.db"}
    env.update({k: v for k, v in (("SERVE_HOST", host), ("SERVE_PORT", port)) if v is not None})
    assert health_url(load_settings(env, need_admins=False)) == url


def test_release_metadata_of_a_newer_version_loads_and_a_rollback_marker_parses(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    name = "20260101T000000Z-aaaaaa1"
    (layout.releases / name).mkdir(parents=True)
    data = {"name": name, "status": "deployed", "history": [], "from_the_future": {"x": 1}}
    (layout.releases / name / METADATA).write_text(json.dumps(data))
    release = layout.load(name)
    assert (release.name, release.status, release.rolling_back_to) == (name, "deployed", None)
    release.note(f"{ROLLING_BACK}20251231T000000Z-bbbbbb2")
    assert release.rolling_back_to == "20251231T000000Z-bbbbbb2"
    release.note(f"{ROLLING_BACK}20251231T000000Z-bbbbbb2 failed: it broke;\nsecond line")
    assert release.rolling_back_to == "20251231T000000Z-bbbbbb2"
    release.note("rolled back to 20251231T000000Z-bbbbbb2")
    assert release.rolling_back_to is None


async def test_deploy_and_rollback_find_the_url_in_shared_env_and_a_failed_rollback_is_retried(
    site: Site,
) -> None:
    env_file = site.root / "shared" / ".env"
    settings = env_file.read_text()
    own = f"http://127.0.0.1:{site.port}/health"

    def ops(*args: str):
        return run_ops(*args, env=site.env, timeout=600)

    dead = free_port()
    try:
        # a given --health-url wins over the settings
        env_file.write_text(f"{settings}SERVE_PORT={dead}\n")
        done = site.deploy("deploy", "v1")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"→ waiting for {site.health}" in done.stdout
        v1_migrations = await site.migrations()

        # without it: the service's SERVE_PORT (shared/.env), not the shell's settings
        env_file.write_text(f"{settings}SERVE_PORT={site.port}\n")
        done = ops("deploy", "v2")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"→ waiting for {own}" in done.stdout
        older, newer = sorted(os.listdir(site.root / "releases"))[-2:]
        assert site.current() == newer and site.healthy()

        # the service's port answers nothing: the rollback switches, restarts, then fails
        env_file.write_text(f"{settings}SERVE_PORT={dead}\n")
        done = ops("rollback", "--health-timeout", "2")
        assert done.returncode == 1
        assert f"http://127.0.0.1:{dead}/health not healthy after 2s" in done.stderr
        assert "run `sosekni-ops rollback` again" in done.stderr, done.stderr
        assert site.current() == older
        status = site.release(newer)["status"]
        assert status.startswith(f"{ROLLING_BACK}{older} failed: http://127.0.0.1:{dead}/")
        listing = ops("releases")
        assert f"{ROLLING_BACK}{older} failed" in listing.stdout

        # settings fixed, the same command finishes the same rollback
        env_file.write_text(f"{settings}SERVE_PORT={site.port}\n")
        done = ops("rollback")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"the rollback from {newer} to {older} did not finish" in done.stdout
        assert f"→ waiting for {own}" in done.stdout
        assert f"rolled back to {older}" in done.stdout
        assert site.current() == older and site.healthy()
        assert site.release(newer)["status"] == f"rolled back to {older}"
        assert site.release(older)["status"] == "serving again (rollback)"
        assert await site.migrations() == v1_migrations
        assert "deploy_probe" not in await site.tables()

        # a deploy whose automatic rollback failed is finished by `rollback` in the same way
        env_file.write_text(f"{settings}SERVE_PORT={dead}\n")
        done = ops("deploy", "v2", "--health-timeout", "2")
        assert done.returncode == 1
        assert f"and the rollback to {older} failed too" in done.stderr, done.stderr
        assert "run `sosekni-ops rollback` to finish it" in done.stderr
        failed = max(os.listdir(site.root / "releases"))
        assert site.current() == older
        assert site.release(failed)["status"].startswith(f"{ROLLING_BACK}{older} failed: ")
        env_file.write_text(f"{settings}SERVE_PORT={site.port}\n")
        done = ops("rollback")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"the rollback from {failed} to {older} did not finish" in done.stdout
        assert site.current() == older and site.healthy()
        assert site.release(failed)["status"] == f"rolled back to {older}"
        assert await site.migrations() == v1_migrations
    finally:
        env_file.write_text(settings)
