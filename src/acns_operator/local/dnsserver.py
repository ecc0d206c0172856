"""The test DNS server (a real dnsmasq) and what ``dig`` tells a test about an answer.

:class:`DnsZone` holds records; :class:`DnsServer` runs ``dnsmasq`` inside a network
namespace serving them; :func:`parse_dig` turns ``dig +yaml`` output into a
:class:`DigResult`.

dnsmasq is started with ``--no-resolv --no-hosts --bind-interfaces`` on one address and
``local=/#/``: it never forwards anywhere, it answers from the zone only, and any name
the zone does not hold gets NXDOMAIN (so a REFUSED a test sees comes from the DNS proxy,
never from this server). Records become dnsmasq options:

============  ====================================================================
A / AAAA      ``host-record=NAME,ADDRESS[,TTL]`` (one line per address, so a name
              may have many addresses, each with its own TTL)
CNAME         ``cname=NAME,TARGET[,TTL]`` (a target may itself be a CNAME: chains)
TXT           ``txt-record=NAME,"TEXT"`` (TTL: the zone default)
============  ====================================================================

Records without a TTL use the zone's ``default_ttl`` (``local-ttl``). Every address must
be a test address (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, or a
pod in 10.244.0.0/16), so no answer can lead a test to a real host.

The default zone (:func:`default_test_zone`)::

    example.test.            A     192.0.2.1        the apex (``*.example.test`` must not match it)
    payments.example.test.   A     192.0.2.10
    api.example.test.        A     192.0.2.20
    a.b.example.test.        A     192.0.2.30       two labels below example.test
    www.example.test.        CNAME edge.example.test.  TTL 40
    edge.example.test.       CNAME cdn.example.test.   TTL 30  (lowest in the chain)
    cdn.example.test.        A     198.51.100.30    TTL 60
    v6.example.test.         A     192.0.2.40, AAAA 2001:db8::40
    short.example.test.      A     192.0.2.50       TTL 2 (for expiry tests)
    many.example.test.       A     203.0.113.1 .. 203.0.113.16   (16 addresses)
    big.example.test.        A     203.0.113.101 .. 203.0.113.200 (100 addresses: the
                                   answer exceeds 1232 bytes, so UDP answers are truncated
                                   and clients retry over TCP)
    text.example.test.       TXT   "acns test zone"
    www.other.test.          A     198.51.100.10    a second domain
    everything else          NXDOMAIN

All other records default to a TTL of 300 s. With ``log_queries`` (the default) dnsmasq
logs every query to a file and :meth:`DnsServer.queries` returns them, so a test can
check that a denied query never reached the upstream.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import dnslib
import yaml

from acns_operator.errors import HarnessError
from acns_operator.local.netns import ManagedProcess, Netns

__all__ = [
    "TEST_NETWORKS",
    "DigAnswer",
    "DigResult",
    "DnsQueryLog",
    "DnsRecord",
    "DnsServer",
    "DnsZone",
    "RecordType",
    "default_test_zone",
    "is_test_address",
    "parse_dig",
]

RecordType = Literal["A", "AAAA", "CNAME", "TXT"]
"""The record types the test zone supports."""

TEST_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
    ipaddress.ip_network("10.244.0.0/16"),
)
"""Addresses a test DNS answer may contain: documentation ranges and the pod network."""

_PROBE_NAME = "readiness-probe.acns.invalid"
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def is_test_address(address: str) -> bool:
    """Whether ``address`` lies in one of :data:`TEST_NETWORKS`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in TEST_NETWORKS)


def _normalise_name(name: str) -> str:
    text = name.lower().rstrip(".")
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise HarnessError(f"invalid DNS name {name!r} in the test zone")
    return text


@dataclass(frozen=True)
class DnsRecord:
    """One record of the test zone."""

    name: str
    type: RecordType
    value: str
    ttl: int | None = None

    def __post_init__(self) -> None:
        """Normalise the name and refuse values that could point a test at a real host."""
        object.__setattr__(self, "name", _normalise_name(self.name))
        if self.type in ("A", "AAAA"):
            version = 4 if self.type == "A" else 6
            try:
                ip = ipaddress.ip_address(self.value)
            except ValueError as exc:
                raise HarnessError(f"{self.type} record {self.name}: {exc}") from exc
            if ip.version != version or not is_test_address(self.value):
                raise HarnessError(
                    f"{self.type} record {self.name} -> {self.value}: test answers may only "
                    "point at test hosts (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, "
                    "2001:db8::/32, pods in 10.244.0.0/16)"
                )
        elif self.type == "CNAME":
            object.__setattr__(self, "value", _normalise_name(self.value))
        elif self.type == "TXT":
            if '"' in self.value or "\n" in self.value:
                raise HarnessError(f"TXT record {self.name}: quotes and newlines are not supported")
            if self.ttl is not None:
                raise HarnessError(f"TXT record {self.name}: dnsmasq has no per-record TXT TTL")
        if self.ttl is not None and not 0 <= self.ttl <= 2**31 - 1:
            raise HarnessError(f"record {self.name}: TTL {self.ttl} out of range")

    def to_dnsmasq(self) -> str:
        """This record as a line of a dnsmasq configuration file."""
        ttl = "" if self.ttl is None else f",{self.ttl}"
        if self.type in ("A", "AAAA"):
            return f"host-record={self.name},{self.value}{ttl}"
        if self.type == "CNAME":
            return f"cname={self.name},{self.value}{ttl}"
        return f'txt-record={self.name},"{self.value}"'


