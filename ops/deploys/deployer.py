"""Deploy and rollback, step by step: fetch, install, back up, migrate, switch, restart,
check, and undo what a failure left."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.text import Text

from ops import backups
from ops.common import console, health_url, plain
from ops.deploys.layout import KEEP_RELEASES, ROLLING_BACK, STAMP, DeployError, Layout, Release
from ops.deploys.steps import migration_head, run_step
from sosekni.config import ConfigError, Settings, environment, load_settings


class Deployer:
    def __init__(self, settings: Settings, health_url: str | None, health_timeout: float) -> None:
        """`health_url` None: the service's own, from its settings (`service_settings`)."""
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
            run_step([git, "clone", "--mirror", "--quiet", repo, str(mirror)], what="git clone")
        else:
            run_step([git, "remote", "set-url", "origin", repo], cwd=mirror, what="git remote")
            run_step([git, "fetch", "--prune", "--quiet", "origin"], cwd=mirror, what="git fetch")
        out = run_step(
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
            # tarfile stops at the end-of-archive marker; git may still be writing the
            # record's padding after it, and closing the pipe on it would fail the deploy.
            while archive.stdout.read(65536):
                pass
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
        run_step(
            [uv, "sync", "--frozen", "--no-dev", "--quiet"],
            cwd=self.layout.release_dir(release.name),
            what="uv sync --frozen --no-dev",
        )

    def ops(self, release: str, *args: str, what: str) -> str:
        """Run a release's own `sosekni-ops` in its directory (it reads shared/.env)."""
        tree = self.layout.release_dir(release)
        return run_step([str(tree / ".venv" / "bin" / "sosekni-ops"), *args], cwd=tree, what=what)

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

        url = self.health_url or health_url(self.service_settings())
        self.say(f"waiting for {url}")
        deadline = time.monotonic() + self.health_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(url, timeout=5)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            time.sleep(0.5)
        raise DeployError(f"{url} not healthy after {self.health_timeout:.0f}s (last: {last})")

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
            # the release an unfinished rollback to `current` left: its retry needs its code
            keep.update(
                r.name for r in self._unfinished_rollbacks() if r.rolling_back_to == current
            )
        for path in self.layout.releases.iterdir() if self.layout.releases.is_dir() else ():
            if path.name not in keep and path.name != current and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def _is_good(self, name: str) -> bool:
        try:
            return self.layout.load(name).good
        except (OSError, ValueError, TypeError):  # unreadable metadata: not worth keeping
            return False

    def _unfinished_rollbacks(self) -> list[Release]:
        """Releases a rollback left without finishing (started, failed or interrupted)."""
        found = []
        for name in self.layout.names():
            try:
                release = self.layout.load(name)
            except (OSError, ValueError, TypeError):
                continue
            if release.rolling_back_to is not None:
                found.append(release)
        return found

    def _settle_unfinished_rollbacks(self, after: str) -> None:
        """The service is healthy after another deploy or rollback: an older unfinished
        rollback is no longer one to retry (a plain `rollback` goes further back again)."""
        for release in self._unfinished_rollbacks():
            release.note(f"rollback to {release.rolling_back_to} left unfinished; {after}")
            self.layout.save(release)

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
            self.say(f"{exc}; rolling back to {previous}")
            try:
                self.roll_back(release, previous)
            except (DeployError, backups.BackupError) as again:
                raise DeployError(
                    f"{exc}; and the rollback to {previous} failed too: {again}; "
                    "fix that and run `sosekni-ops rollback` to finish it"
                ) from None
            release.note("rolled back")
            self.layout.save(release)
            self._settle_unfinished_rollbacks(f"then {release.name} failed and rolled back")
            raise DeployError(f"{exc}; rolled back to {previous}, which is serving") from None
        release.note("deployed")
        self.layout.save(release)
        self._settle_unfinished_rollbacks(f"then {release.name} was deployed")
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

    def roll_back(self, leaving: Release, target: str, restore_db: str | None = None) -> None:
        """`return_to(target)` with the code of `leaving`, recorded on `leaving` first.

        Until it has finished, `leaving` says "rolling back to <target>" (and on a failure
        "… failed: <why>"), so that a retry of `rollback` finds it and does the same again.
        """
        leaving.note(f"{ROLLING_BACK}{target}")
        self.layout.save(leaving)
        try:
            self.return_to(target, code_release=leaving.name, restore_db=restore_db)
        except (DeployError, backups.BackupError) as exc:
            leaving.note(f"{ROLLING_BACK}{target} failed: {exc}")
            self.layout.save(leaving)
            raise

    def rollback(self, to: str | None, restore_db: bool) -> str:
        current = self.layout.current_name()
        names = self.layout.names()
        if current is None:
            raise DeployError("nothing is deployed: there is no release to roll back from")
        unfinished = [r for r in self._unfinished_rollbacks() if r.rolling_back_to == current]
        if unfinished and to in (None, current):
            # `current` is already the target: the rollback switched, then failed or stopped.
            leaving, target = unfinished[-1], current
            self.say(f"the rollback from {leaving.name} to {target} did not finish: doing it again")
        else:
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
                raise DeployError(f"{leaving.name} recorded no pre-deploy backup to restore")
        try:
            self.roll_back(leaving, target, restore)
        except (DeployError, backups.BackupError) as exc:
            again = " ".join(
                [
                    "sosekni-ops rollback",
                    *(["--to", to] if to else []),
                    *(["--restore-db"] * restore_db),
                ]
            )
            raise DeployError(
                f"{exc}; {leaving.name} is marked as rolling back to {target}: "
                f"fix that and run `{again}` again to finish it"
            ) from None
        leaving.note(f"rolled back to {target}")
        self.layout.save(leaving)
        self._settle_unfinished_rollbacks(f"then {leaving.name} rolled back to {target}")
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
