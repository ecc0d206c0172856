"""Admission answers: denials list every error with its path, warnings pass through."""

from __future__ import annotations

from typing import Any

from acns_operator.operator.admission import (
    decide_admission,
    describe_object,
    is_metadata_only_update,
    to_denial_message,
)
from acns_operator.operator.judgement import Issue, Judgement

BLOCKED = Judgement(
    "CiliumNetworkPolicy",
    (
        Issue("error", "spec.egress[0].toPorts[0].rules.http", "HTTP rules are not supported"),
        Issue("warning", "spec.egress[1].toFQDNs", "no DNS rule covers it"),
        Issue("error", "spec.egress[2].toServices", "toServices is not supported"),
    ),
)
WARNED = Judgement("CiliumNetworkPolicy", (Issue("warning", "spec.egress[0]", "careful"),))
CLEAN = Judgement("CiliumClusterwideNetworkPolicy")


def test_a_blocked_policy_is_denied_with_every_error_and_its_field_path() -> None:
    decision = decide_admission(BLOCKED, operation="CREATE", namespace="ns", name="web")
    assert not decision.allowed
    assert decision.verdict == "denied"
    assert decision.message.splitlines() == [
        "CiliumNetworkPolicy ns/web is blocked (not supported by the AKS/ACNS profile):",
        "- spec.egress[0].toPorts[0].rules.http: HTTP rules are not supported",
        "- spec.egress[2].toServices: toServices is not supported",
    ]
    assert decision.warnings == ("spec.egress[1].toFQDNs: no DNS rule covers it",)


def test_a_policy_with_warnings_is_admitted_and_each_warning_is_returned() -> None:
    decision = decide_admission(WARNED, operation="CREATE", namespace="ns", name="web")
    assert decision.allowed
    assert decision.verdict == "warned"
    assert decision.warnings == ("spec.egress[0]: careful",)


def test_a_clean_policy_is_admitted_without_warnings() -> None:
    decision = decide_admission(CLEAN, operation="UPDATE", namespace=None, name="all")
    assert decision.allowed
    assert decision.verdict == "admitted"
    assert decision.warnings == ()
    assert decision.message == ""


def test_a_cluster_scoped_object_is_named_without_a_namespace() -> None:
    assert describe_object("CiliumClusterwideNetworkPolicy", None, "x") == (
        "CiliumClusterwideNetworkPolicy x"
    )
    assert to_denial_message(BLOCKED, None, None).startswith("CiliumNetworkPolicy (unnamed) is")


def test_a_metadata_only_update_of_a_stored_blocked_policy_is_admitted_with_warnings() -> None:
    old: dict[str, Any] = {"metadata": {"labels": {}}, "spec": {"egress": [{}]}}
    new: dict[str, Any] = {"metadata": {"labels": {"a": "b"}}, "spec": {"egress": [{}]}}
    decision = decide_admission(
        BLOCKED, operation="UPDATE", namespace="ns", name="web", old=old, new=new
    )
    assert decision.allowed
    assert decision.warnings[0] == (
        "not enforced: spec.egress[0].toPorts[0].rules.http: HTTP rules are not supported"
    )


def test_an_update_that_changes_the_spec_of_a_blocked_policy_is_denied() -> None:
    old: dict[str, Any] = {"spec": {"egress": [{}]}}
    new: dict[str, Any] = {"spec": {"egress": [{}, {}]}}
    decision = decide_admission(
        BLOCKED, operation="UPDATE", namespace="ns", name="web", old=old, new=new
    )
    assert not decision.allowed


def test_only_updates_count_as_metadata_only() -> None:
    body: dict[str, Any] = {"spec": {}}
    assert is_metadata_only_update("UPDATE", body, body)
    assert not is_metadata_only_update("CREATE", body, body)
    assert not is_metadata_only_update("UPDATE", None, body)
    assert not is_metadata_only_update("UPDATE", {"specs": []}, {"specs": [{}]})
