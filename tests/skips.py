"""CI's promise that every test ran: with SOSEKNI_TESTS_NO_SKIPS=1 a skipped test fails the run.

A test that needs a tool the machine lacks (Debian's chromium for the browser test,
debootstrap and systemd-nspawn for provisioning) is skipped on a laptop, saying why. In CI
that would turn a missing install into a green run without the test in it, so `.ci/run` sets
the variable and a skip becomes a failure of the session that names the tests.
"""

from __future__ import annotations

import os

import pytest

VARIABLE = "SOSEKNI_TESTS_NO_SKIPS"


def wanted() -> bool:
    return os.environ.get(VARIABLE, "") not in ("", "0")


class NoSkips:
    """Counts the skipped tests (not expected failures) and fails the session if there are."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            self.skipped.append(f"{report.nodeid}: {reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.skipped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: object) -> None:
        if self.skipped:
            write = terminalreporter.write_line  # type: ignore[attr-defined]
            write(f"{len(self.skipped)} test(s) skipped while {VARIABLE} is set, so the run fails:")
            for line in self.skipped:
                write(f"  {line}")
