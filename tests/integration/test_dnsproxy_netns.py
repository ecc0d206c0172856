"""The DNS proxy in a node namespace, pods' DNS redirected to it with TPROXY.

The pod asks the cluster DNS Service (10.244.250.10:53) as usual; on the node, the
redirect below (a STAND-IN for the agent's nftables backend, issue 6: replace its use
with the agent's redirect once that lands) marks the query ``notrack`` so kube-proxy's
DNAT does not rewrite it, and TPROXYs it to the proxy's port. The proxy sees the
original destination, checks the rule for that server, forwards to the Service address
from the node (where kube-proxy's ``output`` DNAT sends it to the DNS pod), and answers
from 10.244.250.10:53. Every address lives in namespaces these tests create.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from acns_operator.dnsproxy import rules
from acns_operator.dnsproxy.testing import ProxyProcess
from acns_operator.local.fake_agent import FakeAgent
from acns_operator.local.topology import DNS_SERVICE_IP, Cluster, Node, Pod

pytestmark = [pytest.mark.integration, pytest.mark.netns]

PROXY_PORT = 10094
MARK = 0x200
TABLE = 2004


def redirect_dns_to_proxy(node: Node, port: int = PROXY_PORT) -> None:
    """Stand-in for the agent's DNS redirect: TPROXY pods' port-53 traffic to ``port``.

    ``notrack`` at raw priority keeps kube-proxy's DNAT (priority dstnat) away from the
    redirected packets, so the proxy sees the Service address; TPROXY at mangle
    priority hands them to the proxy's transparent socket; the fwmark routes them
    locally (``ip rule fwmark ... lookup 2004`` + ``local 0.0.0.0/0 dev lo``).
    """
    node.netns.nft(
        f"""
