"""The nftables backend in a real node namespace: packets, timeouts, restart adoption."""

from __future__ import annotations

import time

import pytest

from acns_operator.agent.backends.nftables import NftablesBackend, NftConfig
from acns_operator.agent.clock import SystemClock
from acns_operator.agent.datapath import (
    TCP,
    Datapath,
    EndpointProgram,
    FQDNRule,
    PeerRule,
    PortRange,
)
from acns_operator.agent.netns import NetnsRunner
from acns_operator.agent.store import PolicyMapStore
from acns_operator.local.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.netns]

NAME = "name:payments.example.test."


def test_the_kernel_enforces_programs_and_learned_ips_and_keeps_them_across_a_restart(
    topology: Topology,
) -> None:
    node = topology.add_node("node1")
    client = topology.add_pod(node, "client")
    topology.add_internet_host("192.0.2.10", "192.0.2.20", "203.0.113.5")
    topology.outside.listen_all(
        [("192.0.2.10", 443), ("192.0.2.10", 80), ("192.0.2.20", 443), ("203.0.113.5", 443)]
    )
    clock = SystemClock()
    backend = NftablesBackend(NftConfig(deny_action="reject"), NetnsRunner(node.netns.name))
    store = PolicyMapStore(clock)
    datapath = Datapath(backend, store, clock)
    datapath.adopt(backend.observe())
    program = EndpointProgram(
        ip=client.ip,
        enforced=True,
        deny=(PeerRule(("203.0.113.0/24",), (), "deny"),),
        allow=(PeerRule(("192.0.2.20/32",), (PortRange(TCP, 443, 443),), "allow"),),
        fqdn=(FQDNRule((NAME,), (PortRange(TCP, 443, 443),), "fqdn"),),
    )
    datapath.set_programs({client.ip: program})
    assert client.tcp_connect("192.0.2.20", 443), "an L3/L4 peer"
    assert not client.tcp_connect("192.0.2.10", 443, timeout=1), "not resolved yet"
    assert not client.tcp_connect("203.0.113.5", 443, timeout=1), "denied"

    datapath.on_mapping(store.record(client.ip, "payments.example.test.", ["192.0.2.10"], 2))
    assert client.tcp_connect("192.0.2.10", 443), "learned through DNS"
    assert not client.tcp_connect("192.0.2.10", 80, timeout=1), "only on the rule's port"
    held = client.open_connection("192.0.2.10", 443)
    time.sleep(2.5)
    assert not client.tcp_connect("192.0.2.10", 443, timeout=1), "the element timed out"
    assert held.is_alive(), "established connections are kept"

    # A second backend (a restarted agent) adopts the table instead of rebuilding it.
    datapath.on_mapping(store.record(client.ip, "payments.example.test.", ["192.0.2.10"], 300))
    backend.close()
    again = NftablesBackend(NftConfig(deny_action="reject"), NetnsRunner(node.netns.name))
    observed = again.observe()
    assert observed.fingerprints == {client.ip: program.fingerprint()}
    assert set(observed.elements[NAME]) == {"192.0.2.10"}
    restarted = Datapath(again, PolicyMapStore(clock), clock)
    restarted.adopt(observed)
    assert not restarted.set_programs({client.ip: program}), "nothing to change"
    assert client.tcp_connect("192.0.2.10", 443)

    restarted.set_programs({})
    assert client.tcp_connect("203.0.113.5", 443), "no program: nothing enforced"
    assert NAME not in again.list_ruleset()
    again.close()
