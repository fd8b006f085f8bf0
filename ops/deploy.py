"""`deploy [REF]`, `rollback [--to RELEASE] [--restore-db]`, `releases`.

Layout under DEPLOY_ROOT:

    repo.git/                         a bare mirror of REPO_URL
    releases/<UTC time>-<short sha>/  one tree per release, with its own .venv
    current -> releases/…             switched atomically (rename of a new symlink)
    shared/.env                       the service's settings, linked into every release

Each release records what happened to it in `.sosekni-release.json`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ops import backup as backups
from ops.common import console, fail, plain, settings_or_fail
from sosekni.config import ConfigError, Settings, environment, load_settings

KEEP_RELEASES = 5
METADATA = ".sosekni-release.json"
STAMP = "%Y%m%dT%H%M%SZ"
_MIGRATION_ID = re.compile(r'^ID\s*=\s*"([^"]+)"', re.MULTILINE)


class DeployError(Exception):
    """A deploy or rollback step failed; the message says which and why."""


@dataclass
class Release:
    name: str
    ref: str = ""
    sha: str = ""
    created_at: str = ""
    status: str = "new"
    backup: str | None = None
    migration_head: str | None = None
    history: list[str] = field(default_factory=list)

    def note(self, status: str) -> None:
        self.status = status
        self.history.append(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC {status}")

    @property
    def good(self) -> bool:
        """It once served after a health check: a release worth returning to."""
        return any(h.endswith(" deployed") for h in self.history)


class Layout:
    """Paths of the release layout and the operations on them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "releases"
        self.current = root / "current"
        self.shared = root / "shared"
        self.env_file = self.shared / ".env"
        self.mirror = root / "repo.git"

    def release_dir(self, name: str) -> Path:
        return self.releases / name

    def names(self) -> list[str]:
        """Release names, oldest first (names start with their UTC time)."""
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir() if (p / METADATA).exists())

    def current_name(self) -> str | None:
        if not self.current.is_symlink():
            return None
        return Path(os.readlink(self.current)).name

    def load(self, name: str) -> Release:
        data = json.loads((self.release_dir(name) / METADATA).read_text())
        return Release(**data)

    def save(self, release: Release) -> None:
        path = self.release_dir(release.name) / METADATA
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(release), indent=2) + "\n")
        os.replace(tmp, path)

    def switch(self, name: str) -> None:
        """Point `current` at a release in one rename: never a moment without `current`."""
        tmp = self.root / f".current-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("releases") / name)
        os.replace(tmp, self.current)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One deploy or rollback at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".deploy.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = path.read_text().strip() or "another process"
                raise DeployError(f"another deploy or rollback is running ({holder})") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}".encode())
            yield
        finally:
            os.close(fd)


