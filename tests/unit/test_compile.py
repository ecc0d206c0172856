"""Compilation of admitted policies into per-endpoint egress rules."""

from __future__ import annotations

from typing import Any

import pytest

from acns_operator.api.objects import PolicyObject
from acns_operator.policy import validate
from acns_operator.policy.compile import (
    ClusterSnapshot,
    CompileOptions,
    Compiler,
    Pod,
    Port,
    Service,
    compile_snapshot,
)
from acns_operator.settings import PolicySettings

NODE = "node1"
OPTIONS = CompileOptions(node_name=NODE, cluster_cidrs=("10.244.0.0/16",))


def policy(name: str, spec: dict[str, Any], namespace: str = "shop") -> PolicyObject:
    document = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    verdict = validate(document, PolicySettings())
    assert verdict.admitted, verdict.messages()
    assert verdict.policy is not None
    return verdict.policy


DNS_EGRESS = {
    "toEndpoints": [
        {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}
    ],
    "toPorts": [
        {
            "ports": [{"port": "53", "protocol": "ANY"}],
            "rules": {"dns": [{"matchPattern": "*.example.test"}]},
        }
    ],
}

SEED = [
    policy(
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
    ),
    policy(
        "backend-egress",
        {
            "endpointSelector": {"matchLabels": {"app": "backend"}},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": {"app": "database"}}],
                    "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}],
                },
                DNS_EGRESS,
                {
                    "toFQDNs": [{"matchName": "payments.example.test"}],
                    "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                },
            ],
        },
    ),
]

PODS = [
    Pod("shop", "frontend", {"app": "frontend"}, "10.244.1.10", NODE),
    Pod("shop", "backend", {"app": "backend"}, "10.244.1.11", NODE),
    Pod("shop", "backend-2", {"app": "backend"}, "10.244.2.11", "node2"),
    Pod("shop", "database", {"app": "database"}, "10.244.2.12", "node2"),
    Pod("other", "database", {"app": "database"}, "10.244.2.13", "node2"),
    Pod("kube-system", "coredns", {"k8s-app": "kube-dns"}, "10.244.1.53", NODE),
]
SERVICES = [
    Service("kube-system", "kube-dns", "10.244.250.10", {"k8s-app": "kube-dns"}),
    Service("kube-system", "unrelated", "10.244.250.20", {"app": "x"}),
]


def seed_compiler(policies: list[PolicyObject] | None = None) -> Compiler:
    return compile_snapshot(
        ClusterSnapshot(
            policies=SEED if policies is None else policies,
            pods=PODS,
            namespaces={"shop": {"team": "payments"}, "other": {}, "kube-system": {}},
            services=SERVICES,
        ),
        OPTIONS,
    )


def test_the_frontend_may_reach_backends_on_every_node_on_8080_only() -> None:
    rules = seed_compiler().compile("shop/frontend")
    assert rules is not None
    assert rules.enforced
    assert [(a.prefixes, a.ports) for a in rules.allow] == [
        (("10.244.1.11/32", "10.244.2.11/32"), (Port("TCP", 8080, 8080),))
    ]
    assert str(rules.allow[0].source) == "CiliumNetworkPolicy shop/frontend-egress spec.egress[0]"


def test_to_endpoints_gets_the_implicit_namespace_of_the_policy() -> None:
    rules = seed_compiler().compile("shop/backend")
    assert rules is not None
    database = [a for a in rules.allow if Port("TCP", 5432, 5432) in a.ports]
    assert database[0].prefixes == ("10.244.2.12/32",), "the database in 'other' is not a peer"


def test_a_dns_rule_names_the_dns_pods_and_the_service_in_front_of_them() -> None:
    rules = seed_compiler().compile("shop/backend")
    assert rules is not None
    (dns,) = rules.dns
    assert dns.servers == ("10.244.1.53/32", "10.244.250.10/32")
    assert dns.match_patterns == ("*.example.test",)
    assert set(dns.ports) == {Port("TCP", 53, 53), Port("UDP", 53, 53), Port("SCTP", 53, 53)}
    (fqdn,) = rules.fqdn
    assert [str(s) for s in fqdn.selectors] == ["matchName: payments.example.test"]
    assert fqdn.ports == (Port("TCP", 443, 443),)


