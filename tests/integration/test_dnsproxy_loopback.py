"""The DNS proxy as a real process on loopback, in front of a real dnsmasq.

Standalone mode (rules from a snapshot file) and agent mode (rules and mapping acks
from a fake FQDNData agent on a unix socket). Every address is on loopback; the
answers come from the harness's test zone (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dnslib
import pytest

from acns_operator.dnsproxy import rules
from acns_operator.dnsproxy.testing import (
    LoopbackDnsmasq,
    ProxyProcess,
    free_port,
    loopback_settings,
    query,
)
from acns_operator.local.dnsserver import default_test_zone
from acns_operator.local.fake_agent import FakeAgent
from acns_operator.local.prometheus import PrometheusServer
from acns_operator.proto import fqdndata_pb2 as pb

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # root: IP_TRANSPARENT listeners

ALLOWED_NAMES = ["payments.example.test", "big.example.test", "www.example.test"]
ALLOWED_PATTERNS = ["*.example.test"]


def snapshot(
    revision: int = 1, *, names: list[str] | None = None, search_suffixes: list[str] | None = None
) -> rules.SnapshotModel:
    return rules.SnapshotModel.model_validate(
        {
            "revision": revision,
            "request_id": f"snapshot-{revision}",
            "node_name": "loopback",
            "endpoints": [
                {
                    "endpoint_id": 1,
                    "ips": ["127.0.0.1"],
                    "namespace": "shop",
                    "pod_name": "backend-0",
                    "search_suffixes": search_suffixes or [],
                    "rules": [
                        {
                            "match_names": ALLOWED_NAMES if names is None else names,
                            "match_patterns": ALLOWED_PATTERNS,
                            "source": {
                                "kind": "CiliumNetworkPolicy",
                                "namespace": "shop",
                                "name": "backend-egress",
                                "path": "spec.egress[0].toPorts[0].rules.dns",
                            },
                        }
                    ],
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackDnsmasq]:
    server = LoopbackDnsmasq(
        default_test_zone(), tmp_path_factory.mktemp("dnsmasq"), log_queries=True
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def standalone(
    upstream: LoopbackDnsmasq, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("standalone")
    rules.save_snapshot(snapshot(), workdir / "snapshot.json")
    proxy = ProxyProcess(workdir, loopback_settings(upstream.address, workdir / "snapshot.json"))
    proxy.start()
    yield proxy
    proxy.stop()


def agent_proxy(tmp_path: Path, upstream: LoopbackDnsmasq, **extra: str) -> ProxyProcess:
    settings = loopback_settings(
        upstream.address,
        tmp_path / "state" / "snapshot.json",
        agent_address=f"unix://{tmp_path / 'agent.sock'}",
        # the listener path that reads each datagram's original destination
        transparent=True,
        agent_reconnect_interval="0.2",
    )
    settings.update(extra)
    return ProxyProcess(tmp_path, settings)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[FakeAgent]:
    fake = FakeAgent(rules.to_policy_state(snapshot()))
    await fake.start(f"unix://{tmp_path / 'agent.sock'}")
    yield fake
    await fake.stop()


@pytest.fixture
async def connected(
    agent: FakeAgent, tmp_path: Path, upstream: LoopbackDnsmasq
) -> AsyncIterator[ProxyProcess]:
    proxy = agent_proxy(tmp_path, upstream)
    await asyncio.to_thread(proxy.start)
    await agent.wait_for_ack("snapshot-1")
    yield proxy
    await asyncio.to_thread(proxy.stop)


# ------------------------------------------------------------------ standalone


async def test_an_allowed_name_resolves_to_the_test_hosts_address(standalone: ProxyProcess) -> None:
    answer = await query(standalone.address, "payments.example.test")
    assert answer.rcode == "NOERROR"
    assert answer.addresses == ["192.0.2.10"]


async def test_a_denied_name_is_refused_at_once_and_never_reaches_the_upstream(
    standalone: ProxyProcess, upstream: LoopbackDnsmasq
) -> None:
    answer = await query(standalone.address, "www.other.test")
    assert answer.rcode == "REFUSED"
    assert answer.record.rr == []
    # the upstream serves this name; it was never asked
    assert not upstream.queried("www.other.test")
    await query(standalone.address, "payments.example.test")
    assert upstream.queried("payments.example.test")


async def test_a_single_label_wildcard_allows_one_label_but_not_two_and_not_the_apex(
    standalone: ProxyProcess,
) -> None:
    one = await query(standalone.address, "api.example.test")
    two = await query(standalone.address, "a.b.example.test")
    apex = await query(standalone.address, "example.test")
    assert (one.rcode, one.addresses) == ("NOERROR", ["192.0.2.20"])
    assert two.rcode == "REFUSED"
    assert apex.rcode == "REFUSED"


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_the_reply_keeps_the_clients_id_and_letter_case(
    standalone: ProxyProcess, tcp: bool
) -> None:
    for name in ("PayMents.Example.TEST", "WWW.Other.Test"):
        record = dnslib.DNSRecord.question(name)
        record.header.id = 4321
        answer = await query(standalone.address, packet=record.pack(), tcp=tcp)
        assert answer.record.header.id == 4321
        assert str(answer.record.q.qname) == name + "."


async def test_tcp_queries_work_and_a_large_answer_arrives_whole(standalone: ProxyProcess) -> None:
    small = await query(standalone.address, "payments.example.test", tcp=True)
    big = await query(standalone.address, "big.example.test", tcp=True)
    denied = await query(standalone.address, "www.other.test", tcp=True)
    assert small.addresses == ["192.0.2.10"]
    assert len(big.addresses) == 100
    assert len(big.raw or b"") > 1232
    assert denied.rcode == "REFUSED"


async def test_a_truncated_udp_answer_passes_through_and_edns0_carries_the_large_one(
    standalone: ProxyProcess,
) -> None:
    plain = await query(standalone.address, "big.example.test")
    with_edns = await query(standalone.address, "big.example.test", edns=4096)
    assert plain.record.header.tc == 1
    assert with_edns.record.header.tc == 0
    assert len(with_edns.addresses) == 100


async def test_a_cname_chain_is_answered_whole(standalone: ProxyProcess) -> None:
    answer = await query(standalone.address, "www.example.test")
    assert answer.addresses == ["198.51.100.30"]
    assert [str(rr.rdata) for rr in answer.record.rr if rr.rtype == dnslib.QTYPE.CNAME] == [
        "edge.example.test.",
        "cdn.example.test.",
    ]


async def test_an_unknown_source_address_gets_servfail(standalone: ProxyProcess) -> None:
    answer = await query(standalone.address, "payments.example.test", source="127.0.0.2")
    assert answer.rcode == "SERVFAIL"


async def test_malformed_packets_are_dropped_or_formerr_and_the_proxy_keeps_answering(
    standalone: ProxyProcess,
) -> None:
    server = standalone.address
    short = await query(server, packet=b"\x12\x34\x01", wait=0.3)
    response = dnslib.DNSRecord.question("payments.example.test").reply().pack()
    looped = await query(server, packet=response, wait=0.3)
    bad_question = struct.pack("!HHHHHH", 777, 0x0100, 1, 0, 0, 0) + b"\x07payme"
    formerr = await query(server, packet=bad_question)
    no_question = await query(server, packet=struct.pack("!HHHHHH", 778, 0x0100, 0, 0, 0, 0))
    assert short.raw is None
    assert looped.raw is None
    assert (formerr.record.header.id, formerr.rcode) == (777, "FORMERR")
    assert no_question.rcode == "FORMERR"
    # a burst of garbage of every size, then a normal query still works
    for size in range(0, 600, 7):
        await query(server, packet=bytes((i * 31 + size) % 256 for i in range(size)), wait=0.01)
    answer = await query(server, "payments.example.test")
    assert answer.addresses == ["192.0.2.10"]
    assert standalone.process is not None
    assert standalone.process.poll() is None


async def test_metrics_use_cilium_and_hubble_names_and_health_endpoints_answer(
    standalone: ProxyProcess,
) -> None:
    await query(standalone.address, "payments.example.test")
    await query(standalone.address, "www.other.test")
    denied = standalone.metric("cilium_policy_l7_total", rule="denied", proxy_type="fqdn")
    forwarded = standalone.metric("cilium_policy_l7_total", rule="forwarded", proxy_type="fqdn")
    hubble_denied = standalone.metric("hubble_dns_queries_total", rcode="Policy denied", qtypes="A")
    refused = standalone.metric("hubble_dns_responses_total", rcode="Query Refused", qtypes="A")
    total = standalone.metric(
        "cilium_proxy_upstream_reply_seconds_count",
        error="allow",
        protocol_l7="dns",
        scope="totalTime",
    )
    assert denied >= 1
    assert forwarded >= 1
    assert hubble_denied >= 1
    assert refused >= 1
    assert total >= 1
    assert "query" not in standalone.metrics().split("# HELP")[0]
    assert standalone.is_ready()


async def test_a_denied_query_logs_one_json_line_naming_pod_namespace_name_and_policy(
    standalone: ProxyProcess,
) -> None:
    await query(standalone.address, "denied-for-log.other.test", "AAAA")
    lines = [
        json.loads(line.split(": ", 1)[1])
        for line in standalone.log().splitlines()
        if "denied-for-log.other.test" in line
    ]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["pod"] == "backend-0"
    assert entry["namespace"] == "shop"
    assert entry["name"] == "denied-for-log.other.test."
    assert entry["qtype"] == "AAAA"
    assert entry["policies"] == ["shop/backend-egress"]
    assert entry["rcode"] == "REFUSED"


async def test_musl_search_suffix_help_lets_an_allowed_name_plus_a_search_suffix_reach_the_resolver(
    upstream: LoopbackDnsmasq, tmp_path: Path
) -> None:
    suffixes = ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    rules.save_snapshot(snapshot(search_suffixes=suffixes), tmp_path / "snapshot.json")
    proxy = ProxyProcess(
        tmp_path,
        loopback_settings(
            upstream.address,
            tmp_path / "snapshot.json",
            search_suffix_help="true",
            reject_response_code="nameError",
        ),
    )
    await asyncio.to_thread(proxy.start)
    try:
        server = proxy.address
        walked = [await query(server, f"payments.example.test.{suffix}") for suffix in suffixes]
        final = await query(server, "payments.example.test")
        foreign = await query(server, "www.other.test.shop.svc.cluster.local")
        # the resolver answered (NXDOMAIN): musl walks on instead of giving up on REFUSED
        assert [answer.rcode for answer in walked] == ["NXDOMAIN"] * 3
        assert upstream.queried("payments.example.test.shop.svc.cluster.local")
        assert final.addresses == ["192.0.2.10"]
        # not allowed with or without the suffix: denied, here with NXDOMAIN (nameError)
        assert foreign.rcode == "NXDOMAIN"
        assert not upstream.queried("www.other.test.shop.svc.cluster.local")
        assert proxy.metric("cilium_policy_l7_total", rule="denied", proxy_type="fqdn") == 1
    finally:
        await asyncio.to_thread(proxy.stop)


# ------------------------------------------------------------------ with an agent


async def test_the_agents_snapshot_is_acked_persisted_and_enforced(
    connected: ProxyProcess, agent: FakeAgent, tmp_path: Path
) -> None:
    ack = await agent.wait_for_ack("snapshot-1")
    assert ack.response == pb.RESPONSE_CODE_NO_ERROR
    persisted = rules.load_snapshot(tmp_path / "state" / "snapshot.json")
    assert persisted.request_id == "snapshot-1"
    assert (await query(connected.address, "payments.example.test")).rcode == "NOERROR"
    # a new snapshot without payments.example.test applies at once
    await agent.push(rules.to_policy_state(snapshot(2, names=["big.example.test"])))
    await agent.wait_for_ack("snapshot-2")
    assert (
        await query(connected.address, "payments.example.test")
    ).rcode == "NOERROR"  # *.example.test
    assert (await query(connected.address, "www.example.test")).rcode == "NOERROR"
    await agent.push(rules.to_policy_state(snapshot(3, names=[])))
    await agent.wait_for_ack("snapshot-3")
    assert rules.load_snapshot(tmp_path / "state" / "snapshot.json").revision == 3
    assert connected.metric("acns_dnsproxy_snapshot_revision") == 3
    assert connected.metric("acns_dnsproxy_agent_connected") == 1


async def test_the_mapping_reaches_the_agent_before_the_reply_is_released(
    connected: ProxyProcess, agent: FakeAgent
) -> None:
    agent.ack_delay = 0.05
    answer = await query(connected.address, "www.example.test")
    assert answer.rcode == "NOERROR"
    [received] = await agent.wait_for_mappings(1)
    assert answer.sent_at < received.received_at
    assert received.acked_at <= answer.received_at
    assert answer.received_at - answer.sent_at >= 0.05
    mapping = received.mapping
    assert mapping.fqdn == "www.example.test."
    assert [str(ipaddress.ip_address(ip)) for ip in mapping.record_ips] == ["198.51.100.30"]
    assert mapping.ttl == 30  # the lowest TTL in the CNAME chain
    assert list(mapping.cnames) == ["edge.example.test.", "cdn.example.test."]
    assert mapping.source_ip == socket.inet_aton("127.0.0.1")
    assert mapping.response_code == 0
    assert mapping.qtype == 1
    assert abs(mapping.lookup_time_unix_ms / 1000 - time.time()) < 60
    assert mapping.idempotency_key
    assert not mapping.replayed


async def test_a_slow_agent_holds_the_reply_no_longer_than_the_max_delay(
    connected: ProxyProcess, agent: FakeAgent
) -> None:
    agent.ack_delay = 2.0
    answer = await query(connected.address, "payments.example.test", wait=3.0)
    held = answer.received_at - answer.sent_at
    assert answer.rcode == "NOERROR"
    assert 0.09 <= held < 1.0
    assert connected.metric("cilium_proxy_datapath_update_timeout_total") == 1


async def test_denied_and_addressless_answers_push_nothing(
    connected: ProxyProcess, agent: FakeAgent
) -> None:
    assert (await query(connected.address, "www.other.test")).rcode == "REFUSED"
    assert (await query(connected.address, "missing.example.test")).rcode == "NXDOMAIN"
    assert (await query(connected.address, "text.example.test", "TXT")).rcode == "NOERROR"
    await query(connected.address, "api.example.test")
    mappings = await agent.wait_for_mappings(1)
    assert [m.mapping.fqdn for m in mappings] == ["api.example.test."]


async def test_an_answer_the_agent_already_has_is_not_pushed_again(
    connected: ProxyProcess, agent: FakeAgent
) -> None:
    first = await query(connected.address, "many.example.test")
    second = await query(connected.address, "many.example.test")
    assert first.addresses
    assert sorted(second.addresses) == sorted(first.addresses)
    await agent.wait_for_mappings(1)
    await asyncio.sleep(0.2)
    assert len(agent.mappings) == 1
    assert connected.metric("acns_dnsproxy_mapping_pushes_total", result="skipped") == 1


async def test_with_the_agent_down_dns_keeps_working_and_mappings_replay_when_it_returns(
    connected: ProxyProcess, agent: FakeAgent, tmp_path: Path
) -> None:
    await agent.stop()
    deadline = time.monotonic() + 10
    while connected.metric("acns_dnsproxy_agent_connected") != 0:
        assert time.monotonic() < deadline, "the proxy never noticed the agent was gone"
        await asyncio.sleep(0.05)

    allowed = await query(connected.address, "payments.example.test")
    other = await query(connected.address, "api.example.test")
    denied = await query(connected.address, "www.other.test")
    assert (allowed.rcode, allowed.addresses) == ("NOERROR", ["192.0.2.10"])
    assert (other.rcode, other.addresses) == ("NOERROR", ["192.0.2.20"])
    assert denied.rcode == "REFUSED"
    # no hold while the agent is away
    assert allowed.received_at - allowed.sent_at < 0.09
    assert connected.metric("acns_dnsproxy_mapping_queue_depth") == 2

    returned = FakeAgent(rules.to_policy_state(snapshot()))
    await returned.start(f"unix://{tmp_path / 'agent.sock'}")
    try:
        replayed = await returned.wait_for_mappings(2, limit=10)
        assert sorted(m.mapping.fqdn for m in replayed) == [
            "api.example.test.",
            "payments.example.test.",
        ]
        assert all(m.mapping.replayed for m in replayed)
        assert len({m.mapping.idempotency_key for m in replayed}) == 2
        assert connected.metric("acns_dnsproxy_mapping_queue_depth") == 0
        assert connected.metric("acns_dnsproxy_mappings_replayed_total") == 2
    finally:
        await returned.stop()


async def test_a_restarted_proxy_serves_the_persisted_snapshot_while_the_agent_is_away(
    agent: FakeAgent, tmp_path: Path, upstream: LoopbackDnsmasq
) -> None:
    first = agent_proxy(tmp_path, upstream)
    await asyncio.to_thread(first.start)
    await agent.wait_for_ack("snapshot-1")
    assert await asyncio.to_thread(first.stop) == 0
    await agent.stop()

    second = agent_proxy(tmp_path, upstream, port=first.settings["port"])
    await asyncio.to_thread(second.start)
    try:
        allowed = await query(second.address, "payments.example.test")
        denied = await query(second.address, "www.other.test")
        assert (allowed.rcode, allowed.addresses) == ("NOERROR", ["192.0.2.10"])
        assert denied.rcode == "REFUSED"
        assert second.metric("acns_dnsproxy_agent_connected") == 0
        assert "loaded 1 endpoints (revision 1)" in second.log()
    finally:
        await asyncio.to_thread(second.stop)


# ------------------------------------------------------------------ rolling restart


async def _query_loop(
    server: tuple[str, int], stop: asyncio.Event, results: list[tuple[str | None, float]]
) -> None:
    names = ["payments.example.test", "api.example.test", "www.other.test"]
    index = 0
    while not stop.is_set() and len(results) < 20_000:
        name = names[index % len(names)]
        index += 1
        answer = await query(server, name, wait=1.0, tcp=index % 10 == 0)
        results.append(
            (
                answer.rcode or ("tcp-timeout" if index % 10 == 0 else "udp-timeout"),
                answer.received_at,
            )
        )
        await asyncio.sleep(0.001)


async def test_two_proxies_share_one_port_and_a_sigterm_restart_of_each_loses_no_query(
    upstream: LoopbackDnsmasq, tmp_path: Path
) -> None:
    port = free_port()
    rules.save_snapshot(snapshot(), tmp_path / "snapshot.json")

    def make(name: str) -> ProxyProcess:
        settings = loopback_settings(upstream.address, tmp_path / "snapshot.json", port=port)
        return ProxyProcess(tmp_path / name, settings, name=name)

    old, new = make("old"), make("new")
    await asyncio.to_thread(old.start)
    await asyncio.to_thread(new.start)
    stop = asyncio.Event()
    results: list[tuple[str | None, float]] = []
    loops = [
        asyncio.create_task(_query_loop(("127.0.0.1", int(port)), stop, results)) for _ in range(4)
    ]
    try:
        await asyncio.sleep(1.0)
        # roll: stop the old one (graceful), start a replacement, then stop the other
        assert await asyncio.to_thread(old.stop) == 0
        replacement = make("replacement")
        await asyncio.to_thread(replacement.start)
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(new.stop) == 0
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    try:
        failures = [r for r in results if r[0] not in ("NOERROR", "REFUSED")]
        assert len(results) > 200
        assert failures == []
        assert replacement.metric("cilium_policy_l7_total", rule="received", proxy_type="fqdn") > 0
        assert "dnsproxy stopped" in old.log()
    finally:
        await asyncio.to_thread(replacement.stop)


# ------------------------------------------------------------------ Prometheus


def test_promtool_finds_nothing_to_lint_in_the_metrics(standalone: ProxyProcess) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=standalone.metrics(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_real_prometheus_scrapes_the_proxy(standalone: ProxyProcess, tmp_path: Path) -> None:
    host, port = standalone.address
    dnslib.DNSRecord.question("payments.example.test").send(host, port, timeout=2)
    target = f"127.0.0.1:{standalone.settings['metrics_port']}"
    with PrometheusServer({"dnsproxy": target}, tmp_path / "prometheus") as prometheus:
        value = prometheus.wait_for_value(
            'cilium_policy_l7_total{rule="forwarded",proxy_type="fqdn"}', minimum=1
        )
    assert value >= 1
