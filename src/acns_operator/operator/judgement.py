"""What the operator knows about one policy object: its kind and the findings.

The operator never judges a policy itself: :mod:`.validation` hands the raw object
to :mod:`acns_operator.api` (parsing) and :mod:`acns_operator.policy` (the AKS profile),
the same code the agents and ``acns lint`` run, and turns the outcome into a
:class:`Judgement`. Everything downstream (admission answers, status conditions,
Events, metrics) is derived from a ``Judgement`` by pure functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]
VerdictName = Literal["admitted", "warned", "blocked"]

CNP_KIND = "CiliumNetworkPolicy"
CCNP_KIND = "CiliumClusterwideNetworkPolicy"


@dataclass(frozen=True)
class Issue:
    """One finding about a policy: how bad it is, where, and what to do instead."""

    severity: Severity
    path: str
    message: str

    def describe(self) -> str:
        """The finding as one line: ``path: message`` (or the message alone)."""
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class Judgement:
    """The verdict on one policy object, with every finding in document order."""

    kind: str
    issues: tuple[Issue, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[Issue, ...]:
        """Findings that block the policy."""
        return tuple(issue for issue in self.issues if issue.severity == "error")

    @property
    def warnings(self) -> tuple[Issue, ...]:
        """Findings that admit the policy but deserve the user's attention."""
        return tuple(issue for issue in self.issues if issue.severity == "warning")

    @property
    def admitted(self) -> bool:
        """True when nothing blocks the policy: agents enforce it."""
        return not self.errors

    @property
    def verdict(self) -> VerdictName:
        """``blocked`` on any error, else ``warned`` on any warning, else ``admitted``."""
        if self.errors:
            return "blocked"
        return "warned" if self.warnings else "admitted"


Judge = Callable[[Mapping[str, Any]], Judgement]
"""Judges one raw API object (a CNP or CCNP as the API server stores it)."""


def kind_of(body: Mapping[str, Any]) -> str:
    """The object's kind, defaulting to CiliumNetworkPolicy when it is missing."""
    kind = body.get("kind")
    return kind if isinstance(kind, str) and kind else CNP_KIND
