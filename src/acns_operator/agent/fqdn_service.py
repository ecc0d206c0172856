"""The agent's FQDNData gRPC server: rule snapshots out, DNS mappings in.

* ``StreamPolicyState``: every connected proxy gets the current full snapshot at once,
  then the newest one whenever the rules change, at most one per
  ``snapshot_min_interval`` (snapshots in between are coalesced: only the latest
  matters). Acks are recorded per stream (:class:`SnapshotHub`).
* ``UpdateMapping``: the mapping is checked, recorded in the store, applied to the
  enforcement backend, and only *then* answered, so the proxy can hold the DNS reply
  until the first connection will be allowed. Replays with an idempotency key already
  seen get the first answer again without being applied twice. Bad input never
  raises: it gets ``ERROR_INVALID_ARGUMENT`` / ``ERROR_ENDPOINT_NOT_FOUND``.

Served with grpc.aio on a unix socket (and optionally on loopback TCP).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio

from acns_operator.errors import InputError
from acns_operator.proto import fqdndata_pb2 as pb
from acns_operator.proto import fqdndata_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[-a-z0-9_.]{1,255}$")


@dataclass(frozen=True, slots=True)
class MappingRequest:
    """A checked mapping: IPv4 addresses credited to a name for one endpoint."""

    endpoint: str
    name: str
    ips: tuple[str, ...]
    ttl: int
    lookup_time: float | None
    replayed: bool


MappingHandler = Callable[[MappingRequest], Awaitable[tuple[int, str]]]
"""Applies a mapping (store, then backend); returns (ResponseCode, message)."""


class InvalidMappingError(InputError):
    """A mapping the agent cannot use; the message says why."""


def to_address(raw: bytes) -> str:
    """A raw 4- or 16-byte address as text."""
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    raise InvalidMappingError(f"an address must be 4 or 16 bytes, not {len(raw)}")


def parse_mapping(message: pb.FQDNMapping, now: float) -> MappingRequest:
    """Check and convert a wire mapping; raises :class:`InvalidMappingError`.

    IPv6 answers are dropped: the AKS profile has no dual stack and the datapath sets
    are IPv4. A lookup time in the future is clamped to now.
    """
    name = message.fqdn.strip().lower()
    if name and not name.endswith("."):
        name += "."
    if not _NAME_RE.match(name) or ".." in name:
        raise InvalidMappingError(f"not a DNS name: {message.fqdn!r}")
    if not message.source_ip:
        raise InvalidMappingError("source_ip is missing")
    endpoint = to_address(message.source_ip)
    ips: list[str] = []
    for raw in message.record_ips:
        address = to_address(raw)
        if len(raw) == 4:
            ips.append(address)
    lookup_time: float | None = None
    if message.lookup_time_unix_ms > 0:
        lookup_time = min(message.lookup_time_unix_ms / 1000.0, now)
    return MappingRequest(
        endpoint=endpoint,
        name=name,
        ips=tuple(ips),
        ttl=int(message.ttl),
        lookup_time=lookup_time,
        replayed=message.replayed,
    )


@dataclass(slots=True)
class StreamState:
    """One connected proxy."""

    peer: str
    connected_at: float
    sent_revision: int = 0
    acked_revision: int = 0
    last_ack_code: int = 0
    last_ack_message: str = ""
    pending: dict[str, int] = field(default_factory=dict)  # request_id -> revision


class SnapshotHub:
    """The latest snapshot, and who has seen and acked which revision."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.revision = 0
        self._endpoints: list[pb.EndpointPolicy] = []
        self._changed = asyncio.Event()
        self.streams: list[StreamState] = []

    def publish(self, endpoints: list[pb.EndpointPolicy]) -> int:
        """Make ``endpoints`` the current snapshot (if they differ); returns the revision."""
        if self.revision and endpoints == self._endpoints:
            return self.revision
        self._endpoints = endpoints
        self.revision += 1
        self._changed.set()
        return self.revision

    def current(self) -> pb.PolicyState:
        """The current snapshot as a message with a fresh request id."""
        return pb.PolicyState(
            request_id=str(uuid.uuid4()),
            revision=self.revision,
            node_name=self.node_name,
            endpoints=self._endpoints,
        )

    async def wait_newer(self, revision: int) -> None:
        """Return once the revision is newer than ``revision``."""
        while self.revision <= revision:
            self._changed.clear()
            await self._changed.wait()

    def all_acked(self) -> bool:
        """Whether every connected proxy acked the current revision."""
        return all(s.acked_revision >= self.revision for s in self.streams)


