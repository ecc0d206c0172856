"""Upstream Cilium's own rules (reference §1.5 and rule_validation.go), one test each."""

from __future__ import annotations

from typing import Any

import pytest

from acns_operator.policy import validate
from acns_operator.settings import PolicySettings

KUBE_DNS = {
    "matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}
}


def cnp(spec: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p"},
        **top,
    }
    if spec is not None:
        doc["spec"] = spec
    return doc


def egress(*rules: dict[str, Any]) -> dict[str, Any]:
    return cnp({"endpointSelector": {"matchLabels": {"app": "a"}}, "egress": list(rules)})


def dns_ports(*ports: dict[str, Any], dns: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "ports": list(ports),
        "rules": {"dns": dns if dns is not None else [{"matchPattern": "*.example.com"}]},
    }


def errors(doc: Any) -> set[tuple[str, str]]:
    verdict = validate(doc, PolicySettings())
    return {(f.rule, f.path) for f in verdict.findings if f.severity == "error"}


def test_a_rule_needs_an_endpoint_selector() -> None:
    assert ("cilium.selector-missing", "spec") in errors(cnp({"egress": [{}]}))


def test_endpoint_and_node_selectors_exclude_each_other() -> None:
    doc = cnp({"endpointSelector": {}, "nodeSelector": {}, "egress": [{}]})
    assert ("cilium.selector-both", "spec.nodeSelector") in errors(doc)


def test_a_namespaced_policy_cannot_select_nodes() -> None:
    doc = cnp({"nodeSelector": {}, "egress": [{}]})
    assert errors(doc) == {("cilium.node-selector-namespaced", "spec.nodeSelector")}


def test_a_clusterwide_host_policy_may_select_nodes_but_not_use_l7_rules() -> None:
    doc = cnp(
        {
            "nodeSelector": {},
            "ingress": [
                {
                    "toPorts": [
                        {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{}]}}
                    ]
                }
            ],
        },
        kind="CiliumClusterwideNetworkPolicy",
    )
    found = errors(doc)
    assert ("cilium.host-l7", "spec.ingress[0].toPorts[0].rules") in found
    assert ("cilium.node-selector-namespaced", "spec.nodeSelector") not in found


def test_a_rule_without_any_section_is_refused() -> None:
    assert ("cilium.rule-empty", "spec") in errors(cnp({"endpointSelector": {}}))


def test_a_policy_without_spec_or_specs_has_no_rules() -> None:
    assert ("cilium.no-rules", "spec") in errors(cnp())


def test_a_policy_needs_a_name() -> None:
    doc = egress({"toEntities": ["world"]})
    doc["metadata"] = {}
    assert ("cilium.name", "metadata.name") in errors(doc)


def test_required_fields_of_the_crd_are_enforced_with_their_paths() -> None:
    doc = cnp(
        {
            "endpointSelector": {"matchExpressions": [{"operator": "Exists"}]},
            "egress": [{"authentication": {}}],
        }
    )
    found = errors(doc)
    assert ("cilium.required", "spec.endpointSelector.matchExpressions[0].key") in found
    assert ("cilium.required", "spec.egress[0].authentication.mode") in found


def test_set_based_selector_operators_need_or_forbid_values() -> None:
    doc = cnp(
        {
            "endpointSelector": {
                "matchExpressions": [
                    {"key": "a", "operator": "In", "values": []},
                    {"key": "b", "operator": "Exists", "values": ["x"]},
                ]
            },
            "egress": [{}],
        }
    )
    assert errors(doc) == {
        ("cilium.label-expression", "spec.endpointSelector.matchExpressions[0].values"),
        ("cilium.label-expression", "spec.endpointSelector.matchExpressions[1].values"),
    }


