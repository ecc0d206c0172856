"""``acns operator`` as a child process, for the integration tests and the demo.

Runs the real command line (so what is tested is what users run), logs to a file,
waits for ``/readyz``, reads ``/metrics``, and stops by PID: SIGTERM (the operator
releases its Lease and, if asked, unregisters its webhook), then SIGKILL after a
grace period. :meth:`OperatorProcess.kill` simulates a crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from acns_operator import childproc
from acns_operator.errors import HarnessError

LOG_TAIL_LINES = 40


def acns_command() -> list[str]:
    """How to invoke ``acns`` with the interpreter running us."""
    script = Path(sys.executable).with_name("acns")
    if script.exists():
        return [str(script)]
    found = shutil.which("acns")
    if found:
        return [found]
    return [sys.executable, "-c", "from acns_operator.cli import main; main()"]


class OperatorProcess(childproc.Supervised):
    """One ``acns operator`` child process on loopback."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        health_port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``args`` follow ``acns operator``; ``health_port`` must be among them or free."""
        self.args = ["operator", "--health-host", "127.0.0.1", "--health-port", str(health_port)]
        self.args += list(args)
        self.health_port = health_port
        self.log_path = log_path
        self.env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The PID once started."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the process; returns at once (see :meth:`wait_ready`)."""
        argv = [*acns_command(), *self.args]
        env = {**os.environ, **self.env, "NO_PROXY": "127.0.0.1,localhost"}
        self._process = childproc.start_logged(argv, self.log_path, env=env)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of the log, for failure messages."""
        return childproc.log_tail(self.log_path, lines)

    def log(self) -> str:
        """The whole log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/readyz`` answers 200; HarnessError with the log otherwise."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise HarnessError(
                    f"acns operator exited ({code}) before it was ready; log "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            status, last = self._get("/readyz")
            if status == 200:
                return
            time.sleep(0.2)
        raise HarnessError(
            f"acns operator not ready after {timeout:.0f} s ({last.strip()}); log "
            f"{self.log_path}:\n{self.log_tail()}"
        )

    def get(self, path: str) -> tuple[int, str]:
        """GET a path on the health port: (HTTP status, body); status 0 if unreachable."""
        return self._get(path)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``, keyed by (name, sorted labels)."""
        status, text = self._get("/metrics")
        if status != 200:
            raise HarnessError(f"/metrics answered {status}: {text}")
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` matching ``labels`` (0 when none)."""
        total = 0.0
        for (sample, sample_labels), value in self.metrics().items():
            if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
                total += value
        return total

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit status."""
        if self._process is None:
            return None
        return childproc.terminate(self._process, grace)

    def kill(self) -> None:
        """SIGKILL, as a crash or a node loss would end it: no clean-up runs."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=15)