def _run(command: list[str], *, cwd: Path | None = None, what: str, timeout: float = 900) -> str:
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise DeployError(f"{what}: {command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"{what}: timed out after {timeout:.0f}s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {done.returncode}"
        raise DeployError(f"{what} failed: {reason}")
    return done.stdout


def migration_head(tree: Path) -> str | None:
    """The newest migration id a release's code knows (None if it has none)."""
    ids = []
    for path in (tree / "sosekni" / "piccolo_migrations").glob("*.py"):
        found = _MIGRATION_ID.search(path.read_text(encoding="utf-8"))
        if found:
            ids.append(found.group(1))
    return max(ids) if ids else None


class Deployer:
    def __init__(self, settings: Settings, health_url: str, health_timeout: float) -> None:
        self.settings = settings
        self.layout = Layout(settings.deploy_root)
        self.health_url = health_url
        self.health_timeout = health_timeout

    # -- steps -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        console.print(Text.assemble(("→", "bold"), " ", plain(message)))

    def fetch(self, ref: str) -> str:
        """Update the bare mirror and resolve `ref` to a commit."""
        repo = self.settings.repo_url
        if not repo:
            raise DeployError("REPO_URL is not set: the git repository to deploy from")
        git = shutil.which("git")
        if git is None:
            raise DeployError("git is not installed")
        mirror = self.layout.mirror
        if not mirror.exists():
            _run([git, "clone", "--mirror", "--quiet", repo, str(mirror)], what="git clone")
        else:
            _run([git, "remote", "set-url", "origin", repo], cwd=mirror, what="git remote")
            _run([git, "fetch", "--prune", "--quiet", "origin"], cwd=mirror, what="git fetch")
        out = _run(
            [git, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            cwd=mirror,
            what=f"resolving {ref!r}",
        )
        return out.strip()

    def unpack(self, ref: str, sha: str) -> Release:
        """Extract `sha` into a new release directory; on any failure no directory is left."""
        stamp = datetime.now(UTC).strftime(STAMP)
        name = f"{stamp}-{sha[:7]}"
        while self.layout.release_dir(name).exists():
            time.sleep(1)
            name = f"{datetime.now(UTC).strftime(STAMP)}-{sha[:7]}"
        target = self.layout.release_dir(name)
        target.mkdir(parents=True)
        try:
            self._extract(sha, target)
            if (target / ".env").exists() or (target / ".env").is_symlink():
                raise DeployError(
                    f"{ref} commits a .env file: settings belong in "
                    f"{self.layout.env_file} only, remove .env from the repository"
                )
            (target / ".env").symlink_to(os.path.relpath(self.layout.env_file, target))
            release = Release(
                name=name,
                ref=ref,
                sha=sha,
                created_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
                migration_head=migration_head(target),
            )
            release.note("unpacked")
            self.layout.save(release)
        except (DeployError, OSError, ValueError, tarfile.TarError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(exc, DeployError):
                raise
            raise DeployError(f"unpacking {sha[:7]} failed: {exc}") from None
        return release

    def _extract(self, sha: str, target: Path) -> None:
        archive = subprocess.Popen(
            ["git", "archive", "--format=tar", sha],
            cwd=self.layout.mirror,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert archive.stdout is not None
        try:
            with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                # Python before 3.11.4 (Debian 12 has 3.11.2) has no extraction filters.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(target, **safe)
        except BaseException:
            archive.kill()
            raise
        finally:
            archive.stdout.close()
            code = archive.wait()
        if code != 0:
            raise DeployError(f"git archive {sha[:7]} failed")

    def install(self, release: Release) -> None:
        uv = shutil.which("uv")
        if uv is None:
            raise DeployError("uv is not installed (pip install uv)")
        _run(
            [uv, "sync", "--frozen", "--no-dev", "--quiet"],
            cwd=self.layout.release_dir(release.name),
            what="uv sync --frozen --no-dev",
        )

    def ops(self, release: str, *args: str, what: str) -> str:
        """Run a release's own `sosekni-ops` in its directory (it reads shared/.env)."""
        tree = self.layout.release_dir(release)
        return _run([str(tree / ".venv" / "bin" / "sosekni-ops"), *args], cwd=tree, what=what)

    def migrate_to(self, code_release: str, head: str | None) -> None:
        """Bring the database back to `head`, using the code that knows the newer migrations."""
        self.ops(code_release, "migrate", "--to", head or "none", what="migrating back")

    def restart(self) -> None:
        command = self.settings.restart_command
        done = subprocess.run(
            command, shell=True, cwd=self.layout.current, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
            reason = lines[-1] if lines else f"exit code {done.returncode}"
            raise DeployError(f"restart ({command}) failed: {reason}")

    def wait_healthy(self) -> None:
        import httpx  # here, not at the top: `releases` and the help pages need no HTTP client

        deadline = time.monotonic() + self.health_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(self.health_url, timeout=5)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            time.sleep(0.5)
        raise DeployError(
            f"{self.health_url} not healthy after {self.health_timeout:.0f}s (last: {last})"
        )

    def prune(self) -> None:
        """Keep KEEP_RELEASES, good ones first; never `current` nor the good one before it.

        Failed releases go before good ones, so a run of failed deploys cannot push out the
        release `rollback` returns to; the newest release stays too, so the one that just
        failed can still be looked at. Directories without metadata (an unpack that never
        finished) go: nothing can deploy or roll back to them.
        """
        names = self.layout.names()
        current = self.layout.current_name()
        good = [n for n in names if self._is_good(n)]
        ranked = [*reversed(good), *(n for n in reversed(names) if n not in good)]
        keep = set(ranked[:KEEP_RELEASES]) | set(names[-1:])  # and the one just tried
        if current is not None:
            keep.add(current)
            keep.update([n for n in good if n < current][-1:])
        for path in self.layout.releases.iterdir() if self.layout.releases.is_dir() else ():
            if path.name not in keep and path.name != current and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def _is_good(self, name: str) -> bool:
        try:
            return self.layout.load(name).good
        except (OSError, ValueError, TypeError):  # unreadable metadata: not worth keeping
            return False

    def clean_interrupted(self) -> None:
        """Remove what a deploy killed before its migration left behind (we hold the lock).

        A release still `unpacked` never touched the database (its backup, if any, stays in
        BACKUP_DIR); a directory without metadata never finished unpacking. A release
        interrupted later is marked failed, and prune removes it in its turn.
        """
        if not self.layout.releases.is_dir():
            return
        current = self.layout.current_name()
        named = set(self.layout.names())
        for path in sorted(self.layout.releases.iterdir()):
            if path.name == current or not path.is_dir():
                continue
            if path.name not in named:
                shutil.rmtree(path, ignore_errors=True)
                self.say(f"removed {path.name}, left by an interrupted deploy")
                continue
            release = self.layout.load(path.name)
            if release.status == "unpacked":
                shutil.rmtree(path, ignore_errors=True)
                self.say(f"removed {path.name}, left by an interrupted deploy")
            elif release.status == "migrating":
                release.note("failed: the deploy was interrupted while migrating")
                self.layout.save(release)
                self.say(f"{path.name} was interrupted while migrating: marked failed")

    # -- the whole flows --------------------------------------------------------------------

    def deploy(self, ref: str) -> Release:
        """The whole deploy; whatever its outcome, old releases are pruned afterwards."""
        try:
            return self._deploy(ref)
        finally:
            self.prune()

    def _deploy(self, ref: str) -> Release:
        if not self.layout.env_file.exists():
            raise DeployError(
                f"{self.layout.env_file} is missing: write the service's settings there (0600)"
            )
        previous = self.layout.current_name()
        self.clean_interrupted()
        self.say(f"fetching {ref} from the repository")
        sha = self.fetch(ref)
        try:
            release = self.unpack(ref, sha)
        except DeployError as exc:
            still = previous or "nothing"
            raise DeployError(f"{exc}; nothing was switched, {still} still serves") from None
        self.say(f"release {release.name}: installing with uv sync --frozen --no-dev")
        applied: list[str] | None = None
        try:
            self.install(release)
            self.say("backing up the database")
            release.backup = str(backups.create_backup(self.service_settings()).path)
            self.layout.save(release)
            states = json.loads(
                self.ops(release.name, "migrate", "status", "--json", what="migrate status")
            )
            applied = [s["migration_id"] for s in states if s["applied"]]
            self.say("migrating")
            release.note("migrating")
            self.layout.save(release)
            self.ops(release.name, "migrate", what="migrate")
        except (DeployError, backups.BackupError, OSError, ValueError) as exc:
            if applied is not None:
                self._undo_migrations(release, applied[-1] if applied else None)
            release.note(f"failed before the switch: {exc}")
            self.layout.save(release)
            still = previous or "nothing"
            raise DeployError(f"{exc}; nothing was switched, {still} still serves") from None
        self.say(f"switching current to {release.name} and restarting")
        release.note("switched")
        self.layout.save(release)
        self.layout.switch(release.name)
        try:
            self.restart()
            self.wait_healthy()
        except DeployError as exc:
            release.note(f"failed after the switch: {exc}")
            self.layout.save(release)
            if previous is None:
                raise DeployError(f"{exc}; no previous release to roll back to") from None
            self.say(f"[red]{exc}[/]; rolling back to {previous}")
            try:
                self.return_to(previous, code_release=release.name)
            except DeployError as again:
                raise DeployError(f"{exc}; and the rollback failed too: {again}") from None
            release.note("rolled back")
            self.layout.save(release)
            raise DeployError(f"{exc}; rolled back to {previous}, which is serving") from None
        release.note("deployed")
        self.layout.save(release)
        return release

    def _undo_migrations(self, release: Release, target: str | None) -> None:
        """After a failed migrate, take the database back to where it was before it."""
        venv = self.layout.release_dir(release.name) / ".venv" / "bin" / "sosekni-ops"
        if venv.exists():
            with contextlib.suppress(DeployError):
                self.migrate_to(release.name, target)

    def return_to(self, name: str, code_release: str, restore_db: str | None = None) -> None:
        """Migrations back to `name`'s head, switch, restart, health check."""
        target = self.layout.load(name)
        if restore_db:
            self.say(f"restoring the database from {Path(restore_db).name}")
            backups.restore_backup(self.service_settings(), Path(restore_db))
        else:
            self.say(f"migrating back to {target.migration_head or 'no migrations'}")
            self.migrate_to(code_release, target.migration_head)
        self.say(f"switching current to {name} and restarting")
        self.layout.switch(name)
        self.restart()
        self.wait_healthy()
        target.note("serving again (rollback)")
        self.layout.save(target)

    def rollback(self, to: str | None, restore_db: bool) -> str:
        current = self.layout.current_name()
        names = self.layout.names()
        if current is None:
            raise DeployError("nothing is deployed: there is no release to roll back from")
        if to is not None:
            if to not in names:
                raise DeployError(f"no release named {to} (see `sosekni-ops releases`)")
            if to == current:
                raise DeployError(f"{to} is already the current release")
            target = to
        else:
            older = [n for n in names if n < current and self.layout.load(n).good]
            if not older:
                raise DeployError(f"there is no release before {current} to roll back to")
            target = older[-1]
        leaving = self.layout.load(current)
        restore = None
        if restore_db:
            restore = leaving.backup
            if not restore or not Path(restore).exists():
                raise DeployError(f"{current} recorded no pre-deploy backup to restore")
        self.return_to(target, code_release=current, restore_db=restore)
        leaving.note(f"rolled back to {target}")
        self.layout.save(leaving)
        return target

    def service_settings(self) -> Settings:
        """The service's own settings: shared/.env under the process environment.

        A malformed shared/.env is a failed step like any other (one line, and before the
        switch nothing switched), not a traceback.
        """
        try:
            return load_settings(environment(self.layout.env_file), need_admins=False)
        except ConfigError as exc:
            raise DeployError(f"{self.layout.env_file}: {exc}") from None


# ----------------------------------------------------------------------------- commands

HealthUrl = Annotated[str, typer.Option(help="The app's health URL, polled after the restart.")]
HealthTimeout = Annotated[
    float, typer.Option(help="Seconds to wait for the app to become healthy.", min=1)
]


def _deployer(health_url: str, health_timeout: float) -> Deployer:
    return Deployer(settings_or_fail(need_admins=False), health_url, health_timeout)


def deploy(
    ref: Annotated[str, typer.Argument(help="Branch, tag or commit to deploy.")] = "main",
    health_url: HealthUrl = "http://127.0.0.1:8080/health",
    health_timeout: HealthTimeout = 60,
) -> None:
    """Deploy REF: fetch, uv sync, backup, migrate, switch, restart, health check.

    Any failure after the switch rolls back to the previous release by itself.

    Examples: sosekni-ops deploy · sosekni-ops deploy v1.4.0
    """
    deployer = _deployer(health_url, health_timeout)
    try:
        with deployer.layout.lock():
            release = deployer.deploy(ref)
    except (DeployError, backups.BackupError) as exc:
        fail(f"deploy of {ref} failed: {exc}", deployer.settings)
    console.print(
        Text.assemble(
            ("deployed", "green"), " ", plain(f"{release.name} ({ref} at {release.sha[:12]})")
        )
    )


def rollback(
    to: Annotated[str | None, typer.Option("--to", help="The release to return to.")] = None,
    restore_db: Annotated[
        bool,
        typer.Option(
            "--restore-db",
            help="Restore the backup taken before the current release was deployed, "
            "instead of migrating back.",
        ),
    ] = False,
    health_url: HealthUrl = "http://127.0.0.1:8080/health",
    health_timeout: HealthTimeout = 60,
) -> None:
    """Return to the previous (or a named) release: migrate back, switch, restart, check.

    Examples: sosekni-ops rollback · sosekni-ops rollback --to 20261125T101500Z-1a2b3c4
    """
    deployer = _deployer(health_url, health_timeout)
    try:
        with deployer.layout.lock():
            target = deployer.rollback(to, restore_db)
    except (DeployError, backups.BackupError) as exc:
        fail(f"rollback failed: {exc}", deployer.settings)
    console.print(Text.assemble(("rolled back", "green"), " to ", plain(target)))


def releases() -> None:
    """List releases, oldest first, marking the current one.

    Example: sosekni-ops releases
    """
    settings = settings_or_fail(need_admins=False)
    layout = Layout(settings.deploy_root)
    current = layout.current_name()
    table = Table("", "release", "ref", "commit", "migrations", "status", title=str(layout.root))
    rows: list[Any] = []
    for name in layout.names():
        r = layout.load(name)
        rows.append(r)
        table.add_row(
            "[green]→ current[/]" if name == current else "", plain(name), plain(r.ref),
            plain(r.sha[:12]), plain(r.migration_head or "—"), plain(r.status),
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print(plain(f"no releases under {layout.releases}"))
