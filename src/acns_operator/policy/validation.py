"""``validate``: one object in, one verdict out. Pure, and never raises.

The operator's webhook and status writer, the agent (before it enforces anything) and
``acns lint`` all call this one function with the same settings, so they always agree.
Findings come in this order: parsing (unknown fields, wrong types), upstream Cilium's
own rules, the AKS profile, the DNS-coverage warnings, then the parts the agent
does not enforce (:mod:`~acns_operator.policy.not_enforced`).
"""

from __future__ import annotations

from collections.abc import Iterable

from acns_operator.api.findings import ERROR, Finding
from acns_operator.api.objects import CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy
from acns_operator.api.parsing import parse_policy
from acns_operator.policy.aks import aks_findings
from acns_operator.policy.dns_coverage import dns_findings
from acns_operator.policy.not_enforced import not_enforced_findings
from acns_operator.policy.sanitize import cilium_findings
from acns_operator.policy.verdict import Verdict
from acns_operator.settings import PolicySettings

__all__ = ["validate"]


def validate(obj: object, settings: PolicySettings) -> Verdict:
    """Judge ``obj`` (a parsed YAML/JSON document, a kopf body or a policy model).

    The verdict blocks the policy when any finding is an error. Anything that is not a
    well-formed ``cilium.io/v2`` policy gives error findings, never an exception; an
    unexpected internal failure is reported as an error finding too (rule
    ``internal``), so a bug can never admit a policy.
    """
    try:
        return _validate(obj, settings)
    except Exception as exc:
        return Verdict(
            findings=[
                Finding(
                    ERROR,
                    "",
                    f"internal error while validating ({type(exc).__name__}: {exc}); "
                    "please report it with the policy",
                    "internal",
                )
            ]
        )


def _validate(obj: object, settings: PolicySettings) -> Verdict:
    pruned: list[str] = []
    if isinstance(obj, CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy):
        policy = obj
        findings: list[Finding] = []
    else:
        parsed = parse_policy(obj)
        findings = list(parsed.findings)
        if parsed.policy is None:
            return Verdict(findings=_unique(findings))
        policy = parsed.policy
        pruned = parsed.pruned
    checks = [
        *cilium_findings(policy),
        *aks_findings(policy, settings),
        *dns_findings(policy, settings),
        *not_enforced_findings(policy),
    ]
    findings.extend(finding for finding in checks if not _about_pruned(finding, pruned))
    return Verdict(findings=_unique(findings), policy=policy)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith((parent + ".", parent + "["))


# Findings that say something is missing; parsing may have removed that something.
_ABSENCE_RULES = frozenset(
    {
        "cilium.required",
        "cilium.no-rules",
        "cilium.rule-empty",
        "cilium.selector-missing",
        "cilium.dns-port-missing",
        "cilium.fqdn-selector",
        "cilium.cidr-rule",
    }
)


def _about_pruned(finding: Finding, pruned: list[str]) -> bool:
    """Whether ``finding`` is about a value parsing already reported and took out."""
    for path in pruned:
        if _under(finding.path, path):
            return True
        if finding.rule in _ABSENCE_RULES and _under(path, finding.path):
            return True
    return False


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    # Two checks may notice the same thing at the same place; say it once.
    seen: set[Finding] = set()
    unique = []
    for finding in findings:
        if finding not in seen:
            seen.add(finding)
            unique.append(finding)
    return unique
