"""Parsing arbitrary input into policy models: unknown fields, types, recovery."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from acns_operator.api.findings import format_path
from acns_operator.api.objects import CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy
from acns_operator.api.parsing import is_policy_kind, parse_policy


def cnp(spec: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": spec,
        **top,
    }


def paths_and_rules(obj: Any) -> set[tuple[str, str]]:
    return {(finding.path, finding.rule) for finding in parse_policy(obj).findings}


def test_a_well_formed_policy_parses_with_no_findings_and_keeps_its_aliases() -> None:
    doc = cnp(
        {
            "endpointSelector": {"matchLabels": {"app": "a"}},
            "egress": [{"toFQDNs": [{"matchPattern": "*.example.com"}]}],
        }
    )
    parsed = parse_policy(doc)
    assert parsed.findings == []
    assert isinstance(parsed.policy, CiliumNetworkPolicy)
    assert parsed.policy.to_wire()["spec"] == doc["spec"]


def test_a_clusterwide_policy_parses_into_its_own_model() -> None:
    doc = cnp({"endpointSelector": {}, "egress": [{}]}, kind="CiliumClusterwideNetworkPolicy")
    assert isinstance(parse_policy(doc).policy, CiliumClusterwideNetworkPolicy)


def test_an_unknown_field_is_reported_with_its_path_and_a_spelling_suggestion() -> None:
    doc = cnp({"endpointSelector": {}, "egress": [{"toFQDN": [{"matchName": "a.com"}]}]})
    (finding,) = parse_policy(doc).findings
    assert (finding.path, finding.rule) == ("spec.egress[0].toFQDN", "schema.unknown-field")
    assert "did you mean 'toFQDNs'" in finding.message


def test_ports_directly_in_an_egress_rule_get_a_hint_to_use_to_ports() -> None:
    doc = cnp({"endpointSelector": {}, "egress": [{"ports": [{"port": 443}]}]})
    (finding,) = parse_policy(doc).findings
    assert finding.path == "spec.egress[0].ports"
    assert "toPorts" in finding.message


def test_to_fqdns_in_egress_deny_is_unknown_and_explained() -> None:
    doc = cnp({"endpointSelector": {}, "egressDeny": [{"toFQDNs": [{"matchName": "a.com"}]}]})
    (finding,) = parse_policy(doc).findings
    assert finding.path == "spec.egressDeny[0].toFQDNs"
    assert "cannot deny traffic by DNS name" in finding.message


def test_l7_rules_in_a_deny_rule_are_unknown_and_explained() -> None:
    doc = cnp({"endpointSelector": {}, "ingressDeny": [{"toPorts": [{"rules": {"dns": []}}]}]})
    (finding,) = parse_policy(doc).findings
    assert finding.path == "spec.ingressDeny[0].toPorts[0].rules"
    assert "deny rules cannot have L7 rules" in finding.message


def test_a_numeric_port_is_a_type_error_that_says_to_quote_it() -> None:
    doc = cnp({"endpointSelector": {}, "egress": [{"toPorts": [{"ports": [{"port": 53}]}]}]})
    (finding,) = parse_policy(doc).findings
    assert finding.path == "spec.egress[0].toPorts[0].ports[0].port"
    assert 'port: "53"' in finding.message


def test_enum_range_and_label_value_problems_are_reported_with_paths() -> None:
    doc = cnp(
        {
            "endpointSelector": {"matchLabels": {"k8s:app": "-bad-"}},
            "egress": [
                {
                    "toEntities": ["everywhere"],
                    "toPorts": [{"ports": [{"port": "1", "endPort": 70000, "protocol": "tcp"}]}],
                }
            ],
        }
    )
    assert paths_and_rules(doc) == {
        ('spec.endpointSelector.matchLabels["k8s:app"]', "schema.pattern"),
        ("spec.egress[0].toEntities[0]", "schema.enum"),
        ("spec.egress[0].toPorts[0].ports[0].endPort", "schema.out-of-range"),
        ("spec.egress[0].toPorts[0].ports[0].protocol", "schema.enum"),
    }


def test_more_than_forty_ports_are_too_many() -> None:
    ports = [{"port": str(1000 + index)} for index in range(41)]
    doc = cnp({"endpointSelector": {}, "egress": [{"toPorts": [{"ports": ports}]}]})
    assert paths_and_rules(doc) == {("spec.egress[0].toPorts[0].ports", "schema.too-many-items")}


def test_parsing_continues_past_bad_values_and_keeps_the_rest_of_the_policy() -> None:
    doc = cnp(
        {
            "endpointSelector": {},
            "egress": [
                "not an object",
                {"toCIDR": ["192.0.2.0/24", 7]},
                {"toFQDNs": [{"matchName": "kept.example.com"}]},
            ],
        }
    )
    parsed = parse_policy(doc)
    assert {(f.path, f.rule) for f in parsed.findings} == {
        ("spec.egress[0]", "schema.type"),
        ("spec.egress[1].toCIDR[1]", "schema.type"),
    }
    assert parsed.policy is not None
    assert parsed.policy.spec is not None
    egress = parsed.policy.spec.egress or []
    # Indexes are preserved, so later findings keep true paths.
    assert len(egress) == 3
    assert egress[2].to_fqdns is not None
    assert egress[2].to_fqdns[0].match_name == "kept.example.com"
    assert "spec.egress[1].toCIDR" in parsed.pruned


def test_parsing_leaves_the_callers_document_untouched() -> None:
    doc = cnp({"endpointSelector": {}, "egress": [{"bogus": 1}]})
    before = copy.deepcopy(doc)
    parse_policy(doc)
    assert doc == before


def test_a_wrong_api_version_or_a_foreign_kind_is_reported() -> None:
    assert ("apiVersion", "schema.api-version") in paths_and_rules(
        cnp({"endpointSelector": {}, "egress": [{}]}, apiVersion="cilium.io/v1")
    )
    parsed = parse_policy({"apiVersion": "v1", "kind": "ConfigMap"})
    assert parsed.policy is None
    assert [f.rule for f in parsed.findings] == ["schema.kind"]


def test_a_non_mapping_is_not_an_object() -> None:
    for value in (None, "text", 3, ["a"]):
        parsed = parse_policy(value)
        assert parsed.policy is None
        assert [f.rule for f in parsed.findings] == ["schema.not-an-object"]


def test_only_cilium_policy_kinds_count_as_policies() -> None:
    assert is_policy_kind({"kind": "CiliumNetworkPolicy"})
    assert is_policy_kind({"kind": "CiliumClusterwideNetworkPolicy"})
    assert not is_policy_kind({"kind": "NetworkPolicy"})
    assert not is_policy_kind("CiliumNetworkPolicy")


def test_metadata_may_hold_any_server_side_field() -> None:
    doc = cnp({"endpointSelector": {}, "egress": [{}]})
    doc["metadata"].update(uid="1", resourceVersion="2", managedFields=[{"a": 1}])
    assert parse_policy(doc).findings == []


def test_a_self_referencing_document_is_reported_not_crashed_on() -> None:
    rules: list[Any] = []
    rules.append({"toEndpoints": rules})
    parsed = parse_policy(cnp({"endpointSelector": {}, "egress": rules}))
    assert parsed.findings


def test_paths_quote_map_keys_that_are_not_plain_names() -> None:
    assert format_path(["spec", "egress", 1, "toPorts", 0]) == "spec.egress[1].toPorts[0]"
    assert format_path(["m", "k8s:app"]) == 'm["k8s:app"]'
    assert format_path([]) == ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["spec", "specs", "egress", "toPorts", "ports", "port", "rules", "dns", "toFQDNs"]


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["apiVersion", "kind", "metadata", *FIELDS]) | st.text(max_size=6),
        json_values,
        max_size=6,
    )
)
def test_parsing_never_raises_on_arbitrary_input(document: dict[str, Any]) -> None:
    document.setdefault("kind", "CiliumNetworkPolicy")
    parsed = parse_policy(document)
    assert parsed.policy is not None or parsed.findings