class FQDNDataService(pb_grpc.FQDNDataServicer):
    """The FQDNData servicer (see the module doc)."""

    def __init__(
        self,
        hub: SnapshotHub,
        on_mapping: MappingHandler,
        *,
        min_interval: float = 1.0,
        idempotency_entries: int = 100_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self._on_mapping = on_mapping
        self._min_interval = min_interval
        self._seen: collections.OrderedDict[str, pb.UpdateMappingResponse] = (
            collections.OrderedDict()
        )
        self._seen_max = idempotency_entries
        self._wall_clock = wall_clock
        self.mappings_received = 0
        self.mappings_replayed_duplicates = 0

    async def StreamPolicyState(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[pb.PolicyStateResponse],
        context: grpc.aio.ServicerContext[pb.PolicyStateResponse, pb.PolicyState],
    ) -> AsyncIterator[pb.PolicyState]:
        """Push snapshots to one proxy and record its acks."""
        stream = StreamState(peer=context.peer(), connected_at=self._wall_clock())
        self.hub.streams.append(stream)
        reader = asyncio.get_running_loop().create_task(self._read_acks(request_iterator, stream))
        log.info("proxy %s subscribed", stream.peer)
        try:
            last_sent = 0.0
            while True:
                if stream.sent_revision >= self.hub.revision:
                    await self.hub.wait_newer(stream.sent_revision)
                wait = last_sent + self._min_interval - time.monotonic()
                if stream.sent_revision and wait > 0:
                    # Coalesce bursts of changes: send only the newest after the pause.
                    await asyncio.sleep(wait)
                state = self.hub.current()
                stream.pending[state.request_id] = state.revision
                stream.sent_revision = state.revision
                last_sent = time.monotonic()
                yield state
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.hub.streams.remove(stream)
            log.info("proxy %s unsubscribed", stream.peer)

    async def _read_acks(
        self, request_iterator: AsyncIterator[pb.PolicyStateResponse], stream: StreamState
    ) -> None:
        async for ack in request_iterator:
            revision = stream.pending.pop(ack.request_id, None)
            if revision is None:
                log.warning("proxy %s acked unknown request %s", stream.peer, ack.request_id)
                continue
            stream.last_ack_code = ack.response
            stream.last_ack_message = ack.message
            if ack.response == pb.RESPONSE_CODE_NO_ERROR:
                stream.acked_revision = max(stream.acked_revision, revision)
            else:
                log.warning(
                    "proxy %s refused snapshot %d: %s %s",
                    stream.peer,
                    revision,
                    pb.ResponseCode.Name(ack.response),
                    ack.message,
                )

    async def UpdateMapping(  # noqa: N802 - gRPC method name
        self,
        request: pb.FQDNMapping,
        context: grpc.aio.ServicerContext[pb.FQDNMapping, pb.UpdateMappingResponse],
    ) -> pb.UpdateMappingResponse:
        """Apply one mapping, then answer."""
        self.mappings_received += 1
        key = request.idempotency_key
        if key:
            seen = self._seen.get(key)
            if seen is not None:
                self.mappings_replayed_duplicates += 1
                return seen
        response = await self._apply(request)
        if key and response.response != pb.RESPONSE_CODE_SERVER_FAILURE:
            self._seen[key] = response
            while len(self._seen) > self._seen_max:
                self._seen.popitem(last=False)
        return response

    async def _apply(self, request: pb.FQDNMapping) -> pb.UpdateMappingResponse:
        if request.response_code != 0 or not request.record_ips:
            # Cilium: only NOERROR answers with addresses change anything.
            return pb.UpdateMappingResponse(response=pb.RESPONSE_CODE_NO_ERROR)
        try:
            mapping = parse_mapping(request, self._wall_clock())
        except InvalidMappingError as exc:
            return pb.UpdateMappingResponse(
                response=pb.RESPONSE_CODE_ERROR_INVALID_ARGUMENT, message=str(exc)
            )
        if not mapping.ips:
            return pb.UpdateMappingResponse(response=pb.RESPONSE_CODE_NO_ERROR)
        try:
            code, message = await self._on_mapping(mapping)
        except Exception as exc:  # a failing backend must not kill the server
            log.exception("applying mapping %s failed", mapping.name)
            return pb.UpdateMappingResponse(
                response=pb.RESPONSE_CODE_SERVER_FAILURE, message=str(exc)
            )
        return pb.UpdateMappingResponse(response=code, message=message)  # type: ignore[arg-type]


async def start_server(
    service: FQDNDataService, socket_path: str | None, tcp_port: int | None = None
) -> grpc.aio.Server:
    """Serve ``service`` on a unix socket (replacing a stale one) and/or loopback TCP."""
    server = grpc.aio.server()
    pb_grpc.add_FQDNDataServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    if socket_path:
        path = Path(socket_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server.add_insecure_port(f"unix://{path}")
    if tcp_port is not None:
        server.add_insecure_port(f"127.0.0.1:{tcp_port}")
    await server.start()
    return server
