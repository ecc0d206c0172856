"""The proxy's per-query pipeline, metrics and agent-link bookkeeping, without sockets."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from acns_operator.dnsproxy import rules, wire
from acns_operator.dnsproxy.agent_link import AgentLink, Mapping
from acns_operator.dnsproxy.app import options_from
from acns_operator.dnsproxy.metrics import ProxyMetrics
from acns_operator.dnsproxy.server import (
    DnsProxy,
    ProxyOptions,
    RateLimiter,
    parse_host_port,
    parse_origdst,
)
from acns_operator.dnsproxy.testing import make_query
from acns_operator.dnsproxy.upstream import UdpUpstream
from acns_operator.errors import ConfigurationError
from acns_operator.settings import DnsProxySettings

POD = "10.244.1.5"
DNS = ("10.244.250.10", 53)


def ruleset() -> rules.RuleSet:
    return rules.compile_snapshot(
        rules.SnapshotModel.model_validate(
            {
                "revision": 4,
                "endpoints": [
                    {
                        "ips": [POD],
                        "namespace": "shop",
                        "pod_name": "backend-0",
                        "rules": [
                            {
                                "match_patterns": ["*.example.test"],
                                "servers": [{"prefixes": ["10.244.250.10/32"], "port": 53}],
                                "source": {"namespace": "shop", "name": "backend"},
                            }
                        ],
                    }
                ],
            }
        )
    )


# The pipeline never touches the upstream's loop in these tests; one loop serves all.
_LOOP = asyncio.new_event_loop()


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    _LOOP.close()


def make_proxy(options: ProxyOptions | None = None, agent: AgentLink | None = None) -> DnsProxy:
    metrics = ProxyMetrics(CollectorRegistry())
    upstream = UdpUpstream(_LOOP, metrics)
    return DnsProxy(options or ProxyOptions(), metrics, upstream, agent=agent, rules=ruleset())


def test_an_allowed_query_is_forwarded_with_its_decision() -> None:
    proxy = make_proxy()
    reply, query, decision = proxy.triage(make_query("api.example.test"), POD, DNS, 17)
    assert reply is None
    assert query is not None
    assert query.qname == "api.example.test."
    assert decision is not None
    assert decision.rule is not None
    assert decision.rule.name == "backend"
    assert proxy.metrics.l7["forwarded"] == 1


def test_a_denied_query_is_answered_with_the_configured_code_and_counted() -> None:
    for rcode in (wire.REFUSED, wire.NXDOMAIN):
        proxy = make_proxy(ProxyOptions(reject_rcode=rcode, denied_log_per_second=0))
        reply, query, _ = proxy.triage(make_query("www.other.test", msg_id=5), POD, DNS, 17)
        assert query is None
        assert reply is not None
        parsed = dnslib.DNSRecord.parse(reply)
        assert (parsed.header.id, parsed.header.rcode) == (5, rcode)
        assert proxy.metrics.l7["denied"] == 1
        assert proxy.metrics.denied_logs_suppressed == 1


def test_an_unknown_endpoint_or_a_missing_upstream_gets_servfail() -> None:
    proxy = make_proxy()
    unknown, _, _ = proxy.triage(make_query("api.example.test"), "10.244.9.9", DNS, 17)
    nowhere, _, _ = proxy.triage(make_query("api.example.test"), POD, None, 17)
    for reply in (unknown, nowhere):
        assert reply is not None
        assert dnslib.DNSRecord.parse(reply).header.rcode == wire.SERVFAIL


def test_a_malformed_header_is_dropped_and_a_malformed_question_is_formerr() -> None:
    proxy = make_proxy()
    dropped = proxy.triage(b"\x01", POD, DNS, 17)
    formerr, _, _ = proxy.triage(
        struct.pack("!HHHHHH", 8, 0x0100, 1, 0, 0, 0) + b"\x09ab", POD, DNS, 17
    )
    assert dropped == (None, None, None)
    assert formerr is not None
    assert dnslib.DNSRecord.parse(formerr).header.rcode == wire.FORMERR
    assert proxy.metrics.l7["parse_errors"] == 2


def test_a_non_query_opcode_is_not_implemented() -> None:
    record = dnslib.DNSRecord.question("api.example.test")
    record.header.opcode = 4  # NOTIFY
    reply, query, _ = make_proxy().triage(record.pack(), POD, DNS, 17)
    assert query is None
    assert reply is not None
    assert dnslib.DNSRecord.parse(reply).header.rcode == wire.NOTIMP


@given(st.binary(max_size=700))
@settings(max_examples=400, deadline=None)
def test_the_packet_path_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    proxy = make_proxy(ProxyOptions(denied_log_per_second=0))
    reply, query, _ = proxy.triage(data, POD, DNS, 17)
    if reply is not None:
        # whatever we answer is a well-formed response no larger than a header plus question
        assert len(reply) <= len(data)
        assert reply[2] & 0x80
    if query is not None:
        assert query.raw == data


@given(st.binary(min_size=12, max_size=700))
@settings(max_examples=300, deadline=None)
def test_concluding_an_arbitrary_upstream_reply_never_raises(data: bytes) -> None:
    proxy = make_proxy()
    query = wire.parse_query(make_query("api.example.test"))
    out, hold = proxy.conclude(query, POD, data, 0.0, 0.0)
    assert out is not None
    assert hold is None


async def test_an_answer_with_addresses_becomes_a_queued_mapping_while_the_agent_is_away() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    agent = AgentLink("unix:///nonexistent", metrics, lambda _: (1, ""), queue_size=2)
    proxy = make_proxy(agent=agent)
    query = wire.parse_query(make_query("api.example.test"))
    reply = dnslib.DNSRecord.parse(make_query("api.example.test")).reply()
    reply.add_answer(dnslib.RR("api.example.test", rdata=dnslib.A("192.0.2.20"), ttl=30))
    out, hold = proxy.conclude(query, POD, reply.pack(), 0.0, 0.0)
    assert out == reply.pack()
    assert hold is None  # no hold while the agent is away
    assert agent.queued == 1
    for _ in range(3):
        proxy.conclude(query, POD, reply.pack(), 0.0, 0.0)
    assert agent.queued == 2
    assert metrics.mappings_dropped == 2


async def test_a_full_mapping_queue_keeps_the_newest_mappings_and_counts_the_dropped() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    agent = AgentLink("unix:///nonexistent", metrics, lambda _: (1, ""), queue_size=3)
    proxy = make_proxy(agent=agent)
    names = [f"n{i}.example.test" for i in range(5)]
    for i, name in enumerate(names):
        query = wire.parse_query(make_query(name))
        reply = dnslib.DNSRecord.parse(make_query(name)).reply()
        reply.add_answer(dnslib.RR(name, rdata=dnslib.A(f"192.0.2.{i + 1}"), ttl=30))
        proxy.conclude(query, POD, reply.pack(), 0.0, 0.0)
    assert [mapping.fqdn for mapping in agent._queue] == [f"{name}." for name in names[2:]]
    assert metrics.mappings_dropped == 2


def _mapping(addresses: tuple[bytes, ...], lookup_ms: int, ttl: int = 30) -> Mapping:
    return Mapping(
        fqdn="api.example.test.",
        addresses=addresses,
        ttl=ttl,
        source_ip=socket.inet_aton(POD),
        rcode=0,
        cnames=(),
        qtype=1,
        lookup_time_ms=lookup_ms,
        key="k",
    )


def test_a_mapping_is_known_only_with_no_new_address_and_no_later_expiry() -> None:
    link = AgentLink("unix:///nonexistent", ProxyMetrics(), lambda _: (1, ""))
    a, b = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
    link._remember(_mapping((a, b), lookup_ms=10_000))
    assert link._is_known(_mapping((a,), lookup_ms=10_500))
    # a caching resolver's shrinking TTL: the same expiry
    assert link._is_known(_mapping((a, b), lookup_ms=20_000, ttl=20))
    assert not link._is_known(_mapping((a,), lookup_ms=12_000))
    assert not link._is_known(_mapping((bytes([192, 0, 2, 3]),), lookup_ms=10_000))


def test_metrics_render_cilium_and_hubble_families_without_query_names() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    metrics.rule("received")
    metrics.query("A", "Policy denied")
    metrics.response(wire.REFUSED, "A", 0)
    metrics.response(wire.NOERROR, "AAAA", 25)
    metrics.observe("allow", "totalTime", 0.0004)
    text = generate_latest(registry).decode()
    assert 'cilium_policy_l7_total{proxy_type="fqdn",rule="received"} 1.0' in text
    assert 'hubble_dns_queries_total{ips_returned="0",qtypes="A",rcode="Policy denied"} 1.0' in text
    assert (
        'hubble_dns_responses_total{ips_returned="10+",qtypes="AAAA",rcode="No Error"} 1.0' in text
    )
    assert (
        'cilium_proxy_upstream_reply_seconds_bucket{error="allow",le="0.0005",protocol_l7="dns",'
        'scope="totalTime"} 1.0'
    ) in text
    assert "cilium_proxy_datapath_update_timeout_total 0.0" in text


def test_the_rate_limiter_allows_bursts_up_to_the_rate_then_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert limiter.allow()
    assert not limiter.allow()
    assert not RateLimiter(0).allow()


def test_host_port_parsing_accepts_ipv4_and_bracketed_ipv6_only() -> None:
    assert parse_host_port("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_host_port("[::1]:53") == ("::1", 53)
    for bad in ("localhost:53", "127.0.0.1", "127.0.0.1:x"):
        with pytest.raises(ConfigurationError):
            parse_host_port(bad)


def test_the_original_destination_is_read_from_ip_origdstaddr_ancillary_data() -> None:
    sockaddr = (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", 53)
        + socket.inet_aton("10.244.250.10")
        + bytes(8)
    )
    assert parse_origdst([(0, 20, sockaddr)]) == ("10.244.250.10", 53)
    assert parse_origdst([(0, 8, sockaddr)]) is None


def test_settings_map_to_pipeline_options() -> None:
    options = options_from(
        DnsProxySettings(
            reject_response_code="nameError", upstream="127.0.0.1:5353", agent_address=None
        )
    )
    assert options.reject_rcode == wire.NXDOMAIN
    assert options.upstream == ("127.0.0.1", 5353)
    assert options.max_delay == 0.1
    assert options_from(DnsProxySettings()).reject_rcode == wire.REFUSED