@dataclass(frozen=True)
class DnsZone:
    """The records a test DNS server answers with; every other name is NXDOMAIN."""

    records: tuple[DnsRecord, ...] = ()
    default_ttl: int = 300

    def with_records(self, *records: DnsRecord) -> DnsZone:
        """A copy with ``records`` added."""
        return replace(self, records=self.records + records)

    def with_address(self, name: str, *addresses: str, ttl: int | None = None) -> DnsZone:
        """A copy where ``name`` has exactly ``addresses`` (A and/or AAAA), replacing old ones."""
        kept = self.without(name, types=("A", "AAAA")).records
        added = tuple(
            DnsRecord(name, "AAAA" if ":" in address else "A", address, ttl)
            for address in addresses
        )
        return replace(self, records=kept + added)

    def without(self, name: str, *, types: Sequence[RecordType] | None = None) -> DnsZone:
        """A copy without ``name``'s records (of ``types``, or all of them)."""
        target = _normalise_name(name)
        kept = tuple(
            record
            for record in self.records
            if record.name != target or (types is not None and record.type not in types)
        )
        return replace(self, records=kept)

    def addresses(self, name: str | None = None) -> list[str]:
        """IPv4 addresses in the zone (of ``name`` only, when given), in record order."""
        target = None if name is None else _normalise_name(name)
        return [
            record.value
            for record in self.records
            if record.type == "A" and (target is None or record.name == target)
        ]

    def to_dnsmasq(self) -> list[str]:
        """The zone as dnsmasq configuration lines."""
        return [f"local-ttl={self.default_ttl}", *(record.to_dnsmasq() for record in self.records)]


def default_test_zone() -> DnsZone:
    """The zone described in this module's docstring."""
    records = [
        DnsRecord("example.test", "A", "192.0.2.1"),
        DnsRecord("payments.example.test", "A", "192.0.2.10"),
        DnsRecord("api.example.test", "A", "192.0.2.20"),
        DnsRecord("a.b.example.test", "A", "192.0.2.30"),
        DnsRecord("www.example.test", "CNAME", "edge.example.test", ttl=40),
        DnsRecord("edge.example.test", "CNAME", "cdn.example.test", ttl=30),
        DnsRecord("cdn.example.test", "A", "198.51.100.30", ttl=60),
        DnsRecord("v6.example.test", "A", "192.0.2.40"),
        DnsRecord("v6.example.test", "AAAA", "2001:db8::40"),
        DnsRecord("short.example.test", "A", "192.0.2.50", ttl=2),
        *(DnsRecord("many.example.test", "A", f"203.0.113.{i}") for i in range(1, 17)),
        *(DnsRecord("big.example.test", "A", f"203.0.113.{i}") for i in range(101, 201)),
        DnsRecord("text.example.test", "TXT", "acns test zone"),
        DnsRecord("www.other.test", "A", "198.51.100.10"),
    ]
    return DnsZone(records=tuple(records))


@dataclass(frozen=True)
class DnsQueryLog:
    """One query as dnsmasq logged it."""

    name: str
    qtype: str
    client_ip: str
    client_port: int | None


# "dnsmasq[42]: 7 10.244.2.10/40875 query[AAAA] v6.example.test from 10.244.2.10"
_QUERY_LOG_RE = re.compile(
    r"dnsmasq\[\d+\]: (?:\d+ (?P<src>[0-9a-fA-F.:]+)/(?P<port>\d+) )?"
    r"query\[(?P<qtype>[A-Za-z0-9]+)\] (?P<name>\S+) from (?P<client>\S+)"
)


