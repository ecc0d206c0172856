"""``.ci/run`` fails on unexpected skips: tests/conftest.py's hooks in a nested session.

The nested session gets the real hooks (this repository's ``tests/conftest.py``, minus
its fixture plugins) and a test file holding one passing test plus the skips under
test, so what CI runs is what is checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

_TESTS = """
import pytest

def test_passes():
    assert True

@pytest.mark.skip(reason="deliberately skipped")
def test_plain_skip():
    pass

@pytest.mark.kind
@pytest.mark.skip(reason="kind is opt-in")
def test_kind_skip():
    pass
"""


def _hooks_only() -> str:
    lines = _CONFTEST.read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("pytest_plugins"))


def _run(pytester: pytest.Pytester, tests: str) -> pytest.RunResult:
    pytester.makeconftest(_hooks_only())
    pytester.makeini("[pytest]\nmarkers =\n    kind: opt-in kind tests\n")
    pytester.makepyfile(test_sample=tests)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_a_skipped_non_kind_test_fails_the_ci_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACNS_FAIL_ON_SKIP", "1")
    result = _run(pytester, _TESTS)
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped tests are failures in CI*"])
    result.stdout.fnmatch_lines(["SKIPPED (not allowed): test_sample.py::test_plain_skip"])
    assert "test_kind_skip" not in "".join(
        line for line in result.outlines if line.startswith("SKIPPED (not allowed)")
    )


def test_skipped_kind_tests_are_allowed_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACNS_FAIL_ON_SKIP", "1")
    only_kind = _TESTS.replace('@pytest.mark.skip(reason="deliberately skipped")\n', "")
    result = _run(pytester, only_kind)
    result.assert_outcomes(passed=2, skipped=1)
    assert result.ret == pytest.ExitCode.OK


def test_skips_are_only_reported_outside_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACNS_FAIL_ON_SKIP", raising=False)
    result = _run(pytester, _TESTS)
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK
