"""The agent program's event handling, with the memory backend and no API server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from acns_operator.agent.app import Agent
from acns_operator.agent.backends.memory import MemoryBackend
from acns_operator.agent.clock import ManualClock
from acns_operator.agent.datapath import TCP
from acns_operator.settings import AgentSettings, PolicySettings

NODE = "node1"


def pod(name: str, labels: dict[str, str], ip: str, node: str = NODE) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name, "labels": labels},
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "podIP": ip},
    }


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    }


FRONTEND_EGRESS = policy(
    "frontend-egress",
    {
        "endpointSelector": {"matchLabels": {"app": "frontend"}},
        "egress": [
            {
                "toEndpoints": [{"matchLabels": {"app": "backend"}}],
                "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}],
            }
        ],
    },
)


@pytest.fixture
async def agent(tmp_path: Path) -> Agent:
    settings = AgentSettings(
        node_name=NODE,
        backend="memory",
        state_dir=str(tmp_path / "state"),
        conntrack="none",
        grpc_socket=str(tmp_path / "agent.sock"),
    )
    this = Agent(
        settings,
        PolicySettings(),
        backend=MemoryBackend(),
        clock=ManualClock(),
        registry=CollectorRegistry(),
    )
    await this._namespace_event("ADDED", {"metadata": {"name": "shop"}})
    await this._pod_event("ADDED", pod("frontend", {"app": "frontend"}, "10.244.1.10"))
    await this._pod_event("ADDED", pod("backend", {"app": "backend"}, "10.244.2.11", "node2"))
    await this._policy_event("ADDED", FRONTEND_EGRESS)
    this._full_sync()
    return this


def backend_of(agent: Agent) -> MemoryBackend:
    assert isinstance(agent.backend, MemoryBackend)
    return agent.backend


async def test_the_full_sync_enforces_the_compiled_programs(agent: Agent) -> None:
    backend = backend_of(agent)
    now = agent.clock.now()
    assert backend.verdict("10.244.1.10", "10.244.2.11", TCP, 8080, now).allowed
    assert not backend.verdict("10.244.1.10", "10.244.2.11", TCP, 22, now).allowed
    assert agent.status()["synced"]
    assert agent.hub.revision == 1


async def test_a_new_peer_pod_is_allowed_after_an_incremental_recompile(agent: Agent) -> None:
    await agent._pod_event("ADDED", pod("backend-2", {"app": "backend"}, "10.244.3.12", "n3"))
    assert agent._pending == {"shop/frontend"}
    agent.recompile(agent._pending)
    assert backend_of(agent).verdict("10.244.1.10", "10.244.3.12", TCP, 8080, 0.0).allowed


async def test_a_blocked_policy_replacing_an_admitted_one_stops_being_enforced(
    agent: Agent,
) -> None:
    blocked = policy(
        "frontend-egress",
        {
            "endpointSelector": {"matchLabels": {"app": "frontend"}},
            "egress": [{"toFQDNs": [{"matchPattern": "*"}]}],
        },
    )
    await agent._policy_event("MODIFIED", blocked)
    agent.recompile(agent._pending)
    assert "CiliumNetworkPolicy/shop/frontend-egress" in agent.blocked_policies
    assert backend_of(agent).programs == {}
    assert agent.hub.revision == 1, "no DNS rules changed: no new snapshot"


async def test_a_relist_drops_what_was_deleted_while_the_watch_was_down(agent: Agent) -> None:
    blocked = policy(
        "match-all",
        {
            "endpointSelector": {"matchLabels": {"app": "frontend"}},
            "egress": [{"toFQDNs": [{"matchPattern": "*"}]}],
        },
    )
    await agent._policy_event("ADDED", blocked)
    assert "CiliumNetworkPolicy/shop/match-all" in agent.blocked_policies
    # Both policies and the peer pod went away while the API server was unreachable.
    await agent._replace_policies([])
    await agent._replace_pods([pod("frontend", {"app": "frontend"}, "10.244.1.10")])
    agent.recompile(agent._pending)
    assert agent.blocked_policies == {}
    assert agent.compiler.policy_keys() == []
    assert set(agent.compiler.pods) == {"shop/frontend"}
    assert backend_of(agent).programs == {}


async def test_a_deleted_local_pod_loses_its_program_and_its_cache(agent: Agent) -> None:
    agent.store.record("10.244.1.10", "payments.example.test.", ["192.0.2.10"], 60)
    await agent._pod_event("DELETED", pod("frontend", {"app": "frontend"}, "10.244.1.10"))
    agent.recompile(agent._pending)
    assert backend_of(agent).programs == {}
    assert agent.store.endpoints() == []


async def test_a_resync_rebuilds_the_datapath_from_the_backend_and_the_compiler(
    agent: Agent,
) -> None:
    backend = backend_of(agent)
    backend.programs.clear()  # the kernel lost state behind the agent's back
    agent.resync_datapath()
    assert backend.verdict("10.244.1.10", "10.244.2.11", TCP, 8080, 0.0).allowed
    assert agent.applier.datapath is agent.datapath


async def test_the_inspection_api_lists_the_cache_explains_and_serves_metrics(
    agent: Agent,
) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from click.testing import CliRunner

    from acns_operator.agent.inspect import make_app
    from acns_operator.commands.fqdn_cache import cache

    agent.store.record("10.244.1.10", "payments.example.test.", ["192.0.2.10"], 60)
    async with TestClient(TestServer(make_app(agent))) as client:
        assert (await client.get("/readyz")).status == 200
        body = await (await client.get("/v1/fqdn/cache?name=payments.example.test")).json()
        assert [(e["endpoint"], e["ip"], e["source"]) for e in body["entries"]] == [
            ("10.244.1.10", "192.0.2.10", "lookup")
        ]
        explained = await (
            await client.get("/v1/explain?pod=shop/frontend&fqdn=x.example.test&port=443")
        ).json()
        assert explained["allowed"] is False
        assert "default deny" in explained["reason"]
        remote = await client.get("/v1/explain?pod=shop/backend&fqdn=x.example.test")
        assert remote.status == 404
        assert "node2" in (await remote.json())["error"]
        metrics = await (await client.get("/metrics")).text()
        assert 'cilium_fqdn_active_names{endpoint="10.244.1.10"} 1.0' in metrics
        url = str(client.make_url(""))
        result = await asyncio.to_thread(
            CliRunner().invoke, cache, ["list", "--agent-url", url, "--endpoint", "10.244.1.10"]
        )
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == ["Endpoint", "Source", "FQDN", "TTL", "ExpirationTime", "IPs"]
    assert row.split()[:4] == ["10.244.1.10", "lookup", "payments.example.test.", "60"]
    assert row.split()[-1] == "192.0.2.10"


def test_auto_falls_back_to_the_memory_backend_when_nftables_cannot_be_used() -> None:
    from acns_operator.agent.backends import create_backend

    unusable = AgentSettings(backend="auto", netns="acns-no-such-namespace")
    assert isinstance(create_backend(unusable), MemoryBackend)
    assert isinstance(create_backend(AgentSettings(backend="memory")), MemoryBackend)
