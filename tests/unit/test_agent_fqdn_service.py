"""The FQDNData server over a real unix socket, with the memory backend behind it."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import pytest
from prometheus_client import CollectorRegistry

from acns_operator.agent.backends.memory import MemoryBackend
from acns_operator.agent.clock import ManualClock
from acns_operator.agent.datapath import TCP, Datapath, EndpointProgram, FQDNRule, PortRange
from acns_operator.agent.fqdn_service import FQDNDataService, SnapshotHub, start_server
from acns_operator.agent.mapping import MappingApplier
from acns_operator.agent.metrics import AgentMetrics
from acns_operator.agent.persistence import StateFiles
from acns_operator.agent.store import PolicyMapStore
from acns_operator.proto import fqdndata_pb2 as pb
from acns_operator.proto import fqdndata_pb2_grpc as pb_grpc

EP = "10.244.1.20"
PAYMENTS = "name:payments.example.test."


def raw(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


@dataclass
class Agent:
    clock: ManualClock
    store: PolicyMapStore
    backend: MemoryBackend
    service: FQDNDataService
    stub: pb_grpc.FQDNDataStub
    registry: CollectorRegistry
    state_dir: Path


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    clock = ManualClock()
    store = PolicyMapStore(clock)
    backend = MemoryBackend()
    datapath = Datapath(backend, store, clock)
    datapath.set_programs(
        {
            EP: EndpointProgram(
                EP, True, fqdn=(FQDNRule((PAYMENTS,), (PortRange(TCP, 443, 443),), "p"),)
            )
        }
    )
    registry = CollectorRegistry()
    hub = SnapshotHub("node1")
    metrics = AgentMetrics(registry, store, datapath=lambda: datapath, hub=lambda: hub)
    files = StateFiles(tmp_path / "state")
    applier = MappingApplier(store, datapath, endpoints=lambda: {EP}, files=files, metrics=metrics)
    service = FQDNDataService(hub, applier, min_interval=0.2, wall_clock=clock.now)
    socket = tmp_path / "agent.sock"
    server = await start_server(service, str(socket))
    channel = grpc.aio.insecure_channel(f"unix://{socket}")
    stub = pb_grpc.FQDNDataStub(channel)  # type: ignore[no-untyped-call]
    try:
        yield Agent(clock, store, backend, service, stub, registry, tmp_path / "state")
    finally:
        await channel.close()
        await server.stop(None)
        files.close()


def mapping(agent: Agent, **overrides: object) -> pb.FQDNMapping:
    fields: dict[str, object] = {
        "fqdn": "payments.example.test.",
        "record_ips": [raw("192.0.2.10")],
        "ttl": 30,
        "source_ip": raw(EP),
        "lookup_time_unix_ms": int(agent.clock.now() * 1000),
        "idempotency_key": "k-1",
    }
    fields.update(overrides)
    return pb.FQDNMapping(**fields)  # type: ignore[arg-type]


async def test_a_mapping_is_enforced_before_it_is_acknowledged(agent: Agent) -> None:
    response = await agent.stub.UpdateMapping(mapping(agent))
    assert response.response == pb.RESPONSE_CODE_NO_ERROR
    # The answer came back: the backend already allows the address.
    assert agent.backend.verdict(EP, "192.0.2.10", TCP, 443, agent.clock.now()).allowed
    assert agent.store.ips("payments.example.test.") == {"192.0.2.10": agent.clock.now() + 30}
    journal = (agent.state_dir / "journal.jsonl").read_text()
    assert '"n":"payments.example.test."' in journal


async def test_a_replayed_mapping_is_applied_once(agent: Agent) -> None:
    await agent.stub.UpdateMapping(mapping(agent))
    transactions = agent.backend.transactions
    again = await agent.stub.UpdateMapping(mapping(agent, replayed=True))
    assert again.response == pb.RESPONSE_CODE_NO_ERROR
    assert agent.backend.transactions == transactions
    assert agent.service.mappings_replayed_duplicates == 1


async def test_malformed_addresses_are_invalid_arguments_not_crashes(agent: Agent) -> None:
    bad_ip = await agent.stub.UpdateMapping(mapping(agent, record_ips=[b"\x01\x02"]))
    assert bad_ip.response == pb.RESPONSE_CODE_ERROR_INVALID_ARGUMENT
    assert "4 or 16 bytes" in bad_ip.message
    no_source = await agent.stub.UpdateMapping(mapping(agent, source_ip=b"", idempotency_key="k2"))
    assert no_source.response == pb.RESPONSE_CODE_ERROR_INVALID_ARGUMENT
    bad_name = await agent.stub.UpdateMapping(
        mapping(agent, fqdn="bad name\x00", idempotency_key="k3")
    )
    assert bad_name.response == pb.RESPONSE_CODE_ERROR_INVALID_ARGUMENT
    # The server still works.
    ok = await agent.stub.UpdateMapping(mapping(agent, idempotency_key="k4"))
    assert ok.response == pb.RESPONSE_CODE_NO_ERROR


async def test_an_unknown_endpoint_is_reported_as_not_found(agent: Agent) -> None:
    response = await agent.stub.UpdateMapping(mapping(agent, source_ip=raw("10.244.9.9")))
    assert response.response == pb.RESPONSE_CODE_ERROR_ENDPOINT_NOT_FOUND
    assert agent.store.ips("payments.example.test.") == {}


async def test_failed_answers_and_empty_answers_change_nothing(agent: Agent) -> None:
    nx = await agent.stub.UpdateMapping(mapping(agent, response_code=3))
    empty = await agent.stub.UpdateMapping(mapping(agent, record_ips=[], idempotency_key="e"))
    v6 = await agent.stub.UpdateMapping(
        mapping(agent, record_ips=[raw("2001:db8::1")], idempotency_key="v6")
    )
    assert {nx.response, empty.response, v6.response} == {pb.RESPONSE_CODE_NO_ERROR}
    assert agent.store.names() == []


async def test_a_proxy_gets_the_snapshot_at_once_then_only_the_newest_change(
    agent: Agent,
) -> None:
    hub = agent.service.hub
    hub.publish([pb.EndpointPolicy(endpoint_id=1, ips=[raw(EP)], namespace="shop")])
    acks: asyncio.Queue[pb.PolicyStateResponse] = asyncio.Queue()

    async def requests() -> AsyncIterator[pb.PolicyStateResponse]:
        while True:
            yield await acks.get()

    call = agent.stub.StreamPolicyState(requests())
    first = await asyncio.wait_for(call.read(), 5)
    assert isinstance(first, pb.PolicyState)
    assert first.revision == 1
    assert first.endpoints[0].namespace == "shop"
    await acks.put(
        pb.PolicyStateResponse(response=pb.RESPONSE_CODE_NO_ERROR, request_id=first.request_id)
    )
    # A burst of changes arrives as one snapshot: the newest.
    for namespace in ("a", "b", "c"):
        hub.publish([pb.EndpointPolicy(endpoint_id=1, ips=[raw(EP)], namespace=namespace)])
    second = await asyncio.wait_for(call.read(), 5)
    assert isinstance(second, pb.PolicyState)
    assert second.revision == 4
    assert second.endpoints[0].namespace == "c"
    await acks.put(
        pb.PolicyStateResponse(response=pb.RESPONSE_CODE_NO_ERROR, request_id=second.request_id)
    )
    for _ in range(50):
        if hub.all_acked():
            break
        await asyncio.sleep(0.02)
    assert hub.all_acked()
    assert hub.streams[0].acked_revision == 4
    call.cancel()


async def test_the_metrics_read_the_store_at_scrape_time(agent: Agent) -> None:
    await agent.stub.UpdateMapping(mapping(agent))
    value = agent.registry.get_sample_value
    assert value("cilium_fqdn_active_names", {"endpoint": EP}) == 1
    assert value("cilium_fqdn_active_ips", {"endpoint": EP}) == 1
    assert value("cilium_fqdn_alive_zombie_connections", {"endpoint": EP}) == 0
    assert value("cilium_fqdn_selectors") == 1
    assert value("cilium_fqdn_gc_deletions_total") == 0
    assert value("acns_agent_mapping_apply_seconds_count") == 1
    agent.clock.advance(31)
    agent.store.gc(live_connections=set())
    assert value("cilium_fqdn_gc_deletions_total") == 1
    assert value("cilium_fqdn_active_names", {"endpoint": EP}) is None