table ip acns_test_dns_redirect {{
  chain raw {{
    type filter hook prerouting priority raw; policy accept;
    iifname "lxc*" meta l4proto {{ udp, tcp }} th dport 53 notrack
  }}
  chain mangle {{
    type filter hook prerouting priority mangle; policy accept;
    iifname "lxc*" meta l4proto {{ udp, tcp }} th dport 53 \\
      tproxy to :{port} meta mark set {MARK:#x} accept
  }}
}}
"""
    )
    node.netns.ip(
        f"rule add fwmark {MARK:#x}/0xf00 lookup {TABLE} priority 9",
        f"route add local 0.0.0.0/0 dev lo table {TABLE}",
    )
    # hand half-open TCP connections of a closing listener to the other proxy
    node.netns.set_sysctls({"net.ipv4.tcp_migrate_req": "1"})


def snapshot_for(pods: list[Pod], revision: int = 1) -> rules.SnapshotModel:
    return rules.SnapshotModel.model_validate(
        {
            "revision": revision,
            "request_id": f"netns-{revision}",
            "endpoints": [
                {
                    "endpoint_id": index + 1,
                    "ips": [pod.ip],
                    "namespace": "shop",
                    "pod_name": pod.name,
                    "rules": [
                        {
                            "match_names": ["payments.example.test", "www.example.test"],
                            "match_patterns": ["*.example.test"],
                            "servers": [
                                {"prefixes": [f"{DNS_SERVICE_IP}/32", "10.244.1.53/32"], "port": 53}
                            ],
                            "source": {
                                "kind": "CiliumNetworkPolicy",
                                "namespace": "shop",
                                "name": "egress",
                            },
                        }
                    ],
                }
                for index, pod in enumerate(pods)
            ],
        }
    )


def start_proxy(node: Node, workdir: Path, name: str, **settings: str) -> ProxyProcess:
    values = {
        "listen_address": "0.0.0.0",
        "port": str(PROXY_PORT),
        "transparent": "true",
        "metrics_address": "127.0.0.1",
        "metrics_port": "9964" if name.endswith("a") else "9965",
        "upstream_timeout": "3",
    }
    values.update(settings)
    proxy = ProxyProcess(workdir, values, name=name, netns=node.netns)
    proxy.start()
    return proxy


@pytest.fixture
def pods(cluster: Cluster) -> list[Pod]:
    return [cluster.topology.add_pod("node2", "client"), cluster.topology.add_pod("node2", "other")]


@pytest.fixture
def standalone_proxy(cluster: Cluster, pods: list[Pod], tmp_path: Path) -> Iterator[ProxyProcess]:
    node = cluster.nodes[1]
    rules.save_snapshot(snapshot_for(pods[:1]), tmp_path / "snapshot.json")
    redirect_dns_to_proxy(node)
    proxy = start_proxy(
        node, tmp_path, "proxy-a", agent_address="", rules_file=str(tmp_path / "snapshot.json")
    )
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_pods_query_to_the_dns_service_is_filtered_by_the_proxy_through_tproxy(
    cluster: Cluster, pods: list[Pod], standalone_proxy: ProxyProcess, tcp: bool
) -> None:
    client = pods[0]
    allowed = client.dig("payments.example.test", tcp=tcp)
    one_label = client.dig("api.example.test", tcp=tcp)
    two_labels = client.dig("a.b.example.test", tcp=tcp)
    apex = client.dig("example.test", tcp=tcp)
    denied = client.dig("www.other.test", tcp=tcp)

    assert (allowed.rcode, allowed.addresses) == ("NOERROR", ["192.0.2.10"]), allowed.error
    # the answer came from the Service address the pod asked, over the same transport
    assert f'response_address: "{DNS_SERVICE_IP}"' in allowed.raw
    assert "response_port: 53" in allowed.raw
    assert allowed.protocol == ("TCP" if tcp else "UDP")
    assert (one_label.rcode, one_label.addresses) == ("NOERROR", ["192.0.2.20"])
    assert two_labels.rcode == "REFUSED"
    assert apex.rcode == "REFUSED"
    assert denied.rcode == "REFUSED"
    # forwarded by the proxy from the node (not by the pod), denied never forwarded
    logged = cluster.dns.wait_for_query("payments.example.test")
    assert logged.client_ip == cluster.nodes[1].ip
    assert not [q for q in cluster.dns.queries() if q.name.rstrip(".") == "www.other.test"]
    assert standalone_proxy.metric("cilium_policy_l7_total", rule="denied", proxy_type="fqdn") == 3


def test_a_pod_without_rules_gets_servfail_and_a_large_answer_arrives_over_tcp(
    pods: list[Pod], standalone_proxy: ProxyProcess
) -> None:
    stranger = pods[1]
    big_udp = pods[0].dig("big.example.test", extra=["+ignore", "+noedns"])
    big_tcp = pods[0].dig("big.example.test", tcp=True)

    assert stranger.dig("payments.example.test").rcode == "SERVFAIL"
    assert big_udp.truncated
    assert len(big_tcp.addresses) == 100


@pytest.fixture
async def agent(tmp_path: Path, pods: list[Pod]) -> AsyncIterator[FakeAgent]:
    fake = FakeAgent(rules.to_policy_state(snapshot_for(pods[:1])))
    # a unix socket is a file: the proxy in the node namespace reaches it
    await fake.start(f"unix://{tmp_path / 'agent.sock'}")
    yield fake
    await fake.stop()


async def test_the_mapping_reaches_the_agent_before_the_pod_gets_its_answer(
    cluster: Cluster, pods: list[Pod], agent: FakeAgent, tmp_path: Path
) -> None:
    node = cluster.nodes[1]
    redirect_dns_to_proxy(node)
    agent.ack_delay = 0.05
    proxy = await asyncio.to_thread(
        start_proxy,
        node,
        tmp_path,
        "proxy-a",
        agent_address=f"unix://{tmp_path / 'agent.sock'}",
        rules_file=str(tmp_path / "state" / "snapshot.json"),
    )
    try:
        await agent.wait_for_ack("netns-1")
        started = time.monotonic()
        answer = await asyncio.to_thread(pods[0].dig, "www.example.test")
        finished = time.monotonic()
        [received] = await agent.wait_for_mappings(1)
        assert (answer.rcode, answer.addresses) == ("NOERROR", ["198.51.100.30"])
        assert started < received.received_at < received.acked_at < finished
        assert received.mapping.fqdn == "www.example.test."
        assert received.mapping.source_ip == bytes(int(x) for x in pods[0].ip.split("."))
        assert received.mapping.ttl == 30

        await agent.stop()
        await asyncio.sleep(0.5)
        still = await asyncio.to_thread(pods[0].dig, "payments.example.test")
        refused = await asyncio.to_thread(pods[0].dig, "www.other.test")
        assert (still.rcode, still.addresses) == ("NOERROR", ["192.0.2.10"])
        assert refused.rcode == "REFUSED"
    finally:
        await asyncio.to_thread(proxy.stop)


def test_two_proxies_share_the_port_and_a_sigterm_restart_loses_no_pod_query(
    cluster: Cluster, pods: list[Pod], tmp_path: Path
) -> None:
    node = cluster.nodes[1]
    rules.save_snapshot(snapshot_for(pods[:1]), tmp_path / "snapshot.json")
    redirect_dns_to_proxy(node)
    common = {"agent_address": "", "rules_file": str(tmp_path / "snapshot.json")}
    first = start_proxy(node, tmp_path, "proxy-a", **common)
    second = start_proxy(node, tmp_path, "proxy-b", **common)
    results: list[tuple[str, str | None]] = []
    stop = threading.Event()

    def loop(tcp: bool) -> None:
        names = ["payments.example.test", "api.example.test", "www.other.test"]
        index = 0
        while not stop.is_set() and index < 400:
            name = names[index % 3]
            index += 1
            result = pods[0].dig(name, tcp=tcp, timeout=2.0)
            results.append((f"{name} {'tcp' if tcp else 'udp'}", result.rcode))

    threads = [threading.Thread(target=loop, args=(tcp,)) for tcp in (False, False, True)]
    for thread in threads:
        thread.start()
    replacement: ProxyProcess | None = None
    try:
        time.sleep(1.5)
        assert first.stop() == 0
        replacement = start_proxy(node, tmp_path, "proxy-a", **common)
        time.sleep(1.0)
        assert second.stop() == 0
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        for proxy in (first, second, replacement):
            if proxy is not None:
                proxy.stop()
    failures = [r for r in results if r[1] not in ("NOERROR", "REFUSED")]
    assert len(results) > 30
    assert failures == []
    assert all(
        rcode == ("REFUSED" if name.startswith("www.other") else "NOERROR")
        for name, rcode in results
    )
