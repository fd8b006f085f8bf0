"""`sosekni-ops --help` loads none of the heavy libraries (issue 12: a CLI that starts at once).

python-telegram-bot, Piccolo (and `black`, which Piccolo's app registry imports), httpx,
Sanic and asyncpg together cost over a second of imports; the commands that need them import
them inside. This fails, naming the module, as soon as an import at the top of a module on
the CLI's path brings one back. It checks what is imported, not how long it takes: a timing
would fail on a loaded machine and pass on a fast one.

A subprocess, because this test process has long imported all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import ROOT

HEAVY = ("telegram", "piccolo", "httpx", "sanic", "asyncpg", "black")

PROBE = f"""
import json, sys
import ops.cli
try:
    ops.cli.app(["--help"], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_help_imports_no_heavy_library() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "serve" in done.stdout  # the help page was printed
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