@pytest.mark.parametrize(
    "other",
    ["toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toServices", "toGroups", "toNodes"],
)
def test_to_fqdns_cannot_be_combined_with_another_l3_peer(other: str) -> None:
    values: dict[str, Any] = {
        "toEndpoints": [{}],
        "toCIDR": ["192.0.2.0/24"],
        "toCIDRSet": [{"cidr": "192.0.2.0/24"}],
        "toEntities": ["world"],
        "toServices": [{"k8sService": {"serviceName": "s", "namespace": "n"}}],
        "toGroups": [{"aws": {"securityGroupsIds": ["sg-1"]}}],
        "toNodes": [{}],
    }
    doc = egress({other: values[other], "toFQDNs": [{"matchName": "a.example.com"}]})
    combination = {(rule, path) for rule, path in errors(doc) if rule == "cilium.peer-combination"}
    # The finding sits on whichever of the two fields comes second in Cilium's order.
    second = other if other in ("toGroups", "toNodes") else "toFQDNs"
    assert combination == {("cilium.peer-combination", f"spec.egress[0].{second}")}


def test_to_fqdns_may_be_combined_with_to_ports() -> None:
    doc = egress(
        {"toEndpoints": [KUBE_DNS], "toPorts": [dns_ports({"port": "53", "protocol": "ANY"})]},
        {
            "toFQDNs": [{"matchPattern": "*.example.com"}],
            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
        },
    )
    assert errors(doc) == set()


def test_ingress_peers_exclude_each_other_too() -> None:
    doc = cnp(
        {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}], "fromCIDR": ["192.0.2.0/24"]}]}
    )
    assert errors(doc) == {("cilium.peer-combination", "spec.ingress[0].fromCIDR")}


def test_to_services_cannot_have_to_ports() -> None:
    doc = egress(
        {
            "toServices": [{"k8sService": {"serviceName": "s", "namespace": "n"}}],
            "toPorts": [{"ports": [{"port": "80"}]}],
        }
    )
    assert ("cilium.services-with-ports", "spec.egress[0].toPorts") in errors(doc)


def test_icmps_and_to_ports_need_separate_rules() -> None:
    doc = egress(
        {
            "toEntities": ["world"],
            "icmps": [{"fields": [{"type": 8}]}],
            "toPorts": [{"ports": [{"port": "80"}]}],
        }
    )
    assert errors(doc) == {("cilium.icmp-with-ports", "spec.egress[0].icmps")}


def test_dns_rules_are_refused_on_ingress() -> None:
    doc = cnp(
        {
            "endpointSelector": {},
            "ingress": [{"toPorts": [dns_ports({"port": "53", "protocol": "UDP"})]}],
        }
    )
    assert errors(doc) == {("cilium.dns-ingress", "spec.ingress[0].toPorts[0].rules.dns")}


def test_dns_rules_need_a_port_but_not_necessarily_53() -> None:
    assert errors(egress({"toEndpoints": [KUBE_DNS], "toPorts": [dns_ports()]})) == {
        ("cilium.dns-port-missing", "spec.egress[0].toPorts[0].ports")
    }
    other_port = egress(
        {"toEndpoints": [KUBE_DNS], "toPorts": [dns_ports({"port": "5353", "protocol": "UDP"})]}
    )
    assert errors(other_port) == set()


def test_dns_rules_refuse_port_ranges_and_port_zero() -> None:
    ranged = egress(
        {"toEndpoints": [KUBE_DNS], "toPorts": [dns_ports({"port": "53", "endPort": 60})]}
    )
    assert errors(ranged) == {
        ("cilium.dns-port-range", "spec.egress[0].toPorts[0].ports[0].endPort")
    }
    zero = egress(
        {"toEndpoints": [KUBE_DNS], "toPorts": [dns_ports({"port": "0", "protocol": "UDP"})]}
    )
    assert errors(zero) == {("cilium.l7-port-zero", "spec.egress[0].toPorts[0].ports[0].port")}


@pytest.mark.parametrize("protocol", [None, "UDP", "TCP", "ANY"])
def test_dns_rules_work_over_udp_tcp_or_any(protocol: str | None) -> None:
    port = {"port": "53"} if protocol is None else {"port": "53", "protocol": protocol}
    assert errors(egress({"toEndpoints": [KUBE_DNS], "toPorts": [dns_ports(port)]})) == set()