def test_pods_on_other_nodes_and_unselected_pods_get_no_rules() -> None:
    compiler = seed_compiler()
    assert compiler.compile("shop/backend-2") is None, "not on this node"
    assert compiler.compile("kube-system/coredns") is None, "no policy selects it"
    assert sorted(compiler.compile_all()) == ["shop/backend", "shop/frontend"]


def test_namespace_labels_select_peers_across_namespaces() -> None:
    rules = seed_compiler(
        [
            policy(
                "by-namespace-label",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egress": [
                        {
                            "toEndpoints": [
                                {
                                    "matchLabels": {
                                        "k8s:io.cilium.k8s.namespace.labels.team": "payments",
                                        "k8s:io.kubernetes.pod.namespace": "shop",
                                        "app": "database",
                                    }
                                }
                            ]
                        }
                    ],
                },
            )
        ]
    ).compile("shop/frontend")
    assert rules is not None
    assert rules.allow[0].prefixes == ("10.244.2.12/32",)
    assert rules.allow[0].ports == ()


def test_cidr_sets_subtract_their_exceptions_and_world_excludes_the_cluster() -> None:
    rules = seed_compiler(
        [
            policy(
                "cidrs",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egress": [
                        {"toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}]},
                        {"toEntities": ["world"]},
                    ],
                },
            )
        ]
    ).compile("shop/frontend")
    assert rules is not None
    assert rules.allow[0].prefixes == ("192.0.2.0/25",)
    world = rules.allow[1].prefixes
    assert "10.0.0.0/8" not in world
    assert "10.245.0.0/16" in world
    assert not any(p.startswith("10.244.") for p in world)


def test_deny_rules_are_kept_apart_and_default_deny_can_be_switched_off() -> None:
    rules = seed_compiler(
        [
            policy(
                "deny-only",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egressDeny": [{"toCIDR": ["203.0.113.0/24"]}],
                    "enableDefaultDeny": {"egress": False},
                },
            )
        ]
    ).compile("shop/frontend")
    assert rules is not None
    assert not rules.enforced
    assert rules.deny[0].prefixes == ("203.0.113.0/24",)


def test_an_empty_egress_rule_denies_everything_and_a_ports_only_rule_allows_any_address() -> None:
    compiler = seed_compiler(
        [
            policy("deny-all", {"endpointSelector": {}, "egress": [{}]}),
            policy(
                "https-anywhere",
                {
                    "endpointSelector": {"matchLabels": {"app": "backend"}},
                    "egress": [{"toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}],
                },
            ),
        ]
    )
    frontend = compiler.compile("shop/frontend")
    assert frontend is not None
    assert frontend.enforced
    assert frontend.allow == ()
    backend = compiler.compile("shop/backend")
    assert backend is not None
    assert [(a.prefixes, a.ports) for a in backend.allow] == [
        (("0.0.0.0/0",), (Port("TCP", 443, 443),))
    ]


def test_compiling_twice_gives_equal_results() -> None:
    assert seed_compiler().compile_all() == seed_compiler().compile_all()


def test_a_peer_pod_change_recompiles_only_the_endpoints_that_name_it() -> None:
    compiler = seed_compiler()
    before = compiler.compile_all()
    affected = compiler.set_pod(Pod("shop", "backend-3", {"app": "backend"}, "10.244.3.11", "n3"))
    assert affected == {"shop/frontend"}
    after = compiler.compile("shop/frontend")
    assert after is not None
    assert "10.244.3.11/32" in after.allow[0].prefixes
    assert compiler.compile("shop/backend") == before["shop/backend"]


def test_a_policy_change_recompiles_the_endpoints_it_selects_and_deletion_removes_rules() -> None:
    compiler = seed_compiler()
    assert compiler.remove_policy("CiliumNetworkPolicy/shop/frontend-egress") == {"shop/frontend"}
    assert compiler.compile("shop/frontend") is None
    assert compiler.set_policy(SEED[0]) == {"shop/frontend"}
    assert compiler.compile("shop/frontend") is not None


def test_a_service_change_recompiles_endpoints_with_dns_rules() -> None:
    compiler = seed_compiler()
    affected = compiler.set_service(
        Service("kube-system", "kube-dns", "10.244.250.11", {"k8s-app": "kube-dns"})
    )
    assert affected == {"shop/backend"}
    rules = compiler.compile("shop/backend")
    assert rules is not None
    assert rules.dns[0].servers == ("10.244.1.53/32", "10.244.250.11/32")


@pytest.mark.parametrize(
    ("port", "protocol", "expected"),
    [
        ("53", "UDP", [Port("UDP", 53, 53)]),
        ("0", "TCP", [Port("TCP", 0, 65535)]),
        ("80", None, [Port("SCTP", 80, 80), Port("TCP", 80, 80), Port("UDP", 80, 80)]),
    ],
)
def test_ports_and_protocols_are_expanded_like_cilium(
    port: str, protocol: str | None, expected: list[Port]
) -> None:
    entry: dict[str, Any] = {"port": port}
    if protocol:
        entry["protocol"] = protocol
    rules = seed_compiler(
        [
            policy(
                "ports",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egress": [{"toCIDR": ["192.0.2.1/32"], "toPorts": [{"ports": [entry]}]}],
                },
            )
        ]
    ).compile("shop/frontend")
    assert rules is not None
    assert list(rules.allow[0].ports) == expected


def test_parts_the_agent_does_not_enforce_allow_nothing_and_deny_nothing() -> None:
    # Warned at admission (acns.not-enforced.*): an allow fails closed, never open.
    compiler = seed_compiler(
        [
            policy(
                "unenforced",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egress": [
                        {"toNodes": [{"matchLabels": {"role": "infra"}}]},
                        {
                            "toCIDR": ["192.0.2.0/24"],
                            "toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}],
                        },
                        {"toCIDRSet": [{"cidrGroupRef": "partners"}]},
                        {"toCIDR": ["192.0.2.0/24"], "authentication": {"mode": "required"}},
                    ],
                    "egressDeny": [{"toGroups": [{"aws": {"securityGroupsIds": ["sg-1"]}}]}],
                },
            )
        ]
    )
    frontend = compiler.compile("shop/frontend")
    assert frontend is not None
    assert frontend.enforced
    assert frontend.allow == ()
    assert frontend.deny == ()
    assert frontend.notes


