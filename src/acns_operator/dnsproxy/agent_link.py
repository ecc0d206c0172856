"""The proxy's side of the agent link: a gRPC ``FQDNData`` client.

* ``StreamPolicyState``: the agent pushes full rule snapshots; each is handed to
  ``on_snapshot`` (which compiles, swaps and persists it) and acked with its
  ``request_id``. The stream being up is what "connected" means.
* ``UpdateMapping``: one call per answer with addresses. :meth:`AgentLink.submit`
  returns a future that resolves when the agent acked (True) or failed (False); the
  server holds the DNS reply on it for at most the max delay.

While the agent is unreachable the proxy keeps answering: mappings go to a bounded
queue (newest kept, drops counted) and are replayed, with their original idempotency
key and ``replayed=True``, as soon as the stream is back. A mapping the agent already
acknowledged for the same endpoint and name, with no new address and no later expiry
(within a second: resolvers' TTLs tick in whole seconds), is not pushed again. Cilium
pushes every answer; behind a caching resolver most answers repeat, and each push is
a gRPC round trip the reply would wait for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from acns_operator.dnsproxy.metrics import ProxyMetrics
from acns_operator.proto import fqdndata_pb2 as pb
from acns_operator.proto import fqdndata_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SnapshotHandler = Callable[[pb.PolicyState], tuple[int, str]]
"""Applies a snapshot; returns (ResponseCode, message) for the ack."""

# A repeated answer whose expiry is at most this much later is not pushed again.
EXPIRY_TOLERANCE_MS = 1000
_CALL_TIMEOUT = 5.0
_CHANNEL_OPTIONS = (
    # Cilium's SDP keepalive: notice a dead agent within seconds
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 1_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


@dataclass(frozen=True, slots=True)
class Mapping:
    """One answer's addresses credited to the query name (Cilium §3.3)."""

    fqdn: str
    addresses: tuple[bytes, ...]
    ttl: int
    source_ip: bytes
    rcode: int
    cnames: tuple[str, ...]
    qtype: int
    lookup_time_ms: int
    key: str

    def to_proto(self, *, replayed: bool = False) -> pb.FQDNMapping:
        """The wire message."""
        return pb.FQDNMapping(
            fqdn=self.fqdn,
            record_ips=list(self.addresses),
            ttl=self.ttl,
            source_ip=self.source_ip,
            response_code=self.rcode,
            cnames=list(self.cnames),
            qtype=self.qtype,
            lookup_time_unix_ms=self.lookup_time_ms,
            idempotency_key=self.key,
            replayed=replayed,
        )


