"""The ``Valid`` status condition and the Warning Event, exactly as Cilium writes them.

Pure functions only (the reconciler does the I/O). Cilium's operator
(``operator/pkg/networkpolicy``) writes one condition of type ``Valid``:

- ``status: "True"``, ``message: "Policy validation succeeded"``, or
- ``status: "False"``, ``message``: the errors joined by newlines (Go's ``errors.Join``);
- ``reason`` empty (so omitted, as Go's ``omitempty`` does);
- ``lastTransitionTime`` moved only when the status flips;
- nothing written when nothing changed.

Warnings have no Cilium counterpart: an admitted policy with warnings keeps
``status: "True"`` and Cilium's message as the first line, the warnings on the next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from acns_operator.operator.judgement import Judgement

VALID = "Valid"
SUCCEEDED = "Policy validation succeeded"
EVENT_REASON = "PolicyNotEnforced"
# core/v1 Event messages are not length-checked, but events.k8s.io/v1 caps note at
# 1 KiB and kubectl's tables become unreadable well before that.
EVENT_MESSAGE_LIMIT = 1024


def to_condition_message(judgement: Judgement) -> str:
    """The condition message: Cilium's success text, or the joined error findings."""
    if judgement.errors:
        return "\n".join(issue.describe() for issue in judgement.errors)
    if judgement.warnings:
        lines = [f"warning: {issue.describe()}" for issue in judgement.warnings]
        return "\n".join([SUCCEEDED, *lines])
    return SUCCEEDED


def to_timestamp(moment: datetime) -> str:
    """RFC 3339 with second precision in UTC, as ``metav1.Time`` serialises."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(status: Mapping[str, Any] | None, kind: str = VALID) -> dict[str, Any] | None:
    """The condition of the given type in ``status.conditions``, if there is one."""
    if not isinstance(status, Mapping):
        return None
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return dict(condition)
    return None


def derive_valid_condition(
    judgement: Judgement, current: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The ``Valid`` condition to store, keeping the transition time unless it flips."""
    status = "True" if judgement.admitted else "False"
    transition = to_timestamp(now)
    if current is not None and current.get("status") == status:
        previous = current.get("lastTransitionTime")
        if isinstance(previous, str) and previous:
            transition = previous
    return {
        "type": VALID,
        "status": status,
        "lastTransitionTime": transition,
        "message": to_condition_message(judgement),
    }


def derive_conditions(
    status: Mapping[str, Any] | None, judgement: Judgement, now: datetime
) -> list[dict[str, Any]] | None:
    """The whole new ``status.conditions`` list, or None when nothing must be written.

    Conditions of other types are kept as they are and in their place; the ``Valid``
    one is replaced or appended.
    """
    current = find_condition(status)
    desired = derive_valid_condition(judgement, current, now)
    existing: Sequence[Any] = ()
    if isinstance(status, Mapping) and isinstance(status.get("conditions"), list):
        existing = status["conditions"]
    valid_entries = sum(1 for c in existing if isinstance(c, Mapping) and c.get("type") == VALID)
    if current == desired and valid_entries == 1:
        return None
    conditions: list[dict[str, Any]] = []
    replaced = False
    for condition in existing:
        if isinstance(condition, Mapping) and condition.get("type") == VALID:
            if not replaced:
                conditions.append(desired)
                replaced = True
            # a duplicate Valid entry would break the list-map key: drop it
            continue
        if isinstance(condition, Mapping):
            conditions.append(dict(condition))
    if not replaced:
        conditions.append(desired)
    return conditions


def should_post_event(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Post a Warning Event when a policy becomes invalid, or its errors change.

    Derived from the stored condition rather than from memory, so a restarted
    operator, which finds ``Valid=False`` with the same message already stored,
    posts nothing again.
    """
    if desired.get("status") != "False":
        return False
    if current is None or current.get("status") != "False":
        return True
    return current.get("message") != desired.get("message")


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to hang an Event on it."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    uid: str
    resource_version: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectRef:
        """The reference to a raw API object."""
        meta = body.get("metadata") or {}
        return cls(
            api_version=str(body.get("apiVersion") or "cilium.io/v2"),
            kind=str(body.get("kind") or ""),
            name=str(meta.get("name") or ""),
            namespace=meta.get("namespace") or None,
            uid=str(meta.get("uid") or ""),
            resource_version=meta.get("resourceVersion") or None,
        )


def to_event_message(judgement: Judgement) -> str:
    """What the Event says: that the policy is not enforced, and every error."""
    lines = [f"{judgement.kind} is blocked and will not be enforced:"]
    lines += [f"- {issue.describe()}" for issue in judgement.errors]
    message = "\n".join(lines)
    if len(message) > EVENT_MESSAGE_LIMIT:
        message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
    return message


def derive_event_name(ref: ObjectRef, generation: int | None, message: str) -> str:
    """A name that is the same for the same finding on the same object generation.

    Creating the Event with this name makes a retried reconcile (status write failed
    after the Event was posted) hit AlreadyExists instead of posting a duplicate.
    """
    digest = hashlib.sha256(f"{ref.uid}/{generation}/{message}".encode()).hexdigest()[:16]
    return f"{ref.name[:200]}.acns-{digest}"


def build_event(
    ref: ObjectRef,
    *,
    message: str,
    name: str,
    event_namespace: str,
    component: str,
    instance: str,
    now: datetime,
) -> dict[str, Any]:
    """A core/v1 Warning Event about ``ref`` (shown by ``kubectl describe``)."""
    stamp = to_timestamp(now)
    involved: dict[str, Any] = {
        "apiVersion": ref.api_version,
        "kind": ref.kind,
        "name": ref.name,
        "uid": ref.uid,
    }
    if ref.namespace:
        involved["namespace"] = ref.namespace
    if ref.resource_version:
        involved["resourceVersion"] = ref.resource_version
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": event_namespace},
        "involvedObject": involved,
        "type": "Warning",
        "reason": EVENT_REASON,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
