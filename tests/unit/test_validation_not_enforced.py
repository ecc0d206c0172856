"""Admitted but not enforced: one warning per feature, at the exact field (issue 6)."""

from __future__ import annotations

from typing import Any

import pytest

from acns_operator.api.findings import WARNING
from acns_operator.api.parsing import parse_policy
from acns_operator.policy import validate
from acns_operator.policy.not_enforced import NOT_ENFORCED_RULES, not_enforced_findings
from acns_operator.settings import PolicySettings


def policy(egress: list[dict[str, Any]], *, deny: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpointSelector": {"matchLabels": {"app": "a"}}}
    spec["egressDeny" if deny else "egress"] = egress
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "p"}, "spec": spec}  # fmt: skip


def warnings(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    verdict = validate(doc, PolicySettings())
    assert verdict.admitted, verdict.findings
    return {(f.rule, f.path): f.message for f in verdict.findings if f.rule.startswith("acns.not-")}


CASES = [
    (
        {"toEndpoints": [{"matchLabels": {"app": "b"}}],
         "toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}]},
        "acns.not-enforced.named-port",
        "spec.egress[0].toPorts[0].ports[0].port",
        "port number",
    ),
    (
        {"toCIDR": ["192.0.2.0/24"], "toPorts": [{"ports": [{"port": "0", "protocol": "VRRP"}]}]},
        "acns.not-enforced.protocol",
        "spec.egress[0].toPorts[0].ports[0].protocol",
        "VRRP",
    ),
    (
        {"toNodes": [{"matchLabels": {"role": "infra"}}]},
        "acns.not-enforced.to-nodes",
        "spec.egress[0].toNodes",
        "toEntities",
    ),
    (
        {"toGroups": [{"aws": {"securityGroupsIds": ["sg-1"]}}]},
        "acns.not-enforced.to-groups",
        "spec.egress[0].toGroups",
        "toCIDR",
    ),
    (
        {"toCIDRSet": [{"cidr": "192.0.2.0/24"}, {"cidrGroupRef": "partners"}]},
        "acns.not-enforced.cidr-group",
        "spec.egress[0].toCIDRSet[1].cidrGroupRef",
        "toCIDRSet[].cidr",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "rule_id", "path", "advice"), CASES)
def test_an_allow_rule_the_agent_cannot_enforce_is_warned_and_fails_closed(
    rule: dict[str, Any], rule_id: str, path: str, advice: str
) -> None:
    found = warnings(policy([rule]))
    assert list(found) == [(rule_id, path)]
    assert "stays denied" in found[(rule_id, path)]
    assert advice in found[(rule_id, path)]


@pytest.mark.parametrize(("rule", "rule_id", "path", "advice"), CASES)
def test_a_deny_rule_the_agent_cannot_enforce_says_it_denies_nothing(
    rule: dict[str, Any], rule_id: str, path: str, advice: str
) -> None:
    found = warnings(policy([rule], deny=True))
    deny_path = path.replace("spec.egress[", "spec.egressDeny[")
    assert list(found) == [(rule_id, deny_path)]
    assert "denies nothing" in found[(rule_id, deny_path)]


def test_every_rule_id_is_exercised_and_stable() -> None:
    others = {
        "acns.not-enforced.icmp",
        "acns.not-enforced.authentication",
        "acns.not-enforced.ingress",
    }
    assert {case[1] for case in CASES} | others == set(NOT_ENFORCED_RULES)


def test_required_mutual_authentication_is_warned_and_the_rule_allows_nothing() -> None:
    rule = {"toCIDR": ["192.0.2.0/24"], "authentication": {"mode": "required"}}
    found = warnings(policy([rule]))
    path = "spec.egress[0].authentication.mode"
    assert list(found) == [("acns.not-enforced.authentication", path)]
    assert "allows nothing" in found[("acns.not-enforced.authentication", path)]
    disabled = {"toCIDR": ["192.0.2.0/24"], "authentication": {"mode": "disabled"}}
    assert warnings(policy([disabled])) == {}


def test_enforced_features_get_no_such_warning() -> None:
    rule = {
        "toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.1/32"]}],
        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"},
                               {"port": "53", "protocol": "ANY"},
                               {"port": "5000", "endPort": 5010, "protocol": "SCTP"}]}],
    }  # fmt: skip
    assert warnings(policy([rule, {"toEntities": ["world"]}])) == {}


def test_the_module_is_pure_and_sees_every_spec_of_a_policy() -> None:
    doc = policy([{"toNodes": [{}]}])
    doc["specs"] = [doc.pop("spec"), {"endpointSelector": {}, "egress": [{"toGroups": [{}]}]}]
    parsed = parse_policy(doc).policy
    assert parsed is not None
    first = list(not_enforced_findings(parsed))
    assert first == list(not_enforced_findings(parsed))
    assert {(f.severity, f.rule, f.path) for f in first} == {
        (WARNING, "acns.not-enforced.to-nodes", "specs[0].egress[0].toNodes"),
        (WARNING, "acns.not-enforced.to-groups", "specs[1].egress[0].toGroups"),
    }


def test_ipv4_icmp_types_are_enforced_and_only_names_without_an_ipv4_code_are_warned() -> None:
    fields = [
        {"type": 8},
        {"type": "EchoReply", "family": "IPv4"},
        {"type": "PacketTooBig"},
        {"type": "EchoRequest", "family": "IPv6"},
    ]
    rule = {"toCIDR": ["192.0.2.0/24"], "icmps": [{"fields": fields}]}
    verdict = validate(policy([rule]), PolicySettings())
    rules = {(f.rule, f.path) for f in verdict.findings}
    assert rules == {
        ("acns.not-enforced.icmp", "spec.egress[0].icmps[0].fields[2].type"),
        ("aks.ipv6", "spec.egress[0].icmps[0].fields[3].family"),
    }
    message = next(f.message for f in verdict.findings if f.rule == "acns.not-enforced.icmp")
    assert "stays denied" in message
    assert "EchoRequest" in message


def test_ingress_rules_are_warned_once_per_section_because_only_egress_is_enforced() -> None:
    doc = policy([{"toEntities": ["world"]}])
    doc["spec"]["ingress"] = [{"fromEndpoints": [{}]}, {"fromCIDR": ["192.0.2.0/24"]}]
    doc["spec"]["ingressDeny"] = [{"fromEntities": ["world"]}]
    found = warnings(doc)
    assert list(found) == [
        ("acns.not-enforced.ingress", "spec.ingress"),
        ("acns.not-enforced.ingress", "spec.ingressDeny"),
    ]
    assert "not enforced" in found[("acns.not-enforced.ingress", "spec.ingress")]
    assert "NetworkPolicy" in found[("acns.not-enforced.ingress", "spec.ingress")]


def test_an_egress_only_policy_gets_no_ingress_warning() -> None:
    assert warnings(policy([{"toEntities": ["world"]}])) == {}
