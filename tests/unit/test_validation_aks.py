"""The AKS profile (design.md §2): blocked features, warnings, and the settings they read."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acns_operator.api.parsing import parse_policy
from acns_operator.policy import validate
from acns_operator.settings import PolicySettings

KUBE_DNS = {
    "matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}
}
CLUSTER_NAMES = {"matchPattern": "*.*.svc.cluster.local"}


def policy(
    *rules: dict[str, Any], kind: str = "CiliumNetworkPolicy", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"endpointSelector": {"matchLabels": {"app": "a"}}, **spec}
    if rules:
        body["egress"] = list(rules)
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": {"name": "p"}, "spec": body}


def dns_rule(*names: dict[str, str], peer: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        **(peer if peer is not None else {"toEndpoints": [KUBE_DNS]}),
        "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": list(names)}}],
    }


def findings(doc: Any, policy_settings: PolicySettings | None = None) -> set[tuple[str, str, str]]:
    verdict = validate(doc, policy_settings or PolicySettings())
    return {(f.severity, f.rule, f.path) for f in verdict.findings}


def test_a_supported_fqdn_policy_is_admitted_without_findings() -> None:
    doc = policy(
        dns_rule(
            {"matchPattern": "*.example.com"}, {"matchPattern": "app*.example.org"}, CLUSTER_NAMES
        ),
        {"toFQDNs": [{"matchPattern": "*.example.com"}, {"matchPattern": "app*.example.org"}]},
    )
    verdict = validate(doc, PolicySettings())
    assert verdict.admitted
    assert verdict.findings == []
    assert verdict.policy is not None


def test_clusterwide_policies_are_blocked_at_the_kind() -> None:
    doc = policy(
        dns_rule({"matchPattern": "*.example.com"}, CLUSTER_NAMES),
        kind="CiliumClusterwideNetworkPolicy",
    )
    assert findings(doc) == {("error", "aks.clusterwide", "kind")}


@pytest.mark.parametrize("pattern", ["*", "**", "***.", "*."])
def test_match_all_patterns_are_blocked_in_to_fqdns(pattern: str) -> None:
    doc = policy(
        dns_rule(CLUSTER_NAMES, {"matchPattern": "*.example.com"}),
        {"toFQDNs": [{"matchPattern": pattern}]},
    )
    assert ("error", "aks.match-all", "spec.egress[1].toFQDNs[0].matchPattern") in findings(doc)


@pytest.mark.parametrize("pattern", ["*", "**", "***."])
def test_match_all_patterns_are_blocked_in_dns_rules(pattern: str) -> None:
    doc = policy(dns_rule({"matchPattern": pattern}))
    assert findings(doc) == {
        ("error", "aks.match-all", "spec.egress[0].toPorts[0].rules.dns[0].matchPattern")
    }


def test_an_empty_dns_list_allows_everything_and_is_blocked() -> None:
    doc = policy(dns_rule())
    assert findings(doc) == {("error", "aks.dns-allow-all", "spec.egress[0].toPorts[0].rules.dns")}


@pytest.mark.parametrize(
    ("rules", "rule_id", "field"),
    [
        ({"http": [{"method": "GET"}]}, "aks.l7-http", "http"),
        ({"kafka": [{"topic": "t"}]}, "aks.l7-kafka", "kafka"),
        ({"l7proto": "r2d2", "l7": [{"cmd": "READ"}]}, "aks.l7-generic", "l7proto"),
    ],
)
def test_l7_rules_other_than_dns_are_blocked_on_both_directions(
    rules: dict[str, Any], rule_id: str, field: str
) -> None:
    port_rule = {"ports": [{"port": "80", "protocol": "TCP"}], "rules": rules}
    egress_doc = policy({"toEndpoints": [{}], "toPorts": [port_rule]})
    assert ("error", rule_id, f"spec.egress[0].toPorts[0].rules.{field}") in findings(egress_doc)
    ingress_doc = policy(ingress=[{"fromEndpoints": [{}], "toPorts": [port_rule]}])
    assert ("error", rule_id, f"spec.ingress[0].toPorts[0].rules.{field}") in findings(ingress_doc)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"serverNames": ["a.example.com"]}, "serverNames"),
        ({"terminatingTLS": {"secret": {"name": "s"}}}, "terminatingTLS"),
        ({"originatingTLS": {"secret": {"name": "s"}}}, "originatingTLS"),
        ({"listener": {"name": "l", "envoyConfig": {"name": "c"}}}, "listener"),
    ],
)
def test_features_that_need_the_l7_proxy_are_blocked(extra: dict[str, Any], field: str) -> None:
    doc = policy(
        {
            "toCIDR": ["192.0.2.0/24"],
            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}], **extra}],
        }
    )
    assert ("error", "aks.l7-proxy", f"spec.egress[0].toPorts[0].{field}") in findings(doc)


def test_to_services_is_blocked_in_allow_and_deny_rules() -> None:
    service = [{"k8sService": {"serviceName": "backend", "namespace": "default"}}]
    doc = policy({"toServices": service}, egressDeny=[{"toServices": service}])
    found = findings(doc)
    assert ("error", "aks.to-services", "spec.egress[0].toServices") in found
    assert ("error", "aks.to-services", "spec.egressDeny[0].toServices") in found


@pytest.mark.parametrize(
    ("selector", "field"),
    [
        ({"matchName": "backend.default.svc.cluster.local"}, "matchName"),
        ({"matchName": "Backend.Default.SVC.cluster.local."}, "matchName"),
        ({"matchPattern": "*.svc.cluster.local"}, "matchPattern"),
        ({"matchPattern": "*.cluster.local"}, "matchPattern"),
    ],
)
def test_kubernetes_service_names_in_to_fqdns_are_blocked(
    selector: dict[str, str], field: str
) -> None:
    doc = policy(dns_rule({"matchPattern": "**.cluster.local"}), {"toFQDNs": [selector]})
    assert ("error", "aks.service-name", f"spec.egress[1].toFQDNs[0].{field}") in findings(doc)


def test_the_cluster_domain_comes_from_the_settings() -> None:
    doc = policy(
        dns_rule(CLUSTER_NAMES, {"matchPattern": "*.corp.internal"}),
        {"toFQDNs": [{"matchName": "db.ns.svc.corp.internal"}]},
    )
    assert ("error", "aks.service-name", "spec.egress[1].toFQDNs[0].matchName") not in findings(doc)
    custom = PolicySettings(cluster_domain="corp.internal")
    assert ("error", "aks.service-name", "spec.egress[1].toFQDNs[0].matchName") in findings(
        doc, custom
    )


def test_a_pattern_that_also_matches_service_names_is_warned_about() -> None:
    doc = policy(
        dns_rule({"matchPattern": "*.*.*.*.local"}),
        {"toFQDNs": [{"matchPattern": "*.*.*.*.local"}]},
    )
    assert findings(doc) == {
        ("warning", "aks.pattern-covers-service-names", "spec.egress[1].toFQDNs[0].matchPattern")
    }


def test_ipv6_prefixes_are_blocked_wherever_cidrs_appear() -> None:
    doc = policy(
        {"toCIDR": ["2001:db8::/32"]},
        {"toCIDRSet": [{"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}]},
        ingress=[{"fromCIDR": ["2001:db8::/32"]}],
        ingressDeny=[{"fromCIDRSet": [{"cidr": "2001:db8::/32"}]}],
        egressDeny=[{"toCIDR": ["2001:db8::/32"]}],
    )
    ipv6 = {path for severity, rule, path in findings(doc) if rule == "aks.ipv6"}
    assert ipv6 == {
        "spec.egress[0].toCIDR[0]",
        "spec.egress[1].toCIDRSet[0].cidr",
        "spec.egress[1].toCIDRSet[0].except[0]",
        "spec.ingress[0].fromCIDR[0]",
        "spec.ingressDeny[0].fromCIDRSet[0].cidr",
        "spec.egressDeny[0].toCIDR[0]",
    }


def test_icmpv6_is_blocked_with_dual_stack() -> None:
    doc = policy(
        {"toEntities": ["world"], "icmps": [{"fields": [{"type": 128, "family": "IPv6"}]}]}
    )
    assert findings(doc) == {("error", "aks.ipv6", "spec.egress[0].icmps[0].fields[0].family")}


@pytest.mark.parametrize(
    "labels",
    [
        {"k8s-app": "node-local-dns"},
        {"k8s:k8s-app": "node-local-dns", "k8s:io.kubernetes.pod.namespace": "kube-system"},
        {"any:k8s-app": "node-local-dns"},
    ],
)
def test_node_local_dns_pods_as_the_dns_peer_are_blocked(labels: dict[str, str]) -> None:
    doc = policy(
        dns_rule(
            {"matchPattern": "*.example.com"},
            CLUSTER_NAMES,
            peer={"toEndpoints": [{"matchLabels": labels}]},
        )
    )
    assert findings(doc) == {("error", "aks.node-local-dns", "spec.egress[0].toEndpoints[0]")}


def test_node_local_dns_selected_by_expression_is_blocked() -> None:
    selector = {
        "matchExpressions": [
            {"key": "k8s-app", "operator": "In", "values": ["kube-dns", "node-local-dns"]}
        ]
    }
    doc = policy(
        {"toEndpoints": [selector], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}
    )
    assert findings(doc) == {("error", "aks.node-local-dns", "spec.egress[0].toEndpoints[0]")}


def test_node_local_dns_pods_on_a_non_dns_port_are_not_a_dns_peer() -> None:
    doc = policy(
        {
            "toEndpoints": [{"matchLabels": {"k8s-app": "node-local-dns"}}],
            "toPorts": [{"ports": [{"port": "9253", "protocol": "TCP"}]}],
        }
    )
    assert findings(doc) == set()


def test_node_local_dns_addresses_come_from_the_settings() -> None:
    rule = {
        "toCIDR": ["10.96.0.10/32"],
        "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}],
    }
    assert findings(policy(rule)) == set()
    custom = PolicySettings(node_local_dns_addresses=["10.96.0.10"])
    assert findings(policy(rule), custom) == {
        ("error", "aks.node-local-dns", "spec.egress[0].toCIDR[0]")
    }
    default = policy({"toCIDRSet": [{"cidr": "169.254.20.10/32"}]})
    assert findings(default) == {
        ("error", "aks.node-local-dns", "spec.egress[0].toCIDRSet[0].cidr")
    }


def test_a_wide_prefix_that_merely_contains_node_local_dns_is_not_blocked() -> None:
    doc = policy(
        {"toCIDR": ["0.0.0.0/0"], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}
    )
    assert findings(doc) == set()


def test_to_fqdns_without_any_dns_rule_for_its_pods_is_warned_about() -> None:
    doc = policy({"toFQDNs": [{"matchName": "api.example.com"}]})
    verdict = validate(doc, PolicySettings())
    assert verdict.admitted
    (finding,) = verdict.findings
    assert (finding.rule, finding.path) == ("aks.fqdn-without-dns-rule", "spec.egress[0].toFQDNs")
    assert "matchName: 'api.example.com'" in finding.message


def test_a_dns_rule_for_other_pods_does_not_cover_to_fqdns() -> None:
    doc = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p"},
        "specs": [
            {
                "endpointSelector": {"matchLabels": {"app": "a"}},
                "egress": [dns_rule({"matchPattern": "*.example.com"}, CLUSTER_NAMES)],
            },
            {
                "endpointSelector": {"matchLabels": {"app": "b"}},
                "egress": [{"toFQDNs": [{"matchPattern": "*.example.com"}]}],
            },
        ],
    }
    assert findings(doc) == {("warning", "aks.fqdn-without-dns-rule", "specs[1].egress[0].toFQDNs")}


def test_a_dns_rule_for_every_pod_of_the_namespace_covers_to_fqdns() -> None:
    doc = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p"},
        "specs": [
            {
                "endpointSelector": {},
                "egress": [dns_rule({"matchPattern": "*.example.com"}, CLUSTER_NAMES)],
            },
            {
                "endpointSelector": {"matchLabels": {"app": "b"}},
                "egress": [{"toFQDNs": [{"matchPattern": "*.example.com"}]}],
            },
        ],
    }
    assert findings(doc) == set()


def test_to_fqdns_names_the_dns_rules_refuse_are_warned_about() -> None:
    doc = policy(
        dns_rule({"matchPattern": "app*.example.com"}, CLUSTER_NAMES),
        {
            "toFQDNs": [
                {"matchPattern": "app*.example.com"},
                {"matchPattern": "*.example.com"},
                {"matchName": "x.org"},
            ]
        },
    )
    assert findings(doc) == {
        ("warning", "aks.fqdn-not-in-dns-rules", "spec.egress[1].toFQDNs[1]"),
        ("warning", "aks.fqdn-not-in-dns-rules", "spec.egress[1].toFQDNs[2]"),
    }


def test_dns_rules_that_leave_no_in_cluster_name_resolvable_are_warned_about() -> None:
    doc = policy(
        dns_rule({"matchPattern": "*.example.com"}),
        {"toFQDNs": [{"matchPattern": "*.example.com"}]},
    )
    assert findings(doc) == {
        ("warning", "aks.dns-blocks-cluster-names", "spec.egress[0].toPorts[0].rules.dns")
    }


@pytest.mark.parametrize(
    "allowed",
    [
        {"matchPattern": "*.*.svc.cluster.local"},
        {"matchPattern": "*.my-ns.svc.cluster.local"},
        {"matchName": "kubernetes.default.svc.cluster.local"},
    ],
)
def test_any_allowed_in_cluster_name_avoids_the_cluster_names_warning(
    allowed: dict[str, str],
) -> None:
    doc = policy(dns_rule({"matchPattern": "*.example.com"}, allowed))
    assert findings(doc) == set()


def test_dns_rules_toward_an_outside_resolver_do_not_affect_cluster_names() -> None:
    doc = policy(dns_rule({"matchPattern": "*.example.com"}, peer={"toCIDR": ["192.0.2.53/32"]}))
    assert findings(doc) == set()


def test_a_multilevel_prefix_is_a_warning_by_default_and_an_error_when_disallowed() -> None:
    doc = policy(
        dns_rule({"matchPattern": "**.example.com"}, CLUSTER_NAMES),
        {"toFQDNs": [{"matchPattern": "**.example.com"}]},
    )
    paths = {
        "spec.egress[0].toPorts[0].rules.dns[0].matchPattern",
        "spec.egress[1].toFQDNs[0].matchPattern",
    }
    assert findings(doc) == {("warning", "cilium.multilevel-prefix", path) for path in paths}
    strict = PolicySettings(allow_multilevel_prefix=False)
    assert findings(doc, strict) == {("error", "cilium.multilevel-prefix", path) for path in paths}


def test_a_parsed_model_can_be_validated_directly() -> None:
    parsed = parse_policy(policy({"toFQDNs": [{"matchPattern": "*"}]}))
    assert parsed.policy is not None
    verdict = validate(parsed.policy, PolicySettings())
    assert not verdict.admitted
    assert "aks.match-all" in {f.rule for f in verdict.errors}


def test_the_verdict_summarises_and_lists_errors_before_warnings() -> None:
    doc = policy({"toFQDNs": [{"matchName": "a.example.com"}, {"matchPattern": "*"}]})
    verdict = validate(doc, PolicySettings())
    assert verdict.summary == "blocked (1 error, 1 warning)"
    assert verdict.messages()[0].startswith("spec.egress[0].toFQDNs[1].matchPattern:")
    assert verdict.to_dict()["verdict"] == "blocked"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=25,
)
NAMES = st.sampled_from(
    [
        "*",
        "**.",
        "*.example.com",
        "a.svc.cluster.local",
        "x y",
        "",
        "**.a.b",
        "169.254.20.10/32",
        "2001:db8::/32",
        "53",
        "0",
    ]
)
selectors = st.fixed_dictionaries({}, optional={"matchName": NAMES, "matchPattern": NAMES})
ports = st.fixed_dictionaries(
    {},
    optional={
        "port": NAMES,
        "endPort": st.integers(-1, 70000),
        "protocol": st.sampled_from(["TCP", "UDP", "ANY", "SCTP", "tcp"]),
    },
)
port_rules = st.fixed_dictionaries(
    {},
    optional={
        "ports": st.lists(ports, max_size=3),
        "rules": st.fixed_dictionaries(
            {},
            optional={
                "dns": st.lists(selectors, max_size=3),
                "http": st.lists(st.just({}), max_size=1),
                "l7": json_values,
            },
        ),
        "serverNames": st.lists(NAMES, max_size=2),
    },
)
egress_rules = st.fixed_dictionaries(
    {},
    optional={
        "toFQDNs": st.lists(selectors, max_size=3),
        "toEndpoints": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "matchLabels": st.dictionaries(
                        st.sampled_from(["k8s-app", "k8s:k8s-app", "app"]),
                        st.sampled_from(["kube-dns", "node-local-dns", "x"]),
                    )
                },
            ),
            max_size=2,
        ),
        "toCIDR": st.lists(NAMES, max_size=2),
        "toCIDRSet": st.lists(
            st.fixed_dictionaries(
                {}, optional={"cidr": NAMES, "except": st.lists(NAMES, max_size=2)}
            ),
            max_size=2,
        ),
        "toPorts": st.lists(port_rules, max_size=2),
        "icmps": json_values,
        "junk": json_values,
    },
)
rule_bodies = st.fixed_dictionaries(
    {},
    optional={
        "endpointSelector": st.just({}) | json_values,
        "nodeSelector": st.just({}),
        "egress": st.lists(egress_rules, max_size=3) | json_values,
        "ingress": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "toPorts": st.lists(port_rules, max_size=2),
                    "fromCIDR": st.lists(NAMES, max_size=2),
                },
            ),
            max_size=2,
        ),
        "egressDeny": st.lists(egress_rules, max_size=2),
    },
)
documents = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "Other"])
        | json_values
    },
    optional={
        "apiVersion": st.just("cilium.io/v2") | json_values,
        "metadata": st.just({"name": "p"}) | json_values,
        "spec": rule_bodies | json_values,
        "specs": st.lists(rule_bodies, max_size=2) | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(documents | json_values)
def test_validation_never_raises_and_never_fails_internally(document: Any) -> None:
    verdict = validate(document, PolicySettings())
    assert "internal" not in {finding.rule for finding in verdict.findings}
    if verdict.findings:
        assert all(finding.severity in ("error", "warning") for finding in verdict.findings)
    else:
        assert verdict.admitted
