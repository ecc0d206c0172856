"""Compiled rules as datapath programs and as proxy snapshots; conntrack parsing."""

from __future__ import annotations

import ipaddress

from acns_operator.agent.conntrack import parse_connections
from acns_operator.agent.datapath import ICMP, TCP, UDP, PortRange
from acns_operator.agent.programs import endpoint_id, to_endpoint_policy, to_program
from acns_operator.policy.compile import (
    ClusterSnapshot,
    CompileOptions,
    EndpointRules,
    PeerAllow,
    Port,
    RuleSource,
    compile_snapshot,
)
from tests.unit.test_compile import PODS, SEED, SERVICES


def backend_rules() -> EndpointRules:
    compiler = compile_snapshot(
        ClusterSnapshot(policies=SEED, pods=PODS, services=SERVICES),
        CompileOptions(node_name="node1"),
    )
    rules = compiler.compile("shop/backend")
    assert rules is not None
    return rules


def test_a_program_redirects_dns_to_the_rule_servers_over_udp_and_tcp() -> None:
    program = to_program(backend_rules())
    assert program.enforced
    (redirect,) = program.dns_redirect
    assert redirect.prefixes == ("10.244.1.53/32", "10.244.250.10/32")
    assert set(redirect.ports) == {PortRange(TCP, 53, 53), PortRange(UDP, 53, 53)}
    assert program.fqdn[0].selectors == ("name:payments.example.test.",)
    assert program.fqdn[0].ports == (PortRange(TCP, 443, 443),)


def test_the_snapshot_carries_raw_addresses_rules_and_their_source() -> None:
    policy = to_endpoint_policy(backend_rules(), "cluster.local")
    assert policy.endpoint_id == endpoint_id("10.244.1.11")
    assert list(policy.ips) == [ipaddress.ip_address("10.244.1.11").packed]
    (rule,) = policy.rules
    assert list(rule.match_patterns) == ["*.example.test"]
    assert {(s.port, s.protocol) for s in rule.servers} == {(53, 6), (53, 17)}
    assert [(p.address, p.length) for p in rule.servers[0].prefixes] == [
        (bytes([10, 244, 1, 53]), 32),
        (bytes([10, 244, 250, 10]), 32),
    ]
    assert rule.source.name == "backend-egress"
    assert rule.source.path == "spec.egress[1].toPorts.rules.dns"
    assert list(policy.search_suffixes) == [
        "shop.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ]


def test_conntrack_listings_give_the_original_direction_of_live_connections() -> None:
    proc = (
        "ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.1.11 dst=192.0.2.10 sport=40000 "
        "dport=443 src=192.0.2.10 dst=10.244.1.11 sport=443 dport=40000 [ASSURED] mark=0 use=1\n"
    )
    tool = (
        "udp      17 29 src=10.244.1.12 dst=10.244.250.10 sport=5353 dport=53 [UNREPLIED] "
        "src=10.244.1.53 dst=10.244.1.12\n"
    )
    closed = (
        "tcp      6 118 TIME_WAIT src=10.244.1.11 dst=192.0.2.51 sport=40001 dport=443 "
        "src=192.0.2.51 dst=10.244.1.11 sport=443 dport=40001 [ASSURED] mark=0 use=1\n"
    )
    assert parse_connections(proc + tool + closed) == {
        ("10.244.1.11", "192.0.2.10"),
        ("10.244.1.12", "10.244.250.10"),
    }


def test_compiled_icmp_types_become_icmp_ranges_in_the_program() -> None:
    rules = EndpointRules(
        pod="shop/frontend", namespace="shop", name="frontend", ip="10.244.1.10", enforced=True,
        allow=(PeerAllow(("192.0.2.10/32",), (Port("ICMP", 8, 8),),
                         RuleSource("CiliumNetworkPolicy", "shop", "ping", "spec.egress[0]"),
                         "toCIDR 192.0.2.10/32"),),
    )  # fmt: skip
    program = to_program(rules)
    assert program.allow[0].ports == (PortRange(ICMP, 8, 8),)
    assert program.allow[0].matches("192.0.2.10", ICMP, 8)
    assert not program.allow[0].matches("192.0.2.10", TCP, 8)
