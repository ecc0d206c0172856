"""The network-namespace harness works: DNS through the Service, TCP to test hosts, teardown.

Every address used here lives inside namespaces these tests create (see the address plan
in ``acns_operator.local.topology``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from acns_operator.local.dnsserver import DnsRecord, DnsZone
from acns_operator.local.netns import Netns, cleanup_stale_runs, process_start_ticks
from acns_operator.local.topology import (
    DNS_SERVICE_IP,
    KUBE_PROXY_TABLE,
    Cluster,
    Topology,
    build_cluster,
    list_namespaces,
)

pytestmark = [pytest.mark.integration, pytest.mark.netns]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_pod_on_another_node_resolves_a_test_name_through_the_dns_service_ip(
    cluster: Cluster, tcp: bool
) -> None:
    client = cluster.topology.add_pod("node2", "client")
    assert client.node is not cluster.dns_pod.node

    result = client.dig("payments.example.test", DNS_SERVICE_IP, tcp=tcp)

    assert result.rcode == "NOERROR", result.error
    assert result.addresses == ["192.0.2.10"]
    assert result.ttl == 300
    assert result.protocol == ("TCP" if tcp else "UDP")
    # The query crossed node2 -> router -> node1 unmasqueraded: the server saw the pod.
    logged = cluster.dns.wait_for_query("payments.example.test")
    assert logged.client_ip == client.ip


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_pod_resolves_a_test_name_directly_from_the_dns_pod(cluster: Cluster, tcp: bool) -> None:
    client = cluster.topology.add_pod("node2", "client")

    result = client.dig("api.example.test", cluster.dns.ip, tcp=tcp)

    assert result.rcode == "NOERROR", result.error
    assert result.addresses == ["192.0.2.20"]


def test_a_pod_on_the_dns_pods_own_node_and_a_node_itself_resolve_through_the_service_ip(
    cluster: Cluster,
) -> None:
    neighbour = cluster.topology.add_pod("node1", "neighbour")

    from_pod = neighbour.dig("payments.example.test")
    from_node = cluster.nodes[1].dig("payments.example.test", tcp=True)

    assert (from_pod.rcode, from_pod.addresses) == ("NOERROR", ["192.0.2.10"])
    assert (from_node.rcode, from_node.addresses) == ("NOERROR", ["192.0.2.10"])


def test_a_name_the_zone_does_not_hold_is_nxdomain(cluster: Cluster) -> None:
    client = cluster.topology.add_pod("node2", "client")

    in_zone = client.dig("missing.example.test")
    elsewhere = client.dig("www.unknown.test", tcp=True)

    assert in_zone.rcode == "NXDOMAIN"
    assert in_zone.answers == ()
    assert elsewhere.rcode == "NXDOMAIN"


def test_the_default_zone_serves_a_cname_chain_many_addresses_aaaa_and_a_truncated_answer(
    cluster: Cluster,
) -> None:
    client = cluster.topology.add_pod("node2", "client")

    chain = client.dig("www.example.test")
    many = client.dig("many.example.test")
    aaaa = client.dig("v6.example.test", qtype="AAAA")
    big_udp_only = client.dig("big.example.test", extra=["+ignore"])
    big = client.dig("big.example.test")

    assert [(a.type, a.data) for a in chain.answers] == [
        ("CNAME", "edge.example.test."),
        ("CNAME", "cdn.example.test."),
        ("A", "198.51.100.30"),
    ]
    assert chain.ttl == 30
    assert sorted(many.addresses) == sorted(f"203.0.113.{i}" for i in range(1, 17))
    assert aaaa.addresses == ["2001:db8::40"]
    assert big_udp_only.truncated
    assert big.protocol == "TCP"
    assert len(big.addresses) == 100


def test_changed_records_and_short_ttls_are_served_after_an_update(cluster: Cluster) -> None:
    client = cluster.topology.add_pod("node2", "client")
    zone = cluster.zone.with_address("payments.example.test", "192.0.2.11", ttl=1).with_records(
        DnsRecord("new.example.test", "A", "198.51.100.77", ttl=5)
    )

    cluster.dns.update(zone)
    moved = client.dig("payments.example.test")
    added = client.dig("new.example.test", tcp=True)

    assert (moved.addresses, moved.ttl) == (["192.0.2.11"], 1)
    assert (added.addresses, added.ttl) == (["198.51.100.77"], 5)
    assert cluster.dns.restarts == 1


def test_a_pod_connects_over_tcp_to_an_internet_test_host_and_nowhere_else(
    cluster: Cluster,
) -> None:
    client = cluster.topology.add_pod("node2", "client")

    assert client.tcp_connect("192.0.2.10", 443)
    assert not client.tcp_connect("192.0.2.10", 8443)  # the host exists, the port is closed
    assert not client.tcp_connect("192.0.2.99", 443, timeout=1.0)  # no such host


def test_a_held_connection_stays_alive_until_its_listener_closes_it(cluster: Cluster) -> None:
    client = cluster.topology.add_pod("node2", "client")
    listener = cluster.topology.start_tcp_listener("203.0.113.50", 9000)

    connection = client.open_connection("203.0.113.50", 9000)
    alive_while_open = connection.is_alive()
    connections_seen = listener.connections()
    listener.close()

    assert alive_while_open
    assert connections_seen == 1
    assert not connection.is_alive()


def test_a_pod_reaches_a_listener_in_a_pod_on_another_node(topology: Topology) -> None:
    topology.add_node("node1")
    topology.add_node("node2")
    backend = topology.add_pod("node1", "backend")
    frontend = topology.add_pod("node2", "frontend")
    topology.start_tcp_listener(backend.ip, 8080)

    connection = frontend.open_connection(backend.ip, 8080)

    assert connection.is_alive()
    assert backend.ip.startswith("10.244.1.")
    assert frontend.ip.startswith("10.244.2.")


def test_an_internet_dns_server_answers_from_the_outside_namespace(topology: Topology) -> None:
    node = topology.add_node("node1")
    pod = topology.add_pod(node, "client")
    zone = DnsZone(records=(DnsRecord("upstream.example.test", "A", "203.0.113.9"),))

    server = topology.start_internet_dns_server(zone)
    result = pod.dig("upstream.example.test", server.ip)

    assert (result.rcode, result.addresses) == ("NOERROR", ["203.0.113.9"])


def test_every_node_gets_the_kube_proxy_table_and_the_outside_has_no_route_out(
    cluster: Cluster,
) -> None:
    late_node = cluster.topology.add_node("node3")
    outside = cluster.topology.outside

    rules = late_node.run(["nft", "list", "table", "ip", KUBE_PROXY_TABLE], check=True).stdout
    # A route lookup only: no packet is sent.
    lookup = outside.run(["ip", "route", "get", "100.64.0.1"])

    assert f"ip daddr {DNS_SERVICE_IP} udp dport 53 dnat to {cluster.dns.ip}:53" in rules
    assert f"ip daddr {DNS_SERVICE_IP} tcp dport 53 dnat to {cluster.dns.ip}:53" in rules
    assert outside.run(["ip", "route", "show", "default"]).stdout.strip() == ""
    assert lookup.returncode != 0
    assert "unreachable" in lookup.stderr


def test_teardown_leaves_no_namespaces_and_no_processes_behind(
    netns_prerequisites: None, tmp_path: Path
) -> None:
    with Topology(workdir=tmp_path / "netns", registry_dir=tmp_path / "registry") as topo:
        cluster = build_cluster(topo)
        client = topo.add_pod("node2", "client")
        client.open_connection("192.0.2.10", 443)
        client.spawn(["sleep", "120"], name="sleeper")
        # A process the harness did not start itself, detached inside the pod.
        client.run(["sh", "-c", "sleep 120 >/dev/null 2>&1 &"], check=True)
        stray = Netns(client.netns.name).pids()
        assert client.dig("payments.example.test").rcode == "NOERROR"
        names = topo.namespace_names()
        pids = [*topo.process_ids(), *stray]
        assert cluster.dns.pid in pids
        assert all(name in list_namespaces() for name in names)

    assert [name for name in list_namespaces() if name.startswith(topo.prefix)] == []
    assert [pid for pid in pids if _running(pid)] == []
    assert list((tmp_path / "registry").iterdir()) == []


def test_stale_cleanup_removes_only_namespaces_of_runs_whose_owner_died(
    netns_prerequisites: None, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    token = os.urandom(3).hex()
    stale = Netns.create(f"acns-{token}-stale")
    live = Netns.create(f"acns-{token}-live")
    try:
        # Above the kernel's largest possible PID (2**22): an owner that cannot be alive.
        _write_record(registry, "aaaaaa", 2**22 + 1, [stale.name])
        _write_record(registry, "bbbbbb", os.getpid(), [live.name], live_owner=True)

        removed = cleanup_stale_runs(registry)

        assert removed == [stale.name]
        assert not stale.exists()
        assert live.exists()
        assert sorted(path.name for path in registry.iterdir()) == ["bbbbbb.json"]
    finally:
        stale.delete()
        live.delete()


def _write_record(
    registry: Path, run_id: str, pid: int, namespaces: list[str], *, live_owner: bool = False
) -> None:
    record = {
        "run_id": run_id,
        "owner_pid": pid,
        "owner_start_ticks": process_start_ticks(pid) if live_owner else None,
        "namespaces": namespaces,
    }
    (registry / f"{run_id}.json").write_text(json.dumps(record))


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphan init has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
