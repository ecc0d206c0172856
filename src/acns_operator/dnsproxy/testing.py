"""Helpers for testing and benchmarking the proxy with real processes on loopback.

* :class:`LoopbackDnsmasq` - a real dnsmasq on ``127.0.0.x:<high port>`` serving a
  :class:`~acns_operator.local.dnsserver.DnsZone` (never forwarding anywhere).
* :class:`ProxyProcess` - ``acns dnsproxy`` as a child process, configured through its
  ``ACNS_DNSPROXY_*`` environment (:func:`loopback_settings` for the usual ones), ready
  when ``/readyz`` says so, stopped by PID.
* :func:`query` - an asyncio DNS client (UDP or TCP) that records when the reply came.

Every address used is loopback; processes are stopped by their own PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dnslib

from acns_operator import childproc
from acns_operator.errors import HarnessError
from acns_operator.local.dnsserver import DnsZone
from acns_operator.local.netns import Netns


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise HarnessError("no free port found")


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise HarnessError(f"timed out after {timeout} s waiting for {what}{tail}")
        time.sleep(0.02)


class LoopbackDnsmasq:
    """dnsmasq on a loopback address and high port, answering only from ``zone``."""

    def __init__(
        self, zone: DnsZone, workdir: Path, *, ip: str = "127.0.0.1", log_queries: bool = False
    ) -> None:
        """Describe the server; :meth:`start` runs it."""
        self.zone = zone
        self.log_queries = log_queries
        self.query_log = workdir / "dnsmasq.queries.log"
        self.ip = ip
        self.port = free_port(ip)
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``ip:port``, the form settings take."""
        return f"{self.ip}:{self.port}"

    def start(self) -> None:
        """Write the configuration, start dnsmasq and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "dnsmasq.conf"
        config.write_text(
            "\n".join(
                [
                    "no-resolv",
                    "no-hosts",
                    "local=/#/",
                    f"listen-address={self.ip}",
                    f"port={self.port}",
                    "bind-interfaces",
                    "user=root",
                    "pid-file=",
                    "dns-forward-max=10000",
                    "edns-packet-max=4096",  # large answers over UDP with EDNS0
                    *self.zone.to_dnsmasq(),
                    *(
                        ["log-queries", f"log-facility={self.query_log}"]
                        if self.log_queries
                        else []
                    ),
                ]
            )
            + "\n"
        )
        log = self.workdir / "dnsmasq.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                ["dnsmasq", f"--conf-file={config}", "--keep-in-foreground"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        _wait(f"dnsmasq on {self.address}", lambda: _answers(self.ip, self.port), 5.0, log)

    def queried(self, name: str) -> bool:
        """Whether the query log (``log_queries``) shows a query for ``name``."""
        if not self.query_log.exists():
            return False
        needle = f"query[A] {name.rstrip('.')} ".lower()
        return needle in self.query_log.read_text(errors="replace").lower()

    def stop(self) -> None:
        """Stop dnsmasq by its PID."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _answers(ip: str, port: int) -> bool:
    packet = dnslib.DNSRecord.question("ready.invalid").pack()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(packet, (ip, port))
            sock.recvfrom(4096)
        except OSError:
            return False
    return True


def acns_executable() -> str:
    """The ``acns`` console script next to the running interpreter."""
    candidate = Path(sys.executable).with_name("acns")
    if not candidate.exists():
        raise HarnessError(f"{candidate} not found: install the package (make venv)")
    return str(candidate)


def loopback_settings(
    upstream: str,
    rules_file: Path,
    *,
    agent_address: str = "",
    transparent: bool = False,
    port: int | None = None,
    **extra: str,
) -> dict[str, str]:
    """Settings for a proxy listening on ``127.0.0.1`` (a free port unless given).

    ``upstream`` is the fixed upstream (``ip:port``), ``rules_file`` the snapshot file;
    with no ``agent_address`` the proxy runs standalone on that file. ``extra`` are
    further DnsProxySettings fields (lower case) and their values.
    """
    settings = {
        "listen_address": "127.0.0.1",
        "port": str(free_port() if port is None else port),
        "upstream": upstream,
        "agent_address": agent_address,
        "rules_file": str(rules_file),
        "transparent": "true" if transparent else "false",
    }
    settings.update(extra)
    return settings


