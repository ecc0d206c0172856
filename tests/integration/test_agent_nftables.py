"""The nftables backend in a real node namespace: packets, timeouts, restart adoption."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time

import pytest

from acns_operator.agent.backends.nftables import NftablesBackend, NftConfig
from acns_operator.agent.clock import SystemClock
from acns_operator.agent.datapath import (
    ICMP,
    TCP,
    Datapath,
    EndpointProgram,
    FQDNRule,
    PeerRule,
    PortRange,
)
from acns_operator.agent.netns import NetnsRunner
from acns_operator.agent.store import PolicyMapStore
from acns_operator.local.topology import Pod, Topology

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


_IDENTS = itertools.count(1)


def _icmp_request(pod: Pod, destination: str, icmp_type: int, timeout: float = 1.0) -> bool:
    """Send one ICMP request (echo 8 or timestamp 13) from ``pod``; True when answered.

    A raw socket in the pod's namespace, like ``ping -c1 -W1`` (no ping binary needed).
    """
    reply_type = {8: 0, 13: 14}[icmp_type]
    # A fresh identifier each time: conntrack keys ICMP on it, and an earlier answered
    # request must not make this one "established".
    ident = (os.getpid() + next(_IDENTS)) & 0xFFFF
    payload = bytes(12) if icmp_type == 13 else b"acns-icmp-test"
    header = struct.pack("!BBHHH", icmp_type, 0, 0, ident, 1)
    checksum = _checksum(header + payload)
    packet = struct.pack("!BBHHH", icmp_type, 0, checksum, ident, 1) + payload
    with pod.netns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (destination, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, (source, _) = sock.recvfrom(1024)
            except TimeoutError:
                return False
            offset = (data[0] & 0x0F) * 4  # past the IPv4 header
            kind, _, _, got_ident, _ = struct.unpack("!BBHHH", data[offset : offset + 8])
            if source == destination and kind == reply_type and got_ident == ident:
                return True
    return False


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def test_the_kernel_allows_icmp_only_of_the_allowed_types_to_the_allowed_hosts(
    topology: Topology,
) -> None:
    node = topology.add_node("node1")
    client = topology.add_pod(node, "client")
    topology.add_internet_host("192.0.2.10", "192.0.2.20", "198.51.100.7")
    topology.outside.listen_all([("192.0.2.10", 443)])
    assert _icmp_request(client, "192.0.2.20", 8), "reachable before any program"
    clock = SystemClock()
    backend = NftablesBackend(NftConfig(deny_action="drop"), NetnsRunner(node.netns.name))
    datapath = Datapath(backend, PolicyMapStore(clock), clock)
    datapath.adopt(backend.observe())
    program = EndpointProgram(
        ip=client.ip,
        enforced=True,
        deny=(PeerRule(("198.51.100.7/32",), (PortRange(ICMP, 8, 8),), "deny echo"),),
        allow=(
            PeerRule(("192.0.2.10/32",), (PortRange(ICMP, 8, 8),), "echo to .10"),
            PeerRule(("192.0.2.20/32",), (PortRange(ICMP, 13, 13),), "timestamp to .20"),
            PeerRule(("198.51.100.0/24",), (PortRange(ICMP, 8, 8),), "echo to the /24"),
        ),
    )
    try:
        datapath.set_programs({client.ip: program})
        assert _icmp_request(client, "192.0.2.10", 8), "an allowed type to an allowed host"
        assert not _icmp_request(client, "192.0.2.10", 13), "another type to that host"
        assert _icmp_request(client, "192.0.2.20", 13), "the type allowed to .20"
        assert not _icmp_request(client, "192.0.2.20", 8), "echo to .20 is not allowed"
        assert not _icmp_request(client, "198.51.100.7", 8), "the deny rule wins"
        assert not client.tcp_connect("192.0.2.10", 443, timeout=1), "ICMP opens no ports"
    finally:
        datapath.set_programs({})
        backend.close()
    assert _icmp_request(client, "192.0.2.20", 8), "no program: nothing enforced"
