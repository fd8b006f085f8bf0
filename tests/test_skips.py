"""CI's no-skips guard (tests/skips.py), run in an inner pytest session of its own."""

from __future__ import annotations

import pytest

from tests.skips import NoSkips

pytest_plugins = ["pytester"]
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider", plugins=[NoSkips()])


FILE = """
import pytest

def test_runs():
    pass

@pytest.mark.skipif(True, reason="needs a tool this machine lacks")
def test_needs_a_tool():
    pass

@pytest.mark.xfail(reason="known")
def test_known_failure():
    raise AssertionError
"""


def test_a_skip_fails_the_run_and_is_named(pytester: pytest.Pytester) -> None:
    result = run(pytester, FILE)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "1 test(s) skipped while SOSEKNI_TESTS_NO_SKIPS is set, so the run fails:",
            "*test_inner.py::test_needs_a_tool*needs a tool this machine lacks*",
        ]
    )


def test_without_skips_the_run_passes_and_says_nothing(pytester: pytest.Pytester) -> None:
    result = run(pytester, FILE.replace("skipif(True", "skipif(False"))
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2, xfailed=1)
    assert "SOSEKNI_TESTS_NO_SKIPS" not in result.stdout.str()


def test_a_failing_run_keeps_its_own_status(pytester: pytest.Pytester) -> None:
    result = run(pytester, FILE + "\ndef test_broken():\n    raise KeyError\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1)
