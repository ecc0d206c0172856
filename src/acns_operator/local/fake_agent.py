"""A test stand-in for the agent's side of the FQDNData gRPC service.

It serves ``StreamPolicyState`` (pushes the snapshot it holds to every connected proxy
and records the acks) and ``UpdateMapping`` (records each mapping with the monotonic
time it arrived and the time it was acked, after an optional delay), so a test can
check that a DNS reply was released only after the agent had the mapping. Clock:
``time.monotonic`` (CLOCK_MONOTONIC is system-wide on Linux, so the times compare
with those taken in other processes).

Runs on the caller's asyncio loop::

    agent = FakeAgent(state)
    await agent.start("unix:///tmp/agent.sock")
    ...
    await agent.stop()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from acns_operator.errors import HarnessError
from acns_operator.proto import fqdndata_pb2 as pb
from acns_operator.proto import fqdndata_pb2_grpc as pb_grpc


@dataclass(frozen=True, slots=True)
class ReceivedMapping:
    """A mapping as the fake agent saw it."""

    mapping: pb.FQDNMapping
    received_at: float
    acked_at: float


class FakeAgent(pb_grpc.FQDNDataServicer):
    """Serves FQDNData for tests: holds a snapshot, records acks and mappings."""

    def __init__(
        self,
        state: pb.PolicyState | None = None,
        *,
        ack_delay: float = 0.0,
        response: int = pb.RESPONSE_CODE_NO_ERROR,
    ) -> None:
        """``ack_delay``: seconds before each mapping is acked; ``response``: its code."""
        self.state = state
        self.ack_delay = ack_delay
        self.response = response
        self.mappings: list[ReceivedMapping] = []
        self.acks: list[pb.PolicyStateResponse] = []
        self.streams = 0
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Condition()
        self._version = 0

    async def start(self, address: str) -> None:
        """Serve on ``unix:///path`` or ``127.0.0.1:port``."""
        server = grpc.aio.server()
        pb_grpc.add_FQDNDataServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
            raise HarnessError(f"fake agent cannot listen on {address}")
        await server.start()
        self._server = server

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving (streams are cut, as when the agent dies)."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def push(self, state: pb.PolicyState) -> None:
        """Replace the snapshot and push it to every connected proxy."""
        async with self._changed:
            self.state = state
            self._version += 1
            self._changed.notify_all()

    async def wait_for_ack(self, request_id: str, limit: float = 5.0) -> pb.PolicyStateResponse:
        """Wait until a proxy acked the snapshot ``request_id``."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for ack in self.acks:
                if ack.request_id == request_id:
                    return ack
            await asyncio.sleep(0.01)
        raise HarnessError(f"no ack for snapshot {request_id} within {limit} s")

    async def wait_for_mappings(self, count: int, limit: float = 5.0) -> list[ReceivedMapping]:
        """Wait until at least ``count`` mappings arrived; return them all."""
        deadline = time.monotonic() + limit
        while len(self.mappings) < count:
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{len(self.mappings)} mappings arrived within {limit} s, expected {count}"
                )
            await asyncio.sleep(0.01)
        return list(self.mappings)

    # ------------------------------------------------------------- the service

    async def StreamPolicyState(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[pb.PolicyStateResponse], context: Any
    ) -> AsyncIterator[pb.PolicyState]:
        """Push the current snapshot now and each new one later; record the acks."""
        self.streams += 1

        async def read_acks() -> None:
            async for ack in request_iterator:
                self.acks.append(ack)

        reader = asyncio.get_running_loop().create_task(read_acks())
        try:
            seen = [-1]
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: self._version != seen[0])
                    seen[0] = self._version
                    state = self.state
                if state is not None:
                    yield state
        finally:
            reader.cancel()

    async def UpdateMapping(  # noqa: N802 - the gRPC method name
        self, request: pb.FQDNMapping, context: Any
    ) -> pb.UpdateMappingResponse:
        """Record the mapping, wait ``ack_delay``, answer ``response``."""
        received = time.monotonic()
        if self.ack_delay:
            await asyncio.sleep(self.ack_delay)
        acked = time.monotonic()
        self.mappings.append(ReceivedMapping(request, received, acked))
        return pb.UpdateMappingResponse(response=self.response)  # type: ignore[arg-type]
