"""acns_operator.childproc: logged child processes stopped by PID."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from acns_operator import childproc


def test_output_goes_to_the_log_after_the_command_line(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    process = childproc.start_logged(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"], log
    )
    assert process.wait(timeout=30) == 0
    lines = log.read_text().splitlines()
    assert lines[0].startswith(f"$ {sys.executable} -c")
    assert sorted(lines[1:]) == ["err", "out"]
    assert childproc.log_tail(log, 1) in ("err", "out")


def test_a_missing_log_is_said_so(tmp_path: Path) -> None:
    assert childproc.log_tail(tmp_path / "none.log", 5) == f"(no log at {tmp_path / 'none.log'})"


def test_terminate_stops_with_sigterm_and_reports_the_status(tmp_path: Path) -> None:
    process = childproc.start_logged(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleep.log"
    )
    assert childproc.terminate(process, grace=10) == -signal.SIGTERM
    assert childproc.terminate(process, grace=10) == -signal.SIGTERM  # already gone: no-op


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "stubborn.log"
    process = childproc.start_logged([sys.executable, "-c", code], log)
    deadline = time.monotonic() + 30
    while "ready" not in log.read_text().splitlines() and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    assert childproc.terminate(process, grace=0.3) == -signal.SIGKILL
    assert time.monotonic() - started < 10
