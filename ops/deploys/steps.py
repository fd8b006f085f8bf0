"""One deploy step as a subprocess (git, uv, the restart), failing as one line; the
migration head of a release tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ops.deploys.layout import DeployError

_MIGRATION_ID = re.compile(r'^ID\s*=\s*"([^"]+)"', re.MULTILINE)


def run_step(
    command: list[str], *, cwd: Path | None = None, what: str, timeout: float = 900
) -> str:
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