class DnsServer:
    """A dnsmasq process serving a :class:`DnsZone` on ``ip:port`` inside a namespace.

    Start it with :meth:`start` (the topology does this for you); change the records
    with :meth:`update` (the process is restarted on the same address and is ready when
    the call returns).
    """

    def __init__(
        self,
        netns: Netns,
        ip: str,
        zone: DnsZone,
        *,
        workdir: Path,
        port: int = 53,
        log_queries: bool = True,
        name: str = "dnsmasq",
    ) -> None:
        """Describe the server; nothing runs until :meth:`start`."""
        self.netns = netns
        self.ip = ip
        self.port = port
        self.zone = zone
        self.name = name
        self.log_queries = log_queries
        self.workdir = workdir
        self.config_path = workdir / f"{name}.conf"
        self.query_log_path = workdir / f"{name}.queries.log"
        self.process_log_path = workdir / f"{name}.log"
        self.service_ip: str | None = None
        self.process: ManagedProcess | None = None
        self.processes: list[ManagedProcess] = []
        """Every dnsmasq process this server has started (one more per restart)."""
        self.restarts = 0

    def __repr__(self) -> str:
        return f"DnsServer({self.name!r}, {self.ip}:{self.port} in {self.netns.name})"

    @property
    def pid(self) -> int | None:
        """The dnsmasq PID while it runs."""
        return self.process.pid if self.process is not None else None

    def config_lines(self) -> list[str]:
        """The full dnsmasq configuration for the current zone."""
        lines = [
            "no-resolv",  # never forward: nothing may leave the test namespaces
            "no-hosts",
            "local=/#/",  # every name not in the zone is NXDOMAIN, never REFUSED
            f"listen-address={self.ip}",
            f"port={self.port}",
            "bind-interfaces",
            "user=root",  # the run's files are root-only; dropping to nobody would lose the log
            "pid-file=",
            "cache-size=0",
            *self.zone.to_dnsmasq(),
        ]
        if self.log_queries:
            lines += ["log-queries=extra", f"log-facility={self.query_log_path}"]
        return lines

    def start(self, *, timeout: float = 5.0) -> None:
        """Write the configuration, start dnsmasq and wait until it answers."""
        if self.process is not None and self.process.alive():
            raise HarnessError(f"{self!r} is already running (pid {self.process.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(self.config_lines()) + "\n")
        self.process = self.netns.spawn(
            ["dnsmasq", f"--conf-file={self.config_path}", "--keep-in-foreground"],
            log_path=self.process_log_path,
            name=self.name,
        )
        self.processes.append(self.process)
        self.wait_ready(timeout=timeout)

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            self.process.stop()

    def restart(self, *, timeout: float = 5.0) -> None:
        """Stop and start again with the current zone (queries fail for a few ms)."""
        self.stop()
        self.restarts += 1
        self.start(timeout=timeout)

    def update(self, zone: DnsZone, *, timeout: float = 5.0) -> None:
        """Serve ``zone`` from now on (dnsmasq re-reads options only at start: restart)."""
        self.zone = zone
        self.restart(timeout=timeout)

    def wait_ready(self, *, timeout: float = 5.0) -> None:
        """Poll with a real DNS query from inside the namespace until dnsmasq answers."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is None or not self.process.alive():
                tail = self.process.log_tail() if self.process is not None else ""
                raise HarnessError(f"{self!r} exited during start-up; its log:\n{tail}")
            try:
                self._probe(timeout=0.2)
                return
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.01)
        raise HarnessError(f"{self!r} did not answer within {timeout:g} s ({last_error})")

    def _probe(self, *, timeout: float) -> None:
        query = dnslib.DNSRecord.question(_PROBE_NAME)
        query.header.id = secrets.randbelow(65536)
        with self.netns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            # Connected, so the ICMP "port unreachable" of a server not yet bound fails
            # recv() at once instead of waiting for the timeout.
            sock.connect((self.ip, self.port))
            sock.send(query.pack())
            data = sock.recv(4096)
        if dnslib.DNSRecord.parse(data).header.id != query.header.id:
            raise OSError("reply with the wrong ID")

    def queries(self) -> list[DnsQueryLog]:
        """The queries dnsmasq has logged so far (not its own readiness probes)."""
        if not self.log_queries:
            raise HarnessError(f"{self!r} runs without log_queries")
        try:
            text = self.query_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        found = []
        for match in _QUERY_LOG_RE.finditer(text):
            if match["name"] == _PROBE_NAME:
                continue
            found.append(
                DnsQueryLog(
                    name=match["name"].lower(),
                    qtype=match["qtype"],
                    client_ip=match["src"] or match["client"],
                    client_port=int(match["port"]) if match["port"] else None,
                )
            )
        return found

    def wait_for_query(self, name: str, *, timeout: float = 2.0) -> DnsQueryLog:
        """Wait until a query for ``name`` shows up in the log, and return it."""
        target = _normalise_name(name)
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.queries():
                if entry.name.rstrip(".") == target:
                    return entry
            if time.monotonic() >= deadline:
                raise HarnessError(f"{self!r} logged no query for {name} within {timeout:g} s")
            time.sleep(0.02)


@dataclass(frozen=True)
class DigAnswer:
    """One resource record of a ``dig`` answer section."""

    name: str
    ttl: int
    type: str
    data: str


@dataclass(frozen=True)
class DigResult:
    """What ``dig`` reported: the rcode and answers, or that no reply came."""

    rcode: str | None
    """NOERROR, NXDOMAIN, REFUSED, SERVFAIL, ...; None when no reply arrived."""
    answers: tuple[DigAnswer, ...] = ()
    flags: frozenset[str] = frozenset()
    protocol: str | None = None
    """UDP or TCP: the transport of the reply dig printed (TCP after a truncated UDP reply)."""
    error: str = ""
    """Why there was no reply (dig's message and stderr), when ``rcode`` is None."""
    exit_code: int = 0
    raw: str = field(default="", repr=False)

    @property
    def timed_out(self) -> bool:
        """No reply arrived (timeout, refused connection or unreachable server)."""
        return self.rcode is None

    @property
    def addresses(self) -> list[str]:
        """The A and AAAA data, in answer order."""
        return [answer.data for answer in self.answers if answer.type in ("A", "AAAA")]

    @property
    def ttl(self) -> int | None:
        """The lowest TTL of the answer section (what a cache may keep), or None."""
        return min((answer.ttl for answer in self.answers), default=None)

    @property
    def truncated(self) -> bool:
        """The printed reply had the TC flag (only with ``+ignore``; dig retries over TCP)."""
        return "tc" in self.flags


def parse_dig(stdout: str, stderr: str = "", exit_code: int = 0) -> DigResult:
    """Parse the output of ``dig +yaml`` into a :class:`DigResult`.

    dig prints one YAML document holding a list of messages; when it holds more than
    one response (a retry), the last one is the one that counts.
    """
    # dig's ";;" status lines are not YAML; drop them wherever they appear.
    text = "".join(line for line in stdout.splitlines(keepends=True) if not line.startswith(";;"))
    try:
        documents = yaml.safe_load(text) or []
    except yaml.YAMLError as exc:
        raise HarnessError(
            f"dig printed output that is not YAML ({exc}): {stdout[:500]!r}"
        ) from exc
    responses: list[dict[str, object]] = []
    errors: list[str] = []
    for entry in documents if isinstance(documents, list) else []:
        if not isinstance(entry, dict):
            continue
        if entry.get("type") == "DIG_ERROR":
            errors.append(str(entry.get("message", "")).strip())
        message = entry.get("message")
        if (
            entry.get("type") == "MESSAGE"
            and isinstance(message, dict)
            and str(message.get("type", "")).endswith("_RESPONSE")
        ):
            responses.append(message)
    if not responses:
        detail = "; ".join([*errors, stderr.strip()]).strip("; ")
        return DigResult(rcode=None, error=detail, exit_code=exit_code, raw=stdout)
    message = responses[-1]
    data = message.get("response_message_data")
    if not isinstance(data, dict):
        raise HarnessError(f"dig response without message data: {stdout[:500]!r}")
    answers = tuple(_parse_rr(text) for text in data.get("ANSWER_SECTION") or [])
    flags = frozenset(str(data.get("flags") or "").split())
    return DigResult(
        rcode=str(data.get("status")),
        answers=answers,
        flags=flags,
        protocol=str(message.get("socket_protocol")) if message.get("socket_protocol") else None,
        exit_code=exit_code,
        raw=stdout,
    )


def _parse_rr(text: object) -> DigAnswer:
    # "www.example.test. 40 IN CNAME edge.example.test."; TXT data may contain spaces.
    parts = str(text).split(None, 4)
    if len(parts) != 5:
        raise HarnessError(f"unexpected answer line from dig: {text!r}")
    name, ttl, _class, rtype, rdata = parts
    return DigAnswer(name=name, ttl=int(ttl), type=rtype, data=rdata)


def dig_command(
    name: str,
    server: str,
    qtype: str = "A",
    *,
    tcp: bool = False,
    port: int = 53,
    timeout: float = 2.0,
    extra: Iterable[str] = (),
) -> list[str]:
    """The ``dig`` command line for one quick query (one try, ``timeout`` s per try)."""
    wait = max(1, round(timeout))  # dig's +time takes whole seconds
    argv = ["dig", "+tries=1", f"+time={wait}", "+yaml", "-p", str(port), f"@{server}"]
    if tcp:
        argv.append("+tcp")
    return [*argv, *extra, name, qtype]
