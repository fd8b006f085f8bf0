"""Where a benchmark's results go: the Markdown table (the record, kept in git) at the
prefix, the raw JSON (every run, every figure) in a `raw/` folder beside it, which git
ignores: the raw files ran to tens of thousands of lines per run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def raw_path(prefix: Path) -> Path:
    """The raw JSON of the results at `prefix`: `<dir>/raw/<name>.json`."""
    return prefix.parent / "raw" / f"{prefix.name}.json"


def save(prefix: Path, report: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write `<prefix>.md` and the raw JSON; return both paths (Markdown first)."""
    md = Path(f"{prefix}.md")
    raw = raw_path(prefix)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md.write_text(markdown)
    return md, raw
