"""The project's error hierarchy.

One base, a few subclasses that say what went wrong; each boundary maps them to its
own vocabulary (exit codes in the CLI, kopf errors in the operator, DNS rcodes in the
proxy). A subclass's docstring is its default message.
"""

from __future__ import annotations


class AcnsError(Exception):
    """acns-operator failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InputError(AcnsError):
    """The input could not be read or parsed."""


class PolicyError(AcnsError):
    """The policy is not valid."""


class ConfigurationError(AcnsError):
    """The configuration is not valid."""


class UpstreamError(AcnsError):
    """An upstream service (DNS server, API server, agent) failed."""


class HarnessError(AcnsError):
    """The local test harness (control plane, network namespaces) failed."""
