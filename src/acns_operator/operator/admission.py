"""Admission answers: from a judgement to allowed/denied, the message and warnings.

Pure functions; the kopf handler in :mod:`acns_operator.operator.handlers` only
calls :func:`decide_admission` and maps the decision to ``kopf.AdmissionError`` and
the ``warnings`` list (which the API server returns to kubectl as ``Warning: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from acns_operator.operator.judgement import Judgement

AdmissionVerdict = Literal["admitted", "warned", "denied"]

# The HTTP code the denial carries (the convention of policy webhooks such as
# Gatekeeper and Kyverno). kubectl prints "Error from server: admission webhook ...
# denied the request: ..." without "(Forbidden)", because the apiserver passes on no
# `reason` and kopf's AdmissionError cannot set one; API clients do see the 403.
DENIAL_CODE = 403


@dataclass(frozen=True)
class AdmissionDecision:
    """What the webhook answers for one request."""

    allowed: bool
    verdict: AdmissionVerdict
    message: str = ""
    warnings: tuple[str, ...] = ()


def describe_object(kind: str, namespace: str | None, name: str | None) -> str:
    """``Kind namespace/name`` (or ``Kind name`` for cluster-scoped objects)."""
    where = f"{namespace}/{name}" if namespace else (name or "(unnamed)")
    return f"{kind} {where}"


def to_denial_message(judgement: Judgement, namespace: str | None, name: str | None) -> str:
    """The denial: which object, then every error finding with its field path."""
    lines = [
        f"{describe_object(judgement.kind, namespace, name)} is blocked "
        f"(not supported by the AKS/ACNS profile):"
    ]
    lines += [f"- {issue.describe()}" for issue in judgement.errors]
    return "\n".join(lines)


def to_warnings(judgement: Judgement) -> tuple[str, ...]:
    """One admission warning per warning finding, field path first."""
    return tuple(issue.describe() for issue in judgement.warnings)


def _spec_of(body: Mapping[str, Any] | None) -> tuple[Any, Any]:
    if not isinstance(body, Mapping):
        return (None, None)
    return (body.get("spec"), body.get("specs"))


def is_metadata_only_update(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> bool:
    """True for an UPDATE that leaves ``spec`` and ``specs`` as they were.

    Such updates (labels, annotations, finalizers) are admitted even for a policy
    that is blocked: it was stored before the webhook existed, and refusing them
    would keep users from labelling it or finishing its deletion. Its status
    already says it is not enforced.
    """
    return operation == "UPDATE" and old is not None and _spec_of(old) == _spec_of(new)


def decide_admission(
    judgement: Judgement,
    *,
    operation: str | None,
    namespace: str | None,
    name: str | None,
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
) -> AdmissionDecision:
    """Admit, admit with warnings, or deny one create or update."""
    warnings = to_warnings(judgement)
    if judgement.errors:
        if is_metadata_only_update(operation, old, new):
            stale = tuple(f"not enforced: {issue.describe()}" for issue in judgement.errors)
            return AdmissionDecision(allowed=True, verdict="warned", warnings=stale + warnings)
        return AdmissionDecision(
            allowed=False,
            verdict="denied",
            message=to_denial_message(judgement, namespace, name),
            warnings=warnings,
        )
    if warnings:
        return AdmissionDecision(allowed=True, verdict="warned", warnings=warnings)
    return AdmissionDecision(allowed=True, verdict="admitted")
