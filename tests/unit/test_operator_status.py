"""The Valid condition and the Warning Event follow Cilium's operator exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from acns_operator.operator.judgement import Issue, Judgement
from acns_operator.operator.status import (
    EVENT_MESSAGE_LIMIT,
    SUCCEEDED,
    ObjectRef,
    build_event,
    derive_conditions,
    derive_event_name,
    derive_valid_condition,
    find_condition,
    should_post_event,
    to_condition_message,
    to_event_message,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)

VALID = Judgement("CiliumNetworkPolicy")
BLOCKED = Judgement(
    "CiliumNetworkPolicy",
    (
        Issue("error", "spec.egress[0].toPorts[0].rules.http", "HTTP rules are not supported"),
        Issue("error", "spec.egress[1].toFQDNs[0].matchPattern", "'*' matches every name"),
    ),
)
OTHER_BLOCKED = Judgement("CiliumNetworkPolicy", (Issue("error", "spec", "something else"),))
WARNED = Judgement(
    "CiliumNetworkPolicy", (Issue("warning", "spec.egress[0].toFQDNs", "no DNS rule covers it"),)
)


def test_an_admitted_policy_gets_valid_true_with_ciliums_message_and_no_reason() -> None:
    condition = derive_valid_condition(VALID, None, T0)
    assert condition == {
        "type": "Valid",
        "status": "True",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "message": "Policy validation succeeded",
    }
    assert "reason" not in condition


def test_a_blocked_policy_gets_valid_false_with_every_error_joined_by_newlines() -> None:
    condition = derive_valid_condition(BLOCKED, None, T0)
    assert condition["status"] == "False"
    assert condition["message"] == (
        "spec.egress[0].toPorts[0].rules.http: HTTP rules are not supported\n"
        "spec.egress[1].toFQDNs[0].matchPattern: '*' matches every name"
    )


def test_warnings_keep_the_success_message_first_and_list_each_warning() -> None:
    message = to_condition_message(WARNED)
    assert message.splitlines() == [
        SUCCEEDED,
        "warning: spec.egress[0].toFQDNs: no DNS rule covers it",
    ]
    assert derive_valid_condition(WARNED, None, T0)["status"] == "True"


def test_nothing_is_written_when_the_stored_condition_is_already_right() -> None:
    stored = {"conditions": [derive_valid_condition(BLOCKED, None, T0)]}
    assert derive_conditions(stored, BLOCKED, T1) is None


def test_a_changed_message_without_a_flip_keeps_the_transition_time() -> None:
    stored = {"conditions": [derive_valid_condition(BLOCKED, None, T0)]}
    conditions = derive_conditions(stored, OTHER_BLOCKED, T1)
    assert conditions is not None
    assert conditions[0]["message"] == "spec: something else"
    assert conditions[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def test_a_flip_moves_the_transition_time() -> None:
    stored = {"conditions": [derive_valid_condition(VALID, None, T0)]}
    conditions = derive_conditions(stored, BLOCKED, T1)
    assert conditions is not None
    assert conditions[0]["status"] == "False"
    assert conditions[0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"


def test_conditions_of_other_types_are_kept_in_place() -> None:
    other = {"type": "Ready", "status": "True", "reason": "X", "message": "m"}
    stored = {"conditions": [other, {"type": "Valid", "status": "False", "message": "old"}]}
    conditions = derive_conditions(stored, VALID, T0)
    assert conditions is not None
    assert conditions[0] == other
    assert conditions[1]["type"] == "Valid"
    assert conditions[1]["status"] == "True"


def test_a_stored_condition_without_transition_time_is_completed() -> None:
    stored = {"conditions": [{"type": "Valid", "status": "True", "message": SUCCEEDED}]}
    conditions = derive_conditions(stored, VALID, T0)
    assert conditions == [derive_valid_condition(VALID, None, T0)]


def test_duplicate_valid_entries_collapse_into_one() -> None:
    stored = {
        "conditions": [
            {"type": "Valid", "status": "True", "message": "a"},
            {"type": "Valid", "status": "False", "message": "b"},
        ]
    }
    conditions = derive_conditions(stored, VALID, T0)
    assert conditions is not None
    assert [c["type"] for c in conditions] == ["Valid"]


def test_garbage_in_status_is_treated_as_no_condition() -> None:
    assert find_condition({"conditions": "nonsense"}) is None
    assert find_condition(None) is None
    conditions = derive_conditions({"conditions": [1, "x"]}, VALID, T0)
    assert conditions == [derive_valid_condition(VALID, None, T0)]


def test_an_event_is_posted_when_a_policy_first_becomes_invalid() -> None:
    desired = derive_valid_condition(BLOCKED, None, T0)
    assert should_post_event(None, desired)
    assert should_post_event(derive_valid_condition(VALID, None, T0), desired)


def test_no_event_is_posted_again_for_the_same_stored_invalid_condition() -> None:
    stored = derive_valid_condition(BLOCKED, None, T0)
    assert not should_post_event(stored, derive_valid_condition(BLOCKED, stored, T1))


def test_an_event_is_posted_when_the_errors_of_an_invalid_policy_change() -> None:
    stored = derive_valid_condition(BLOCKED, None, T0)
    assert should_post_event(stored, derive_valid_condition(OTHER_BLOCKED, stored, T1))


def test_no_event_is_posted_for_valid_policies() -> None:
    assert not should_post_event(None, derive_valid_condition(VALID, None, T0))
    assert not should_post_event(None, derive_valid_condition(WARNED, None, T0))


def _body(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "web", "namespace": "team-a", "uid": "u-1", **meta},
    }


def test_the_event_name_is_stable_for_one_finding_on_one_generation() -> None:
    ref = ObjectRef.from_body(_body())
    message = to_event_message(BLOCKED)
    assert derive_event_name(ref, 1, message) == derive_event_name(ref, 1, message)
    assert derive_event_name(ref, 1, message) != derive_event_name(ref, 2, message)
    assert derive_event_name(ref, 1, message).startswith("web.acns-")


def test_the_event_names_the_object_and_every_error() -> None:
    ref = ObjectRef.from_body(_body(resourceVersion="7"))
    event = build_event(
        ref,
        message=to_event_message(BLOCKED),
        name="web.acns-x",
        event_namespace="team-a",
        component="acns-operator",
        instance="pod-1",
        now=T0,
    )
    assert event["type"] == "Warning"
    assert event["involvedObject"] == {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "name": "web",
        "namespace": "team-a",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert "spec.egress[0].toPorts[0].rules.http" in event["message"]
    assert "spec.egress[1].toFQDNs[0].matchPattern" in event["message"]
    assert event["source"] == {"component": "acns-operator"}


def test_an_event_about_a_cluster_scoped_policy_has_no_namespace_in_its_reference() -> None:
    body: dict[str, Any] = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "ccnp", "uid": "u-2"},
    }
    event = build_event(
        ObjectRef.from_body(body),
        message="m",
        name="n",
        event_namespace="default",
        component="c",
        instance="i",
        now=T0,
    )
    assert "namespace" not in event["involvedObject"]
    assert event["metadata"]["namespace"] == "default"


def test_very_long_event_messages_are_cut_to_the_limit() -> None:
    many = tuple(Issue("error", f"spec.egress[{i}]", "x" * 50) for i in range(100))
    assert len(to_event_message(Judgement("CiliumNetworkPolicy", many))) == EVENT_MESSAGE_LIMIT


_messages = st.sampled_from(
    [SUCCEEDED, to_condition_message(BLOCKED), to_condition_message(WARNED), "", "x"]
)
_conditions = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Valid", "Ready", "Other"]),
            "status": st.sampled_from(["True", "False"]),
        },
        optional={
            "message": _messages,
            "lastTransitionTime": st.just("2020-01-01T00:00:00Z"),
            "reason": st.just("Something"),
        },
    ),
    max_size=4,
)


@given(_conditions, st.sampled_from([VALID, BLOCKED, WARNED]))
def test_deriving_twice_converges_after_one_write(
    conditions: list[dict[str, Any]], judgement: Judgement
) -> None:
    first = derive_conditions({"conditions": conditions}, judgement, T0)
    stored = first if first is not None else conditions
    assert derive_conditions({"conditions": stored}, judgement, T1) is None
    assert sum(1 for c in stored if c["type"] == "Valid") == 1
