"""A real Prometheus server on loopback that scrapes test targets (Debian ``prometheus``).

Tests start one with the ``host:port`` targets to scrape (every second), then ask it
PromQL questions through its HTTP API::

    with PrometheusServer({"agent": "127.0.0.1:9962"}, tmp_path) as prometheus:
        value = prometheus.wait_for_value("cilium_fqdn_active_ips", minimum=1)

The process is stopped by PID; its log is ``<work_dir>/prometheus.log``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acns_operator import childproc
from acns_operator.errors import HarnessError
from acns_operator.local.controlplane import free_port


class PrometheusServer(childproc.Supervised):
    """``prometheus`` scraping ``targets`` (job name → ``host:port``) every second."""

    def __init__(
        self, targets: Mapping[str, str], work_dir: Path, *, binary: str = "prometheus"
    ) -> None:
        """Describe the server; nothing runs until :meth:`start`."""
        self.targets = dict(targets)
        self.work_dir = work_dir
        self.binary = binary
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the configuration and start the server (its web API on a free port)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "prometheus.yml"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs: [{{targets: ['{target}']}}]\n"
            for job, target in self.targets.items()
        )
        config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs:\n{jobs}")
        self.port = free_port()
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        try:
            self._process = childproc.start_logged(argv, self.work_dir / "prometheus.log")
        except OSError as exc:
            raise HarnessError(f"could not start {self.binary}: {exc}") from exc

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) by PID. Safe to call twice."""
        if self._process is not None:
            childproc.terminate(self._process, 10.0)

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The result vector of an instant PromQL query."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.load(response)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_value(self, expression: str, *, minimum: float, timeout: float = 30.0) -> float:
        """Poll until the query's first sample is at least ``minimum``; that value.

        Raises :class:`HarnessError` with the server's log tail on timeout.
        """
        deadline = time.monotonic() + timeout
        value = float("nan")
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                found = self.query(expression)
            except OSError:
                continue  # not listening yet
            if found:
                value = float(found[0]["value"][1])
                if value >= minimum:
                    return value
        log = childproc.log_tail(self.work_dir / "prometheus.log", 20)
        raise HarnessError(
            f"prometheus: {expression} stayed at {value} (wanted >= {minimum}); log:\n{log}"
        )
