"""Backup files: their names, checksums, and pruning by age."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.common import OpsError

NAME_RE = re.compile(
    r"^sosekni-(?P<db>[A-Za-z0-9_.-]+)-(?P<at>\d{8}T\d{6}Z)\.(?P<ext>dump|sqlite3)$"
)
STAMP = "%Y%m%dT%H%M%SZ"


class BackupError(OpsError):
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


def private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def check_checksum(path: Path) -> None:
    checksum = path.with_name(path.name + ".sha256")
    if not checksum.exists():
        raise BackupError(f"{checksum.name} is missing: cannot tell whether {path.name} is intact")
    expected = checksum.read_text().split()[0] if checksum.read_text().strip() else ""
    if sha256_of(path) != expected:
        raise BackupError(f"{path.name} does not match its SHA-256: the file is damaged")


def existing_backup(path: Path) -> Backup:
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