def test_dns_rules_refuse_other_protocols() -> None:
    doc = egress(
        {"toEndpoints": [KUBE_DNS], "toPorts": [dns_ports({"port": "53", "protocol": "SCTP"})]}
    )
    assert errors(doc) == {("cilium.dns-protocol", "spec.egress[0].toPorts[0].ports[0].protocol")}


def test_other_l7_rules_apply_to_tcp_only() -> None:
    doc = egress(
        {
            "toEndpoints": [{}],
            "toPorts": [{"ports": [{"port": "80", "protocol": "UDP"}], "rules": {"http": [{}]}}],
        }
    )
    assert ("cilium.l7-protocol", "spec.egress[0].toPorts[0].ports[0].protocol") in errors(doc)


def test_one_to_ports_item_holds_one_kind_of_l7_rule() -> None:
    doc = egress(
        {
            "toEndpoints": [{}],
            "toPorts": [
                {
                    "ports": [{"port": "53", "protocol": "TCP"}],
                    "rules": {"dns": [{"matchName": "a.example.com"}], "http": [{}]},
                }
            ],
        }
    )
    assert ("cilium.l7-mixed", "spec.egress[0].toPorts[0].rules") in errors(doc)


def test_l7_key_value_rules_need_l7proto() -> None:
    doc = egress(
        {
            "toEndpoints": [{}],
            "toPorts": [
                {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"l7": [{"a": "b"}]}}
            ],
        }
    )
    assert ("cilium.l7proto-missing", "spec.egress[0].toPorts[0].rules.l7") in errors(doc)


def test_kafka_rules_are_checked_like_upstream() -> None:
    doc = cnp(
        {
            "endpointSelector": {},
            "ingress": [
                {
                    "toPorts": [
                        {
                            "ports": [{"port": "9092", "protocol": "TCP"}],
                            "rules": {
                                "kafka": [
                                    {"role": "produce", "apiKey": "fetch"},
                                    {"apiKey": "nonsense", "apiVersion": "x", "topic": "a b"},
                                ]
                            },
                        }
                    ]
                }
            ],
        }
    )
    kafka = {(rule, path) for rule, path in errors(doc) if rule == "cilium.kafka"}
    base = "spec.ingress[0].toPorts[0].rules.kafka"
    assert kafka == {
        ("cilium.kafka", f"{base}[0]"),
        ("cilium.kafka", f"{base}[1].apiKey"),
        ("cilium.kafka", f"{base}[1].apiVersion"),
        ("cilium.kafka", f"{base}[1].topic"),
    }


def test_server_names_with_l7_rules_need_tls_termination() -> None:
    doc = egress(
        {
            "toEndpoints": [{}],
            "toPorts": [
                {
                    "ports": [{"port": "443", "protocol": "TCP"}],
                    "rules": {"http": [{}]},
                    "serverNames": ["a.example.com", "a.example.com"],
                }
            ],
        }
    )
    found = errors(doc)
    assert ("cilium.server-names-l7", "spec.egress[0].toPorts[0].serverNames") in found
    assert ("cilium.server-name", "spec.egress[0].toPorts[0].serverNames[1]") in found


def test_a_listener_is_egress_only_and_excludes_l7_rules() -> None:
    listener = {"name": "l", "envoyConfig": {"name": "cec"}}
    doc = cnp(
        {
            "endpointSelector": {},
            "ingress": [{"toPorts": [{"ports": [{"port": "80"}], "listener": listener}]}],
        }
    )
    assert ("cilium.listener-ingress", "spec.ingress[0].toPorts[0].listener") in errors(doc)


