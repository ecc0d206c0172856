"""The proxy's listeners and the per-query pipeline.

```
 pod ──UDP/TCP──► listener (IP_TRANSPARENT, SO_REUSEPORT; original dst per datagram)
                     │ wire.parse_query          header bad → drop; question bad → FORMERR
                     │ decision.decide           unknown endpoint → SERVFAIL
                     │                           denied → REFUSED/NXDOMAIN now, log, count
                     ▼ allowed
                  upstream (UDP pool | TCP per connection) ── timeout → no reply (Cilium)
                     │ wire.scan_answer          A/AAAA credited to the qname, min TTL
                     │ agent.submit(mapping)     hold ≤ max delay until the agent acks
                     ▼
 pod ◄── reply, client ID and letter case kept, sent from the original destination
```

Replies to redirected UDP queries must come from the address and port the pod asked
(e.g. the cluster DNS Service ``10.244.250.10:53``), not from the proxy's port. A
transparent UDP socket bound to that original destination (one per destination,
cached) sends them; TPROXY's socket lookup skips unconnected sockets, so these
sockets never steal queries from the listener. TCP needs nothing special: an accepted
TPROXY connection's local address already is the original destination.

Failures map to rcodes here, at the boundary, like dnspython's server: malformed
header → drop, malformed question → FORMERR, unknown endpoint or any
:class:`~acns_operator.errors.AcnsError` → SERVFAIL, denied → the configured reject
code, upstream timeout → nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from acns_operator.dnsproxy import wire
from acns_operator.dnsproxy.agent_link import AgentLink, Mapping, MappingKeys
from acns_operator.dnsproxy.decision import Decision, Verdict, decide
from acns_operator.dnsproxy.metrics import POLICY_DENIED, ProxyMetrics
from acns_operator.dnsproxy.rules import (
    EMPTY,
    PROTO_TCP,
    PROTO_UDP,
    RuleSet,
    source_names,
)
from acns_operator.dnsproxy.upstream import (
    OverloadError,
    TcpUpstream,
    UdpUpstream,
    frame,
    read_framed,
)
from acns_operator.errors import AcnsError, ConfigurationError

log = logging.getLogger(__name__)
denied_log = logging.getLogger("acns_operator.dnsproxy.denied")

# Linux socket options Python does not name.
SOL_IP = 0
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
IP_ORIGDSTADDR = 20

_UDP_BUDGET = 128  # datagrams handled per wakeup before other work gets a turn
_MAX_QUERY = 4096  # larger UDP queries are truncated by the kernel and dropped
_ANCILLARY = socket.CMSG_SPACE(16)
_SOCKADDR_IN = struct.Struct("!2xH4s8x")


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """What the pipeline needs from the settings (see DnsProxySettings)."""

    reject_rcode: int = wire.REFUSED
    upstream: tuple[str, int] | None = None
    upstream_timeout: float = 10.0
    max_delay: float = 0.1
    search_suffix_help: bool = False
    denied_log_per_second: float = 10.0


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into an (address, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError as exc:
        raise ConfigurationError(f"not an IP address: {host!r}") from exc
    return address, int(port)


def parse_origdst(ancdata: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    """The original destination from ``IP_ORIGDSTADDR`` ancillary data, if present."""
    for level, kind, data in ancdata:
        if level == SOL_IP and kind == IP_ORIGDSTADDR and len(data) >= 16:
            port, raw = _SOCKADDR_IN.unpack_from(data)
            return socket.inet_ntoa(raw), port
    return None


def listening_socket(kind: int, address: str, port: int, *, transparent: bool) -> socket.socket:
    """A UDP or TCP listener sharing its port (SO_REUSEPORT) with other proxy processes."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if transparent:
            sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(4096)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {address}:{port} ({'UDP' if kind == socket.SOCK_DGRAM else 'TCP'})"
            f": {exc}"
        ) from exc
    return sock


