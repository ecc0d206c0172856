"""Forwarding queries to the upstream DNS servers.

UDP: a few long-lived sockets per upstream server, each connected to it from a random
source port chosen by the kernel, shared by every query to that server. Each query
gets a fresh random 16-bit ID from :mod:`secrets` (unique among that socket's queries
in flight), so an off-path attacker must guess port and ID. A reply is accepted only
when it comes from the server the query went to (the connected socket filters that),
carries an ID in flight on that socket and echoes the question; anything else is
counted as stray and ignored. Sockets are drained with non-blocking
reads from ``loop.add_reader`` (bounded per wakeup): asyncio's ``DatagramProtocol``
reads one datagram per loop iteration and caps out near 9,000 queries/second.

Timeouts: every query has the same timeout, so the in-flight dict, in insertion order,
is also in deadline order; a periodic sweep pops from its front until it finds a live
entry. No timer per query.

TCP: :class:`TcpUpstream` keeps one upstream connection per downstream connection
(Cilium's shared client for TCP), with RFC 1035 two-byte length framing, so large
answers and EDNS0 work.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from acns_operator.dnsproxy import wire
from acns_operator.dnsproxy.metrics import ProxyMetrics
from acns_operator.errors import UpstreamError

ReplyCallback = Callable[[bytes | None], None]
"""Called once per query with the upstream reply (ID already restored) or None on timeout."""

_DRAIN_BUDGET = 256  # datagrams read per wakeup before yielding to the loop
_MAX_UDP = 65535
_MAX_SERVERS = 256  # distinct upstream servers with their own sockets (DNS Services: few)


@dataclass(slots=True)
class _Pending:
    deadline: float
    query: wire.Query
    callback: ReplyCallback


class OverloadError(UpstreamError):
    """Too many upstream queries in flight."""


class UdpUpstream:
    """Shared long-lived UDP sockets with an in-flight table (see the module doc)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        metrics: ProxyMetrics,
        *,
        sockets: int = 4,
        timeout: float = 10.0,
        max_inflight: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._metrics = metrics
        self._count = sockets
        self._timeout = timeout
        self._max_inflight = max_inflight
        self._clock = clock
        # per upstream server: connected sockets, each with its in-flight table by ID
        self._pool: dict[tuple[str, int], list[tuple[socket.socket, dict[int, _Pending]]]] = {}
        self._inflight: list[dict[int, _Pending]] = []
        self._next = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._random = b""
        self._random_at = 0

    def _random_id(self) -> int:
        """A 16-bit ID from the OS CSPRNG, read in batches (one syscall per 2,048 IDs)."""
        if self._random_at >= len(self._random):
            self._random = secrets.token_bytes(4096)
            self._random_at = 0
        at = self._random_at
        self._random_at = at + 2
        return (self._random[at] << 8) | self._random[at + 1]

    @property
    def inflight(self) -> int:
        """Queries sent and not yet answered or expired."""
        return sum(len(table) for table in self._inflight)

    def _server_pool(
        self, server: tuple[str, int]
    ) -> list[tuple[socket.socket, dict[int, _Pending]]]:
        pool = self._pool.get(server)
        if pool is not None:
            return pool
        if len(self._pool) >= _MAX_SERVERS:
            self._evict_idle_pool()
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        pool = []
        try:
            for _ in range(self._count):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                pool.append((sock, {}))
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                # connect(): the kernel picks a random ephemeral source port, filters
                # replies to this server's address and port, and skips a route lookup
                # per datagram
                sock.connect(server)
        except OSError as exc:
            for sock, _table in pool:
                sock.close()
            raise UpstreamError(f"cannot open sockets to {server[0]}:{server[1]}: {exc}") from exc
        for sock, table in pool:
            self._inflight.append(table)
            self._loop.add_reader(sock.fileno(), self._on_readable, sock, table)
        self._pool[server] = pool
        if self._sweeper is None:
            self._schedule_sweep()
        return pool

    def _evict_idle_pool(self) -> None:
        for server, pool in list(self._pool.items()):
            if all(not table for _sock, table in pool):
                del self._pool[server]
                for sock, table in pool:
                    self._inflight.remove(table)
                    self._loop.remove_reader(sock.fileno())
                    sock.close()
                return

    def send(self, query: wire.Query, server: tuple[str, int], callback: ReplyCallback) -> None:
        """Forward ``query`` to ``server``; ``callback`` gets the reply or None on timeout.

        Raises :class:`OverloadError` past ``max_inflight`` and :class:`UpstreamError`
        when the datagram cannot be sent.
        """
        if self._closed:
            raise UpstreamError("upstream closed")
        pool = self._pool.get(server) or self._server_pool(server)
        self._next = (self._next + 1) % len(pool)
        sock, table = pool[self._next]
        if len(table) * len(pool) >= self._max_inflight:
            raise OverloadError()
        msg_id = self._random_id()
        while msg_id in table:
            msg_id = self._random_id()
        try:
            sock.send(wire.with_id(query.raw, msg_id))
        except OSError as exc:
            raise UpstreamError(f"cannot send to {server[0]}:{server[1]}: {exc}") from exc
        table[msg_id] = _Pending(self._clock() + self._timeout, query, callback)

    def _on_readable(self, sock: socket.socket, table: dict[int, _Pending]) -> None:
        for _ in range(_DRAIN_BUDGET):
            try:
                data = sock.recv(_MAX_UDP)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP errors (port unreachable) surface here; the query times out
                continue
            if len(data) < wire.HEADER_LEN:
                self._metrics.upstream_stray_replies += 1
                continue
            pending = table.get((data[0] << 8) | data[1])
            # the connected socket only receives from the server; the ID and the
            # question must match too
            if pending is None or not wire.question_matches(pending.query, data):
                self._metrics.upstream_stray_replies += 1
                continue
            del table[(data[0] << 8) | data[1]]
            pending.callback(wire.with_id(data, pending.query.id))

    def _schedule_sweep(self) -> None:
        self._sweeper = self._loop.call_later(min(0.05, self._timeout / 4), self._sweep)

    def _sweep(self) -> None:
        now = self._clock()
        for table in self._inflight:
            while table:
                msg_id = next(iter(table))
                pending = table[msg_id]
                if pending.deadline > now:
                    break
                del table[msg_id]
                with contextlib.suppress(Exception):
                    pending.callback(None)
        if not self._closed:
            self._schedule_sweep()

    def close(self) -> None:
        """Close the sockets; queries still in flight get no callback."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for pool in self._pool.values():
            for sock, _table in pool:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
                sock.close()
        self._pool.clear()


_LEN = struct.Struct("!H")


async def read_framed(reader: asyncio.StreamReader) -> bytes | None:
    """Read one length-prefixed DNS message; None at a clean end of stream."""
    try:
        head = await reader.readexactly(2)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise UpstreamError("connection closed inside a length prefix") from exc
        return None
    (length,) = _LEN.unpack(head)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise UpstreamError("connection closed inside a message") from exc


def frame(message: bytes) -> bytes:
    """Prefix a DNS message with its two-byte length (TCP framing)."""
    return _LEN.pack(len(message)) + message


class TcpUpstream:
    """One upstream TCP connection serving one downstream connection's queries in turn."""

    def __init__(self, server: tuple[str, int], timeout: float) -> None:
        self.server = server
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(self, query: wire.Query) -> bytes | None:
        """Send ``query`` and return the matching reply (client ID restored).

        Returns None on timeout. A broken pooled connection is reopened once.
        """
        for attempt in range(2):
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._exchange_once(query)
            except TimeoutError:
                await self.close()
                return None
            except (OSError, UpstreamError):
                await self.close()
                if attempt:
                    raise
        return None  # pragma: no cover - the loop always returns or raises

    async def _exchange_once(self, query: wire.Query) -> bytes:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(*self.server)
        assert self._reader is not None
        msg_id = secrets.randbits(16)
        self._writer.write(frame(wire.with_id(query.raw, msg_id)))
        await self._writer.drain()
        while True:
            data = await read_framed(self._reader)
            if data is None:
                raise UpstreamError("upstream closed the connection")
            if wire.peek_id(data) == msg_id and wire.question_matches(query, data):
                return wire.with_id(data, query.id)

    async def close(self) -> None:
        """Close the upstream connection, if open."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
