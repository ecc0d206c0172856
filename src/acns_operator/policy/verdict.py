"""The verdict on one policy: admitted or blocked, with every finding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from acns_operator.api.findings import Finding
from acns_operator.api.objects import PolicyObject

__all__ = ["Verdict"]


@dataclass(frozen=True)
class Verdict:
    """What validation concluded about one object.

    A policy is blocked when any finding is an error; warnings never block. ``policy``
    is the parsed model when the object could be understood, so callers (the operator,
    the agent's compiler) need not parse twice; it is set for blocked policies too, and
    they must not enforce those.
    """

    findings: list[Finding] = field(default_factory=list)
    policy: PolicyObject | None = None

    @property
    def admitted(self) -> bool:
        """True when no finding is an error."""
        return not any(finding.is_error for finding in self.findings)

    @property
    def errors(self) -> list[Finding]:
        """The findings that block the policy."""
        return [finding for finding in self.findings if finding.is_error]

    @property
    def warnings(self) -> list[Finding]:
        """The findings that do not block it."""
        return [finding for finding in self.findings if not finding.is_error]

    @property
    def summary(self) -> str:
        """One line for people: ``admitted``, ``admitted (2 warnings)``, ``blocked (1 error)``."""
        errors, warnings = len(self.errors), len(self.warnings)
        parts = []
        if errors:
            parts.append(f"{errors} error{'s' if errors != 1 else ''}")
        if warnings:
            parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
        word = "admitted" if self.admitted else "blocked"
        return f"{word} ({', '.join(parts)})" if parts else word

    def messages(self) -> list[str]:
        """``path: message`` lines, errors first (for admission responses and status)."""
        ordered = self.errors + self.warnings
        return [f"{f.path}: {f.message}" if f.path else f.message for f in ordered]

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as plain JSON data."""
        return {
            "verdict": "admitted" if self.admitted else "blocked",
            "findings": [finding.to_dict() for finding in self.findings],
        }
