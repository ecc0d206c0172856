"""Suite-wide pytest configuration.

With ACNS_FAIL_ON_SKIP=1 (set by .ci/run) any skipped test other than the opt-in
``kind`` ones fails the run: CI has root, network namespaces, nftables and the real
control plane, so a skip there hides a failure.
"""

from __future__ import annotations

import os

import pytest

# pytester: tests/unit/test_ci_skips.py runs this file's hooks in a nested session.
pytest_plugins = ["pytester", "tests.fixtures_controlplane", "tests.fixtures_netns"]

_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "kind" not in report.keywords:
        _unexpected_skips.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("ACNS_FAIL_ON_SKIP") == "1" and _unexpected_skips:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "skipped tests are failures in CI", red=True)
            for nodeid in _unexpected_skips:
                reporter.write_line(f"SKIPPED (not allowed): {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