class RateLimiter:
    """Token bucket: at most ``rate`` events per second, bursts of ``rate``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._tokens = rate
        self._clock = clock
        self._last = clock()

    def allow(self) -> bool:
        """Take a token if one is available."""
        if self._rate <= 0:
            return False
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class DnsProxy:
    """The query pipeline shared by the UDP and TCP transports."""

    def __init__(
        self,
        options: ProxyOptions,
        metrics: ProxyMetrics,
        upstream: UdpUpstream,
        *,
        agent: AgentLink | None = None,
        rules: RuleSet = EMPTY,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.upstream = upstream
        self.agent = agent
        self.rules = rules
        self._keys = MappingKeys()
        self._denied_limiter = RateLimiter(options.denied_log_per_second)
        self._timeout_limiter = RateLimiter(1.0)
        self.holds = 0
        self.tcp_inflight = 0
        metrics.snapshot_revision = lambda: self.rules.revision
        metrics.endpoints = lambda: len(self.rules)

    # -------------------------------------------------------------- decisions

    def triage(
        self,
        data: bytes,
        client_ip: str,
        server: tuple[str, int] | None,
        protocol: int,
    ) -> tuple[bytes | None, wire.Query | None, Decision | None]:
        """Parse and decide one query.

        Returns (immediate reply, None, None) to answer at once, (None, None, None) to
        drop, or (None, query, decision) to forward ``query`` to ``server``.
        """
        metrics = self.metrics
        metrics.l7["received"] += 1
        try:
            query = wire.parse_query(data)
        except wire.HeaderError:
            metrics.l7["parse_errors"] += 1
            return None, None, None
        except wire.QuestionError:
            metrics.l7["parse_errors"] += 1
            reply = wire.build_header_reply(data, wire.FORMERR)
            if reply is not None:
                metrics.response(wire.FORMERR, "OTHER", 0)
            return reply, None, None
        qtypes = wire.QTYPE_NAMES.get(query.qtype, "OTHER")
        if query.flags & wire.OPCODE_MASK:
            metrics.response(wire.NOTIMP, qtypes, 0)
            return wire.build_reply(query, wire.NOTIMP), None, None
        if server is None:
            # a query sent straight to the listener with no upstream configured
            metrics.query(qtypes)
            metrics.response(wire.SERVFAIL, qtypes, 0)
            return wire.build_reply(query, wire.SERVFAIL), None, None
        started = time.perf_counter()
        decision = decide(
            self.rules,
            client_ip,
            server[0],
            server[1],
            protocol,
            query.qname,
            search_suffix_help=self.options.search_suffix_help,
        )
        verdict = decision.verdict
        if verdict is Verdict.ALLOWED:
            metrics.observe("allow", "policyCheckTime", time.perf_counter() - started)
            metrics.query(qtypes)
            metrics.l7["forwarded"] += 1
            return None, query, decision
        if verdict is Verdict.DENIED:
            metrics.l7["denied"] += 1
            metrics.query(qtypes, POLICY_DENIED)
            metrics.observe("denied", "policyCheckTime", time.perf_counter() - started)
            rcode = self.options.reject_rcode
            metrics.response(rcode, qtypes, 0)
            self._log_denied(query, decision, client_ip, server, protocol)
            return wire.build_reply(query, rcode), None, None
        # unknown endpoint: Cilium answers SERVFAIL
        metrics.query(qtypes)
        metrics.observe("proxyErr", "policyCheckTime", time.perf_counter() - started)
        metrics.response(wire.SERVFAIL, qtypes, 0)
        return wire.build_reply(query, wire.SERVFAIL), None, None

    def _log_denied(
        self,
        query: wire.Query,
        decision: Decision,
        client_ip: str,
        server: tuple[str, int],
        protocol: int,
    ) -> None:
        if not self._denied_limiter.allow():
            self.metrics.denied_logs_suppressed += 1
            return
        endpoint = decision.endpoint
        denied_log.info(
            json.dumps(
                {
                    "msg": "dns query denied",
                    "namespace": endpoint.namespace if endpoint else "",
                    "pod": endpoint.pod_name if endpoint else "",
                    "endpoint_id": endpoint.endpoint_id if endpoint else 0,
                    "source_ip": client_ip,
                    "name": query.qname,
                    "qtype": wire.qtype_label(query.qtype),
                    "server": f"{server[0]}:{server[1]}",
                    "protocol": "tcp" if protocol == PROTO_TCP else "udp",
                    "rcode": wire.RCODE_NAMES.get(self.options.reject_rcode, "REFUSED"),
                    "policies": source_names(endpoint.sources) if endpoint else [],
                    "suppressed_before": self.metrics.denied_logs_suppressed,
                },
                separators=(",", ":"),
            )
        )

    # -------------------------------------------------------------- answers

    def conclude(
        self,
        query: wire.Query,
        client_ip: str,
        reply: bytes | None,
        started: float,
        forwarded: float,
    ) -> tuple[bytes | None, asyncio.Future[bool] | None]:
        """Turn an upstream reply into (reply for the client, future to hold it on).

        ``reply`` None means the upstream timed out: nothing is sent (Cilium).
        """
        metrics = self.metrics
        now = time.perf_counter()
        if reply is None:
            metrics.observe("timeout", "upstreamTime", now - forwarded)
            metrics.observe("timeout", "totalTime", now - started)
            return None, None
        metrics.observe("allow", "upstreamTime", now - forwarded)
        qtypes = wire.QTYPE_NAMES.get(query.qtype, "OTHER")
        try:
            summary = wire.scan_answer(reply)
        except wire.AnswerError:
            metrics.l7["parse_errors"] += 1
            metrics.response(wire.SERVFAIL, qtypes, 0)
            return wire.build_reply(query, wire.SERVFAIL), None
        addresses = summary.addresses
        metrics.response(summary.rcode, qtypes, len(addresses))
        hold: asyncio.Future[bool] | None = None
        agent = self.agent
        if agent is not None and addresses and summary.rcode == wire.NOERROR:
            mapping = Mapping(
                fqdn=query.qname,
                addresses=addresses,
                ttl=summary.min_ttl or 0,
                source_ip=socket.inet_pton(
                    socket.AF_INET6 if ":" in client_ip else socket.AF_INET, client_ip
                ),
                rcode=summary.rcode,
                cnames=summary.cnames,
                qtype=query.qtype,
                lookup_time_ms=agent.now_ms(),
                key=self._keys.next(),
            )
            hold = agent.submit(mapping)
        return reply, hold

    def hold_then(
        self, hold: asyncio.Future[bool], release: Callable[[], None], started: float
    ) -> None:
        """Call ``release`` when the agent acked or the max delay passed, whichever first."""
        loop = asyncio.get_running_loop()
        self.holds += 1
        held_at = time.perf_counter()
        state = {"done": False}

        def fire(timed_out: bool) -> None:
            if state["done"]:
                return
            state["done"] = True
            self.holds -= 1
            waited = time.perf_counter() - held_at
            if timed_out:
                self.metrics.datapath_update_timeouts += 1
                if self._timeout_limiter.allow():
                    log.warning(
                        "agent did not apply a mapping within %.0f ms; reply released "
                        "(raise proxy_response_max_delay if this persists)",
                        self.options.max_delay * 1000,
                    )
            self.metrics.observe("allow", "dataplaneTime", waited)
            release()

        timer = loop.call_later(self.options.max_delay, fire, True)

        def acked(_: asyncio.Future[bool]) -> None:
            timer.cancel()
            fire(False)

        hold.add_done_callback(acked)

    # -------------------------------------------------------------- snapshots

    def set_rules(self, rules: RuleSet) -> None:
        """Swap in a new compiled snapshot (atomic: one attribute assignment)."""
        self.rules = rules


class UdpListener:
    """A UDP listener drained with non-blocking reads from ``loop.add_reader``."""

    def __init__(
        self,
        proxy: DnsProxy,
        sock: socket.socket,
        *,
        transparent: bool,
    ) -> None:
        self.proxy = proxy
        self.sock = sock
        self.transparent = transparent
        address, port = sock.getsockname()[:2]
        self._bound = (address, port)
        self._wildcard = address == "0.0.0.0"  # noqa: S104
        self._reply_socks: dict[tuple[str, int], socket.socket] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self.active = True

    def _server_for(self, origdst: tuple[str, int] | None) -> tuple[tuple[str, int] | None, bool]:
        """(where the query goes, whether it was redirected to us)."""
        redirected = origdst is not None and (
            origdst[1] != self._bound[1] or (not self._wildcard and origdst[0] != self._bound[0])
        )
        upstream = self.proxy.options.upstream
        if redirected:
            # policy is about the server the pod asked; a configured upstream only
            # changes where the query is actually sent
            return origdst, True
        return upstream, False

    def _on_readable(self) -> None:
        sock = self.sock
        for _ in range(_UDP_BUDGET):
            try:
                if self.transparent:
                    data, anc, flags, client = sock.recvmsg(_MAX_QUERY, _ANCILLARY)
                    if flags & socket.MSG_TRUNC:
                        self.proxy.metrics.l7["parse_errors"] += 1
                        continue
                    origdst = parse_origdst(anc)
                else:
                    data, client = sock.recvfrom(_MAX_QUERY)
                    origdst = None
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                self._handle(data, client, origdst)
            except Exception:
                # never let one query take the listener down
                log.exception("internal error handling a UDP query from %s", client[0])

    def leave_group(self) -> None:
        """Stop receiving new queries but keep the socket for replies (graceful stop).

        Closing the socket would drop the queries already queued on it and leave the
        replies of queries in flight nowhere to go out from. Instead it is connected
        to a peer that never sends (the discard port): the kernel skips connected
        sockets when it spreads datagrams over a SO_REUSEPORT group (Linux >= 5.x), so
        new queries go to the other proxy, while ``sendto`` still reaches any client.
        For a wildcard listener the connect pins replies to 127.0.0.1; redirected
        queries are unaffected (they are answered from their original destination).
        """
        peer = "127.0.0.1" if self._wildcard else self._bound[0]
        try:
            self.sock.connect((peer, 9))
        except OSError as exc:
            log.warning("cannot leave the SO_REUSEPORT group (%s); closing the listener", exc)
            self._on_readable()
            self.close()
            return
        # what the kernel queued before the connect is still ours to answer
        self._on_readable()

    def _handle(
        self, data: bytes, client: tuple[str, int], origdst: tuple[str, int] | None
    ) -> None:
        proxy = self.proxy
        started = time.perf_counter()
        policy_server, redirected = self._server_for(origdst)
        reply_from = origdst if redirected else None
        reply, query, _decision = proxy.triage(data, client[0], policy_server, PROTO_UDP)
        if query is None:
            if reply is not None:
                self._send(reply, client, reply_from)
            return
        assert policy_server is not None
        target = proxy.options.upstream or policy_server

        def on_reply(answer: bytes | None) -> None:
            try:
                out, hold = proxy.conclude(query, client[0], answer, started, forwarded)
                if out is None:
                    return
                if hold is None:
                    self._send(out, client, reply_from)
                    proxy.metrics.observe("allow", "totalTime", time.perf_counter() - started)
                    return
                proxy.hold_then(
                    hold, lambda: self._send_timed(out, client, reply_from, started), started
                )
            except Exception:
                log.exception("internal error answering %s", query.qname)
                self._send(wire.build_reply(query, wire.SERVFAIL), client, reply_from)

        forwarded = time.perf_counter()
        try:
            proxy.upstream.send(query, target, on_reply)
        except OverloadError:
            proxy.metrics.response(wire.SERVFAIL, wire.qtype_label(query.qtype), 0)
            self._send(wire.build_reply(query, wire.SERVFAIL), client, reply_from)
        except AcnsError as exc:
            log.warning("cannot forward %s to %s:%s: %s", query.qname, *target, exc)
            proxy.metrics.observe("proxyErr", "totalTime", time.perf_counter() - started)
            self._send(wire.build_reply(query, wire.SERVFAIL), client, reply_from)

    def _send_timed(
        self, data: bytes, client: tuple[str, int], source: tuple[str, int] | None, started: float
    ) -> None:
        self._send(data, client, source)
        self.proxy.metrics.observe("allow", "totalTime", time.perf_counter() - started)

    def _send(self, data: bytes, client: tuple[str, int], source: tuple[str, int] | None) -> None:
        sock = self.sock if source is None else self._reply_socket(source)
        try:
            sock.sendto(data, client)
        except OSError as exc:
            # a full socket buffer drops the reply, as the network would
            log.debug("cannot reply to %s: %s", client[0], exc)

    def _reply_socket(self, source: tuple[str, int]) -> socket.socket:
        """A transparent socket bound to the original destination, to reply from it."""
        sock = self._reply_socks.get(source)
        if sock is not None:
            return sock
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
            # nothing is ever read from it: keep its receive buffer minimal
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            sock.bind(source)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.warning("cannot reply from %s:%s (%s); replying from the listener", *source, exc)
            return self.sock
        if len(self._reply_socks) > 256:
            # destinations are a handful of DNS Services; a flood of others is abuse
            for old in self._reply_socks.values():
                old.close()
            self._reply_socks.clear()
        self._reply_socks[source] = sock
        return sock

    def close(self) -> None:
        """Close the listener and the reply sockets (queries in flight lose their reply)."""
        if self.active:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.active = False
        for sock in self._reply_socks.values():
            sock.close()
        self._reply_socks.clear()


class TcpListener:
    """DNS over TCP: one task per connection, queries answered in turn."""

    def __init__(self, proxy: DnsProxy, sock: socket.socket) -> None:
        self.proxy = proxy
        self.sock = sock
        self._bound = sock.getsockname()[:2]
        self._wildcard = self._bound[0] == "0.0.0.0"  # noqa: S104
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self.stopping = False

    async def start(self) -> None:
        """Start accepting connections."""
        self._server = await asyncio.start_server(self._serve, sock=self.sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        proxy = self.proxy
        client = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        redirected = local is not None and (
            local[1] != self._bound[1] or (not self._wildcard and local[0] != self._bound[0])
        )
        policy_server = (local[0], local[1]) if redirected else proxy.options.upstream
        target = proxy.options.upstream or policy_server
        upstream = TcpUpstream(target, proxy.options.upstream_timeout) if target else None
        # a new connection counts as busy until its first answer: a graceful stop
        # must not cut a client that connected but has not been answered yet
        self._busy.add(task)
        served = 0
        try:
            while not (self.stopping and served):
                try:
                    data = await read_framed(reader)
                except AcnsError:
                    break
                if data is None:
                    break
                started = time.perf_counter()
                proxy.tcp_inflight += 1
                self._busy.add(task)
                try:
                    out = await self._answer(data, client[0], policy_server, upstream, started)
                    if out is not None:
                        writer.write(frame(out))
                        await writer.drain()
                finally:
                    proxy.tcp_inflight -= 1
                    self._busy.discard(task)
                    served += 1
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(task)
            self._busy.discard(task)
            if upstream is not None:
                await upstream.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self,
        data: bytes,
        client_ip: str,
        policy_server: tuple[str, int] | None,
        upstream: TcpUpstream | None,
        started: float,
    ) -> bytes | None:
        proxy = self.proxy
        reply, query, _decision = proxy.triage(data, client_ip, policy_server, PROTO_TCP)
        if query is None:
            return reply
        assert upstream is not None
        forwarded = time.perf_counter()
        try:
            answer = await upstream.exchange(query)
        except (AcnsError, OSError) as exc:
            log.warning("TCP upstream %s:%s failed: %s", *upstream.server, exc)
            proxy.metrics.observe("proxyErr", "totalTime", time.perf_counter() - started)
            return wire.build_reply(query, wire.SERVFAIL)
        out, hold = proxy.conclude(query, client_ip, answer, started, forwarded)
        if hold is not None and out is not None:
            released = asyncio.get_running_loop().create_future()
            proxy.hold_then(hold, lambda: released.set_result(None), started)
            await released
        if out is not None:
            proxy.metrics.observe("allow", "totalTime", time.perf_counter() - started)
        return out

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections finish their current query.

        Connections the kernel already completed are accepted first (closing the
        socket would reset them); with ``net.ipv4.tcp_migrate_req=1`` the kernel also
        hands half-open ones to the other proxy in the SO_REUSEPORT group.
        """
        self.stopping = True
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            conn.setblocking(False)
            asyncio.get_running_loop().create_task(self._serve_socket(conn))
        if self._server is not None:
            self._server.close()

    async def _serve_socket(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        await self._serve(reader, writer)

    @property
    def connections(self) -> int:
        """Open downstream connections."""
        return len(self._connections)

    async def close(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for connections, then cancel the rest."""
        self.stop_accepting()
        # idle connections (waiting for a query) close now; busy ones finish first
        for task in self._connections - self._busy:
            task.cancel()
        if self._busy:
            _done, pending = await asyncio.wait(set(self._busy), timeout=grace)
            for task in pending:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