def test_ipv4_icmp_rules_compile_to_icmp_types_on_their_peers_only() -> None:
    fields = [{"type": "EchoRequest"}, {"type": 8, "family": "IPv4"}, {"type": 13}]
    compiler = seed_compiler(
        [
            policy(
                "ping",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egress": [
                        {"toCIDR": ["192.0.2.10/32"], "icmps": [{"fields": fields}]},
                        {"icmps": [{"fields": [{"type": "EchoReply"}]}]},
                        {"toFQDNs": [{"matchName": "ping.example.test"}],
                         "icmps": [{"fields": [{"type": 8}]}]},
                    ],
                    "egressDeny": [
                        {"toCIDR": ["192.0.2.66/32"], "icmps": [{"fields": [{"type": 8}]}]}
                    ],
                },
            )
        ]
    )  # fmt: skip
    frontend = compiler.compile("shop/frontend")
    assert frontend is not None
    assert [(a.prefixes, a.ports) for a in frontend.allow] == [
        (("192.0.2.10/32",), (Port("ICMP", 8, 8), Port("ICMP", 13, 13))),
        (("0.0.0.0/0",), (Port("ICMP", 0, 0),)),
    ]
    assert [f.ports for f in frontend.fqdn] == [(Port("ICMP", 8, 8),)]
    assert [(d.prefixes, d.ports) for d in frontend.deny] == [
        (("192.0.2.66/32",), (Port("ICMP", 8, 8),))
    ]
    assert frontend.notes == ()


def test_an_icmp_type_with_no_ipv4_code_allows_nothing_rather_than_every_port() -> None:
    too_big = [{"type": "PacketTooBig"}]
    compiler = seed_compiler(
        [
            policy(
                "too-big",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egress": [{"toCIDR": ["192.0.2.10/32"], "icmps": [{"fields": too_big}]}],
                },
            )
        ]
    )  # fmt: skip
    frontend = compiler.compile("shop/frontend")
    assert frontend is not None
    assert frontend.enforced
    assert frontend.allow == ()
    assert frontend.notes == ("ICMP type 'PacketTooBig' (IPv4) is not enforced",)
