"""The proxy against the agent's real FQDNData service (the contract, end to end).

The agent's gRPC service (:mod:`acns_operator.agent.fqdn_service`) runs in the test
process with a recording mapping handler instead of the store and enforcement backend;
the proxy is a real process on loopback in front of a real dnsmasq.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc.aio
import pytest

from acns_operator.agent.fqdn_service import (
    FQDNDataService,
    MappingRequest,
    SnapshotHub,
    start_server,
)
from acns_operator.dnsproxy import rules
from acns_operator.dnsproxy.testing import (
    LoopbackDnsmasq,
    ProxyProcess,
    loopback_settings,
    query,
)
from acns_operator.local.dnsserver import default_test_zone
from acns_operator.proto import fqdndata_pb2 as pb

pytestmark = [pytest.mark.slow]


class Recorder:
    """A mapping handler that records what it applied and when."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.applied: list[tuple[MappingRequest, float]] = []

    async def __call__(self, mapping: MappingRequest) -> tuple[int, str]:
        await asyncio.sleep(self.delay)  # the enforcement backend's work
        self.applied.append((mapping, time.monotonic()))
        return pb.RESPONSE_CODE_NO_ERROR, ""


def endpoints() -> list[pb.EndpointPolicy]:
    model = rules.SnapshotModel.model_validate(
        {
            "endpoints": [
                {
                    "endpoint_id": 3,
                    "ips": ["127.0.0.1"],
                    "namespace": "shop",
                    "pod_name": "backend-0",
                    "rules": [{"match_patterns": ["*.example.test"]}],
                }
            ]
        }
    )
    return list(rules.to_policy_state(model).endpoints)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackDnsmasq]:
    server = LoopbackDnsmasq(default_test_zone(), tmp_path_factory.mktemp("dnsmasq"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[SnapshotHub, Recorder, grpc.aio.Server]]:
    hub = SnapshotHub("loopback")
    recorder = Recorder(delay=0.03)
    service = FQDNDataService(hub, recorder, min_interval=0.0)
    server = await start_server(service, str(tmp_path / "agent.sock"))
    yield hub, recorder, server
    await server.stop(None)


async def test_the_agents_snapshot_is_acked_and_its_mappings_applied_before_the_reply(
    agent: tuple[SnapshotHub, Recorder, grpc.aio.Server], upstream: LoopbackDnsmasq, tmp_path: Path
) -> None:
    hub, recorder, _server = agent
    proxy = ProxyProcess(
        tmp_path,
        loopback_settings(
            upstream.address,
            tmp_path / "state" / "snapshot.json",
            agent_address=f"unix://{tmp_path / 'agent.sock'}",
        ),
    )
    await asyncio.to_thread(proxy.start)
    try:
        server = proxy.address
        # connected before the agent has any snapshot: no rules yet, SERVFAIL
        deadline = time.monotonic() + 10
        while proxy.metric("acns_dnsproxy_agent_connected") != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await query(server, "payments.example.test")).rcode == "SERVFAIL"

        revision = hub.publish(endpoints())
        while not hub.all_acked():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert hub.streams[0].acked_revision == revision

        answer = await query(server, "www.example.test")
        assert (answer.rcode, answer.addresses) == ("NOERROR", ["198.51.100.30"])
        [(mapping, applied_at)] = recorder.applied
        assert applied_at <= answer.received_at
        assert answer.received_at - answer.sent_at >= 0.03
        assert mapping.endpoint == "127.0.0.1"
        assert mapping.name == "www.example.test."
        assert mapping.ips == ("198.51.100.30",)
        assert mapping.ttl == 30
        assert not mapping.replayed
        assert (await query(server, "www.other.test")).rcode == "REFUSED"
    finally:
        await asyncio.to_thread(proxy.stop)