class MappingKeys:
    """Unique idempotency keys: a random instance prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = 0

    def next(self) -> str:
        """A key never returned before by any proxy instance (with overwhelming odds)."""
        self._counter += 1
        return f"{self._prefix}-{self._counter}"


class AgentLink:
    """gRPC client of the agent's FQDNData service (see the module doc)."""

    def __init__(
        self,
        target: str,
        metrics: ProxyMetrics,
        on_snapshot: SnapshotHandler,
        *,
        queue_size: int = 10_000,
        dedup_entries: int = 100_000,
        reconnect_interval: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._target = target
        self._metrics = metrics
        self._on_snapshot = on_snapshot
        self._queue: collections.deque[Mapping] = collections.deque()
        self._queue_size = queue_size
        self._dedup_entries = dedup_entries
        self._known: collections.OrderedDict[tuple[bytes, str], tuple[frozenset[bytes], int]] = (
            collections.OrderedDict()
        )
        self._reconnect_interval = reconnect_interval
        self._wall_clock = wall_clock
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.FQDNDataStub | None = None
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._pushes: set[asyncio.Task[bool]] = set()
        self._closing = False
        self.snapshots_applied = 0
        metrics.queue_depth = lambda: len(self._queue)
        metrics.agent_connected = lambda: self._connected

    @property
    def connected(self) -> bool:
        """True while the snapshot stream to the agent is up."""
        return self._connected

    @property
    def queued(self) -> int:
        """Mappings waiting for the agent."""
        return len(self._queue)

    # ------------------------------------------------------------------ mappings

    def submit(self, mapping: Mapping) -> asyncio.Future[bool] | None:
        """Send a mapping; return a future to hold the reply on, or None not to hold.

        None when the agent already has it (skipped) or is unreachable (queued).
        """
        if self._is_known(mapping):
            self._metrics.push("skipped")
            return None
        if not self._connected or self._stub is None:
            self._enqueue(mapping)
            return None
        task = asyncio.get_running_loop().create_task(self._push(mapping, replayed=False))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)
        return task

    def _expiry(self, mapping: Mapping) -> int:
        return mapping.lookup_time_ms + mapping.ttl * 1000

    def _is_known(self, mapping: Mapping) -> bool:
        if not self._dedup_entries:
            return False
        known = self._known.get((mapping.source_ip, mapping.fqdn))
        if known is None:
            return False
        addresses, expiry = known
        return self._expiry(mapping) <= expiry + EXPIRY_TOLERANCE_MS and addresses.issuperset(
            mapping.addresses
        )

    def _remember(self, mapping: Mapping) -> None:
        if not self._dedup_entries:
            return
        key = (mapping.source_ip, mapping.fqdn)
        known = self._known.pop(key, None)
        expiry = self._expiry(mapping)
        addresses = frozenset(mapping.addresses)
        if known is not None and known[1] >= expiry:
            # keep the later expiry; the agent keeps each address's latest expiry
            expiry = known[1]
            addresses = addresses | known[0]
        self._known[key] = (addresses, expiry)
        while len(self._known) > self._dedup_entries:
            self._known.popitem(last=False)

    def _enqueue(self, mapping: Mapping, *, front: bool = False) -> None:
        if len(self._queue) >= self._queue_size:
            if front:
                self._metrics.mappings_dropped += 1
                return
            self._queue.popleft()
            self._metrics.mappings_dropped += 1
        if front:
            self._queue.appendleft(mapping)
        else:
            self._queue.append(mapping)
        self._metrics.push("queued")

    async def _push(self, mapping: Mapping, *, replayed: bool) -> bool:
        stub = self._stub
        if stub is None:
            self._enqueue(mapping, front=replayed)
            return False
        try:
            response = await stub.UpdateMapping(
                mapping.to_proto(replayed=replayed), timeout=_CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED,
                grpc.StatusCode.UNKNOWN,
                grpc.StatusCode.INTERNAL,
            ):
                # connection trouble: keep it for replay (Cilium's SDP would drop it)
                self._enqueue(mapping, front=replayed)
            else:
                self._metrics.push("failed")
                log.warning("agent rejected mapping for %s: %s", mapping.fqdn, exc.details())
            return False
        if response.response == pb.RESPONSE_CODE_NO_ERROR:
            self._remember(mapping)
            self._metrics.push("acked")
            return True
        self._metrics.push("failed")
        log.warning(
            "agent refused mapping for %s: %s %s",
            mapping.fqdn,
            pb.ResponseCode.Name(response.response),
            response.message,
        )
        return False

    async def _replay(self) -> None:
        while self._queue and self._connected:
            mapping = self._queue.popleft()
            if await self._push(mapping, replayed=True):
                self._metrics.mappings_replayed += 1
            else:
                return

    # ------------------------------------------------------------------ snapshots

    def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="agent-link")

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if self._connected:
                    log.warning("agent stream ended: %s", exc.code().name)
            except Exception:
                log.exception("agent link failed")
            self._set_connected(False)
            if self._closing:
                return
            await asyncio.sleep(self._reconnect_interval)

    async def _session(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
            self._stub = pb_grpc.FQDNDataStub(self._channel)  # type: ignore[no-untyped-call]
        assert self._stub is not None
        # READY transport, not the stream's first message: an agent that has no
        # snapshot yet sends nothing, but it can already take mappings
        await self._channel.channel_ready()
        call = self._stub.StreamPolicyState()
        # the agent may have restarted: it may not have what we pushed before
        self._known.clear()
        self._set_connected(True)
        while True:
            state = await call.read()
            if state is grpc.aio.EOF:
                return
            assert isinstance(state, pb.PolicyState)
            try:
                code, message = self._on_snapshot(state)
            except Exception as exc:
                log.exception("applying snapshot %s failed", state.request_id)
                code, message = pb.RESPONSE_CODE_SERVER_FAILURE, str(exc)
            self.snapshots_applied += 1
            await call.write(
                pb.PolicyStateResponse(
                    response=code,  # type: ignore[arg-type]
                    request_id=state.request_id,
                    message=message,
                )
            )

    def _set_connected(self, value: bool) -> None:
        if value == self._connected:
            return
        self._connected = value
        log.info("agent %s", "connected" if value else "unreachable")
        if value and self._queue and (self._replayer is None or self._replayer.done()):
            self._replayer = asyncio.get_running_loop().create_task(self._replay())

    async def close(self) -> None:
        """Stop the link; pending pushes are given a moment, queued mappings are lost."""
        self._closing = True
        for task in (self._task, self._replayer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._pushes:
            await asyncio.wait(self._pushes, timeout=1.0)
        if self._channel is not None:
            await self._channel.close()
        self._connected = False

    def now_ms(self) -> int:
        """Wall-clock milliseconds, the lookup time carried by mappings."""
        return int(self._wall_clock() * 1000)
