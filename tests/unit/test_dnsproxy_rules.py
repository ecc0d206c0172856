"""Snapshots compile to per-endpoint rules, persist atomically and decide queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acns_operator.dnsproxy import decision as decision_module
from acns_operator.dnsproxy import rules
from acns_operator.dnsproxy.decision import Verdict, decide
from acns_operator.errors import InputError

CLUSTER_DNS = "10.244.250.10"
POD = "10.244.1.5"


def snapshot(**rule_overrides: object) -> rules.SnapshotModel:
    rule: dict[str, object] = {
        "match_names": ["payments.example.test"],
        "match_patterns": ["*.example.test"],
        "servers": [
            {"prefixes": [f"{CLUSTER_DNS}/32", "10.244.1.53/32"], "port": 53, "protocol": 17}
        ],
        "source": {
            "kind": "CiliumNetworkPolicy",
            "namespace": "shop",
            "name": "backend",
            "path": "spec.egress[0]",
        },
    }
    rule.update(rule_overrides)
    return rules.SnapshotModel.model_validate(
        {
            "revision": 3,
            "endpoints": [
                {
                    "endpoint_id": 7,
                    "ips": [POD],
                    "namespace": "shop",
                    "pod_name": "backend-0",
                    "search_suffixes": [
                        "shop.svc.cluster.local",
                        "svc.cluster.local",
                        "cluster.local",
                    ],
                    "rules": [rule],
                }
            ],
        }
    )


def check(
    ruleset: rules.RuleSet,
    name: str,
    *,
    dst: str = CLUSTER_DNS,
    port: int = 53,
    proto: int = 17,
    help_: bool = False,
) -> Verdict:
    return decide(ruleset, POD, dst, port, proto, name, search_suffix_help=help_).verdict


def test_an_allowed_name_is_allowed_and_names_its_policy() -> None:
    ruleset = rules.compile_snapshot(snapshot())
    decision = decide(ruleset, POD, CLUSTER_DNS, 53, 17, "payments.example.test.")
    assert decision.verdict is Verdict.ALLOWED
    assert decision.rule is not None
    assert decision.rule.name == "backend"


def test_a_single_star_allows_one_label_but_not_two_and_not_the_apex() -> None:
    ruleset = rules.compile_snapshot(snapshot(match_names=[]))
    assert check(ruleset, "api.example.test.") is Verdict.ALLOWED
    assert check(ruleset, "a.b.example.test.") is Verdict.DENIED
    assert check(ruleset, "example.test.") is Verdict.DENIED


def test_an_unknown_source_address_is_an_unknown_endpoint() -> None:
    ruleset = rules.compile_snapshot(snapshot())
    assert (
        decide(ruleset, "10.244.9.9", CLUSTER_DNS, 53, 17, "payments.example.test.").verdict
        is Verdict.UNKNOWN_ENDPOINT
    )


def test_a_query_to_a_server_port_or_protocol_outside_the_rule_is_denied() -> None:
    ruleset = rules.compile_snapshot(snapshot())
    assert check(ruleset, "payments.example.test.", dst="192.0.2.53") is Verdict.DENIED
    assert check(ruleset, "payments.example.test.", port=5353) is Verdict.DENIED
    assert check(ruleset, "payments.example.test.", proto=6) is Verdict.DENIED


def test_a_rule_without_servers_or_with_wildcard_fields_applies_everywhere() -> None:
    ruleset = rules.compile_snapshot(snapshot(servers=[]))
    assert (
        check(ruleset, "payments.example.test.", dst="198.51.100.1", port=5353, proto=6)
        is Verdict.ALLOWED
    )
    ruleset = rules.compile_snapshot(snapshot(servers=[{"prefixes": [], "port": 0, "protocol": 0}]))
    assert check(ruleset, "payments.example.test.", dst="203.0.113.9", proto=6) is Verdict.ALLOWED


def test_an_allow_all_rule_allows_every_name_toward_its_server_only() -> None:
    ruleset = rules.compile_snapshot(snapshot(match_names=[], match_patterns=[], allow_all=True))
    assert check(ruleset, "anything.at.all.") is Verdict.ALLOWED
    assert check(ruleset, "anything.at.all.", dst="192.0.2.1") is Verdict.DENIED


def test_an_endpoint_without_rules_may_query_nothing() -> None:
    model = snapshot()
    model.endpoints[0].rules.clear()
    assert check(rules.compile_snapshot(model), "payments.example.test.") is Verdict.DENIED


def test_search_suffix_help_is_off_by_default_and_allows_allowed_names_with_a_search_suffix() -> (
    None
):
    ruleset = rules.compile_snapshot(snapshot())
    name = "payments.example.test.shop.svc.cluster.local."
    assert check(ruleset, name) is Verdict.DENIED
    assert check(ruleset, name, help_=True) is Verdict.ALLOWED
    assert check(ruleset, "payments.example.test.cluster.local.", help_=True) is Verdict.ALLOWED
    assert check(ruleset, "evil.test.shop.svc.cluster.local.", help_=True) is Verdict.DENIED
    decision = decide(ruleset, POD, CLUSTER_DNS, 53, 17, name, search_suffix_help=True)
    assert decision.search_suffix == ".shop.svc.cluster.local."


def test_an_invalid_selector_is_reported_and_allows_nothing() -> None:
    ruleset = rules.compile_snapshot(snapshot(match_names=["bad name!"], match_patterns=[]))
    assert ruleset.problems
    assert "bad name!" in ruleset.problems[0]
    assert check(ruleset, "payments.example.test.") is Verdict.DENIED


def test_the_protobuf_snapshot_round_trips_through_the_file_model() -> None:
    model = snapshot()
    back = rules.to_snapshot_model(rules.to_policy_state(model))
    assert back == model


def test_a_snapshot_is_saved_atomically_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "snapshot.json"
    rules.save_snapshot(snapshot(), path)
    loaded = rules.load_snapshot(path)
    assert loaded.endpoints == snapshot().endpoints
    assert loaded.saved_at.endswith("Z")
    assert [p.name for p in path.parent.iterdir()] == ["snapshot.json"]
    assert json.loads(path.read_text())["format"] == rules.SNAPSHOT_FORMAT


def test_a_broken_snapshot_file_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match=r"snapshot\.json"):
        rules.load_snapshot(path)
    with pytest.raises(InputError, match="cannot read"):
        rules.load_snapshot(tmp_path / "missing.json")


def test_one_thousand_policies_compile_into_one_matcher_per_server_group() -> None:
    model = rules.SnapshotModel.model_validate(
        {
            "endpoints": [
                {
                    "ips": ["127.0.0.1"],
                    "rules": [
                        {
                            "match_names": [f"host{i}.allowed.test"],
                            "match_patterns": [f"*.zone{i}.allowed.test"],
                        }
                        for i in range(1000)
                    ],
                }
            ]
        }
    )
    ruleset = rules.compile_snapshot(model)
    endpoint = ruleset.by_ip["127.0.0.1"]
    assert len(endpoint.groups) == 1
    assert len(endpoint.groups[0].matcher) == 2000
    decision = decide(ruleset, "127.0.0.1", "127.0.0.1", 5353, 17, "x.zone999.allowed.test.")
    assert decision.verdict is Verdict.ALLOWED
    assert decision.rule is not None
    assert decision.rule == endpoint.sources[999]


def test_a_repeated_query_is_decided_from_the_memo_which_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ruleset = rules.compile_snapshot(snapshot())
    first = decide(ruleset, POD, CLUSTER_DNS, 53, 17, "api.example.test.")
    again = decide(ruleset, POD, CLUSTER_DNS, 53, 17, "api.example.test.")
    assert again is first
    monkeypatch.setattr(decision_module, "MEMO_MAX", 3)
    for index in range(10):
        decide(ruleset, POD, CLUSTER_DNS, 53, 17, f"n{index}.example.test.")
    assert len(ruleset.memo) <= 3
    # a new rule set starts with no memory of the old one's decisions
    assert rules.compile_snapshot(snapshot(match_names=[], match_patterns=[])).memo == {}