class ProxyProcess:
    """``acns dnsproxy`` as a child process (see the module doc)."""

    def __init__(
        self,
        workdir: Path,
        settings: Mapping[str, str],
        *,
        name: str = "dnsproxy",
        netns: Netns | None = None,
    ) -> None:
        """``settings``: DnsProxySettings fields (lower case) to their values.

        With ``netns`` the proxy runs in that network namespace, and its HTTP endpoints
        (on that namespace's loopback) are read from a thread that entered it.
        """
        self.workdir = workdir
        self.settings = dict(settings)
        self.settings.setdefault("metrics_address", "127.0.0.1")
        self.settings.setdefault("metrics_port", str(free_port()))
        self.name = name
        self.netns = netns
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The proxy's PID (it must be running)."""
        if self.process is None:
            raise HarnessError(f"{self.name} is not running")
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        """Where the proxy listens: (listen address, port)."""
        return self.settings["listen_address"], int(self.settings["port"])

    def start(self, *, timeout: float = 10.0) -> None:
        """Start the proxy and wait until ``/readyz`` answers 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for key, value in self.settings.items():
            env[f"ACNS_DNSPROXY_{key.upper()}"] = value
        self.process = childproc.start_logged(self._argv(), self.log_path, env=env)
        _wait(f"{self.name} /readyz", self.is_ready, timeout, self.log_path)

    def _argv(self) -> list[str]:
        argv = [acns_executable(), "dnsproxy"]
        return self.netns.command(argv) if self.netns is not None else argv

    def _get(self, path: str, timeout: float) -> tuple[int, str]:
        def fetch() -> tuple[int, str]:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:  # noqa: S310 - loopback URL we built
                return int(response.status), response.read().decode()

        if self.netns is not None:
            return self.netns.call_inside(fetch)
        return fetch()

    def url(self, path: str) -> str:
        """An URL of the metrics/health server."""
        return f"http://{self.settings['metrics_address']}:{self.settings['metrics_port']}{path}"

    def is_ready(self) -> bool:
        """Whether ``/readyz`` answers 200 (False while starting)."""
        if self.process is not None and self.process.poll() is not None:
            raise HarnessError(
                f"{self.name} exited with {self.process.returncode}: "
                + self.log_path.read_text(errors="replace")[-2000:]
            )
        try:
            return self._get("/readyz", 0.5)[0] == 200
        except OSError:
            return False

    def metrics(self) -> str:
        """The ``/metrics`` text."""
        return self._get("/metrics", 2.0)[1]

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of ``/metrics`` (0 when absent)."""
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, label_text = head.partition("{")
            if metric != name:
                continue
            present = set(label_text.rstrip("}").split(",")) if label_text else set()
            if wanted <= present:
                return float(value)
        return 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU the proxy used so far (from /proc/PID/stat)."""
        user, system = self.cpu_times()
        return user + system

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds the proxy used so far (from /proc/PID/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def terminate(self) -> None:
        """Send SIGTERM (graceful stop) without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, *, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL after ``timeout``; return the exit status."""
        if self.process is None:
            return None
        return childproc.terminate(self.process, timeout)

    def log(self) -> str:
        """The proxy's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply and the monotonic time it arrived (None: no reply before the timeout)."""

    raw: bytes | None
    received_at: float
    sent_at: float

    @property
    def record(self) -> dnslib.DNSRecord:
        """The parsed reply (raises when there was none)."""
        if self.raw is None:
            raise HarnessError("no reply")
        return dnslib.DNSRecord.parse(self.raw)

    @property
    def rcode(self) -> str | None:
        """The rcode name, None without a reply."""
        if self.raw is None:
            return None
        return str(dnslib.RCODE.get(self.record.header.rcode))

    @property
    def addresses(self) -> list[str]:
        """A and AAAA addresses of the answer section."""
        return [
            str(rr.rdata)
            for rr in self.record.rr
            if rr.rtype in (dnslib.QTYPE.A, dnslib.QTYPE.AAAA)
        ]


def make_query(
    name: str, qtype: str = "A", *, edns: int | None = None, msg_id: int | None = None
) -> bytes:
    """A recursive query packet (a random ID unless ``msg_id``), optionally with an
    EDNS0 OPT record."""
    record = dnslib.DNSRecord.question(name, qtype)
    if msg_id is not None:
        record.header.id = msg_id
    if edns is not None:
        record.add_ar(dnslib.EDNS0(udp_len=edns))
    packed: bytes = record.pack()
    return packed


async def query(
    server: tuple[str, int],
    name: str = "",
    qtype: str = "A",
    *,
    tcp: bool = False,
    wait: float = 2.0,
    edns: int | None = None,
    packet: bytes | None = None,
    source: str | None = None,
) -> Answer:
    """Send one query (or the raw ``packet``) and wait for its reply."""
    data = packet if packet is not None else make_query(name, qtype, edns=edns)
    loop = asyncio.get_running_loop()
    sent = time.monotonic()
    if tcp:
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_connection(
                    *server, local_addr=(source, 0) if source else None
                )
                try:
                    writer.write(struct.pack("!H", len(data)) + data)
                    await writer.drain()
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                    raw = await reader.readexactly(length)
                finally:
                    writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            return Answer(None, time.monotonic(), sent)
        return Answer(raw, time.monotonic(), sent)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        if source:
            sock.bind((source, 0))
        await loop.sock_sendto(sock, data, server)
        try:
            async with asyncio.timeout(wait):
                raw = await loop.sock_recv(sock, 65535)
        except TimeoutError:
            return Answer(None, time.monotonic(), sent)
        return Answer(raw, time.monotonic(), sent)
    finally:
        sock.close()