def test_a_to_fqdns_item_needs_exactly_one_of_match_name_and_match_pattern() -> None:
    both = egress({"toFQDNs": [{"matchName": "a.example.com", "matchPattern": "*.example.com"}]})
    assert ("cilium.fqdn-selector", "spec.egress[0].toFQDNs[0]") in errors(both)
    neither = egress({"toFQDNs": [{}]})
    assert ("cilium.fqdn-selector", "spec.egress[0].toFQDNs[0]") in errors(neither)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("matchName", "exa mple.com"),
        ("matchName", "*.example.com"),
        ("matchName", ".example.com"),
        ("matchName", "a..example.com"),
        ("matchName", "a" * 256),
        ("matchPattern", "ex?mple.com"),
        ("matchPattern", "*." + "a" * 254),
        ("matchPattern", ""),
    ],
)
def test_fqdn_names_are_checked_for_characters_shape_and_length(field: str, value: str) -> None:
    rule = "cilium.match-name" if field == "matchName" else "cilium.match-pattern"
    doc = egress({"toFQDNs": [{field: value}]})
    assert (rule, f"spec.egress[0].toFQDNs[0].{field}") in errors(doc)


def test_dns_rule_names_are_checked_like_to_fqdns() -> None:
    doc = egress(
        {
            "toEndpoints": [KUBE_DNS],
            "toPorts": [dns_ports({"port": "53"}, dns=[{"matchName": "a b"}])],
        }
    )
    assert ("cilium.match-name", "spec.egress[0].toPorts[0].rules.dns[0].matchName") in errors(doc)


@pytest.mark.parametrize("port", ["65536", "-1", "http--alt", "a" * 16, ""])
def test_ports_must_be_numbers_up_to_65535_or_service_names(port: str) -> None:
    doc = egress({"toEntities": ["world"], "toPorts": [{"ports": [{"port": port}]}]})
    assert ("cilium.port", "spec.egress[0].toPorts[0].ports[0].port") in errors(doc)


@pytest.mark.parametrize("port", ["0", "443", "65535", "https", "dns-tcp"])
def test_valid_ports_are_accepted(port: str) -> None:
    doc = egress({"toEntities": ["world"], "toPorts": [{"ports": [{"port": port}]}]})
    assert errors(doc) == set()


def test_cidrs_must_be_prefixes_and_exceptions_inside_them() -> None:
    doc = egress(
        {"toCIDR": ["192.0.2.1"]},
        {"toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["198.51.100.0/24"]}]},
        {"toCIDRSet": [{"cidr": "192.0.2.0/24", "cidrGroupRef": "g"}]},
    )
    assert errors(doc) == {
        ("cilium.cidr", "spec.egress[0].toCIDR[0]"),
        ("cilium.cidr-except", "spec.egress[1].toCIDRSet[0].except[0]"),
        ("cilium.cidr-rule", "spec.egress[2].toCIDRSet[0]"),
    }


def test_removed_requires_fields_must_stay_empty() -> None:
    doc = cnp({"endpointSelector": {}, "ingress": [{"fromRequires": ["x"]}]})
    assert errors(doc) == {("cilium.requires-removed", "spec.ingress[0].fromRequires")}


def test_icmp_types_are_numbers_up_to_255_or_known_names() -> None:
    doc = egress(
        {
            "toEntities": ["world"],
            "icmps": [{"fields": [{"type": 256}, {"type": "Pong"}, {"type": "8"}]}],
        }
    )
    assert errors(doc) == {
        ("cilium.icmp", "spec.egress[0].icmps[0].fields[0].type"),
        ("cilium.icmp", "spec.egress[0].icmps[0].fields[1].type"),
    }


def test_a_missing_port_is_required_but_a_removed_one_is_not_reported_twice() -> None:
    missing = egress({"toEntities": ["world"], "toPorts": [{"ports": [{"protocol": "TCP"}]}]})
    assert errors(missing) == {("cilium.port", "spec.egress[0].toPorts[0].ports[0].port")}
    numeric = egress({"toEntities": ["world"], "toPorts": [{"ports": [{"port": 80}]}]})
    assert errors(numeric) == {("schema.type", "spec.egress[0].toPorts[0].ports[0].port")}
