"""Findings: one problem with a policy, where it is, and what to do about it.

Parsing (unknown fields, wrong types) and validation (Cilium's own rules, the AKS
profile) both report findings; a policy with any error finding is blocked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["ERROR", "WARNING", "Finding", "Severity", "format_path"]

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"

PathPart = str | int


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a policy.

    ``path`` is the field in the object (``spec.egress[1].toPorts[0].rules.http``),
    empty for the object as a whole; ``rule`` is a stable identifier of the check
    (``aks.l7-http``) for tests, metrics and suppression lists; ``message`` is for
    people and says what to do instead.
    """

    severity: Severity
    path: str
    message: str
    rule: str

    @property
    def is_error(self) -> bool:
        """Whether this finding blocks the policy."""
        return self.severity == ERROR

    def to_dict(self) -> dict[str, str]:
        """Return the finding as plain JSON data."""
        return {
            "path": self.path,
            "severity": self.severity,
            "message": self.message,
            "rule": self.rule,
        }


def format_path(parts: Sequence[PathPart]) -> str:
    """Join path parts the way users read them: ``spec.egress[1].toPorts[0]``.

    Integers are list indexes; strings are field names or map keys. A map key that is
    not a plain identifier (``k8s:app``, ``a.b``) is quoted so the path stays readable.
    """
    text = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
            continue
        name = str(part)
        if name and all(char.isalnum() or char in "_-" for char in name):
            text += f".{name}" if text else name
        else:
            quoted = name.replace("\\", "\\\\").replace('"', '\\"')
            text += f'["{quoted}"]'
    return text
