"""The two top-level kinds, CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy.

Both carry one rule in ``spec``, a list in ``specs``, or both, and a ``status`` whose
``Valid`` condition the operator writes (upstream's shape: conditions map-keyed by
``type``, plus ``derivativePolicies``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from acns_operator.api.base import ApiModel, crd_extra
from acns_operator.api.rules import Rule

__all__ = [
    "API_VERSION",
    "CCNP_KIND",
    "CNP_KIND",
    "GROUP",
    "POLICY_KINDS",
    "VERSION",
    "CiliumClusterwideNetworkPolicy",
    "CiliumNetworkPolicy",
    "DerivativePolicyStatus",
    "ObjectMeta",
    "PolicyCondition",
    "PolicyObject",
    "PolicyStatus",
]

GROUP = "cilium.io"
VERSION = "v2"
API_VERSION = f"{GROUP}/{VERSION}"
CNP_KIND = "CiliumNetworkPolicy"
CCNP_KIND = "CiliumClusterwideNetworkPolicy"
POLICY_KINDS = (CNP_KIND, CCNP_KIND)


def _opaque_object(schema: dict[str, Any]) -> None:
    # The API server owns metadata's schema; a CRD may only say it is an object.
    schema.clear()
    schema["type"] = "object"


class ObjectMeta(ApiModel):
    """The parts of Kubernetes object metadata policy handling reads.

    Open to every other metadata field (uid, resourceVersion, managedFields ...),
    which belong to the API server, not to the policy.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra=_opaque_object)

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class PolicyCondition(ApiModel):
    """A status condition; the operator writes the ``Valid`` one."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["status", "type"]))

    type: str | None = Field(default=None, description="The condition type, e.g. Valid.")
    status: str | None = Field(default=None, description="True, False or Unknown.")
    last_transition_time: str | None = Field(
        default=None,
        alias="lastTransitionTime",
        description="When status last changed.",
        json_schema_extra=crd_extra(format="date-time"),
    )
    reason: str | None = Field(default=None, description="A CamelCase reason.")
    message: str | None = Field(default=None, description="Details for people.")


class DerivativePolicyStatus(ApiModel):
    """The state of a policy derived from this one (e.g. by toGroups)."""

    ok: bool | None = Field(default=None, description="Parsed and imported.")
    error: str | None = Field(default=None, description="Why importing failed.")
    last_updated: str | None = Field(
        default=None,
        alias="lastUpdated",
        description="When this status was written.",
        json_schema_extra=crd_extra(format="date-time"),
    )
    local_policy_revision: int | None = Field(
        default=None,
        alias="localPolicyRevision",
        description="The policy revision that first implemented it.",
        json_schema_extra=crd_extra(format="int64"),
    )
    enforcing: bool | None = Field(default=None, description="All endpoints enforce it.")
    annotations: dict[str, str] | None = Field(
        default=None, description="Annotations of the derived policy."
    )


class PolicyStatus(ApiModel):
    """Status written by controllers, never by users."""

    conditions: list[PolicyCondition] | None = Field(
        default=None,
        description="Conditions, one per type.",
        json_schema_extra=crd_extra(
            x_kubernetes_list_type="map", x_kubernetes_list_map_keys=["type"]
        ),
    )
    derivative_policies: dict[str, DerivativePolicyStatus] | None = Field(
        default=None,
        alias="derivativePolicies",
        description="Policies derived from this one, by name.",
    )


_OBJECT_SCHEMA = crd_extra(required=["metadata"])


class _PolicyBase(ApiModel):
    api_version: str | None = Field(default=None, alias="apiVersion", description="cilium.io/v2.")
    kind: str | None = Field(default=None, description="The object kind.")
    metadata: ObjectMeta | None = Field(default=None, description="Standard object metadata.")
    spec: Rule | None = Field(default=None, description="One policy rule.")
    specs: list[Rule] | None = Field(default=None, description="Several policy rules.")
    status: PolicyStatus | None = Field(default=None, description="Set by controllers.")

    @property
    def rules(self) -> list[tuple[str, Rule]]:
        """Every rule with its path: ``spec`` first, then ``specs[i]``."""
        found: list[tuple[str, Rule]] = []
        if self.spec is not None:
            found.append(("spec", self.spec))
        for index, rule in enumerate(self.specs or []):
            found.append((f"specs[{index}]", rule))
        return found

    @property
    def name(self) -> str | None:
        """``metadata.name``."""
        return self.metadata.name if self.metadata else None

    @property
    def namespace(self) -> str | None:
        """``metadata.namespace``."""
        return self.metadata.namespace if self.metadata else None


class CiliumNetworkPolicy(_PolicyBase):
    """A namespaced Cilium policy: its rules select pods in its own namespace."""

    model_config = ConfigDict(json_schema_extra=_OBJECT_SCHEMA)


class CiliumClusterwideNetworkPolicy(_PolicyBase):
    """A cluster-scoped Cilium policy (blocked on AKS)."""

    model_config = ConfigDict(json_schema_extra=_OBJECT_SCHEMA)


PolicyObject = CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy
"""Either policy kind."""
