"""The release layout under DEPLOY_ROOT: releases, their recorded state, `current`, the lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from ops.common import OpsError

KEEP_RELEASES = 5
METADATA = ".sosekni-release.json"
STAMP = "%Y%m%dT%H%M%SZ"
# The status of a release a rollback is leaving, from before the rollback starts until it
# has finished: "rolling back to <release>", then "rolling back to <release> failed: <why>"
# if it failed. Kept in `status` and `history` (no field of its own: the code of older
# releases loads this JSON with Release(**data)); once it succeeded, "rolled back to …".
ROLLING_BACK = "rolling back to "
_ROLLING_BACK = re.compile(
    rf"^{re.escape(ROLLING_BACK)}(?P<target>\S+)(?: failed: .*)?$", re.DOTALL
)


class DeployError(OpsError):
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

    @property
    def rolling_back_to(self) -> str | None:
        """The release an unfinished (started, failed or interrupted) rollback from this one
        returns to; None when no rollback from it is unfinished."""
        found = _ROLLING_BACK.match(self.status)
        return found.group("target") if found else None


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
        known = {f.name for f in fields(Release)}  # a newer release's keys are ignored
        return Release(**{key: value for key, value in data.items() if key in known})

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
