"""Peers a rule can name besides label selectors: CIDRs, entities, services, groups, FQDNs.

Shapes and CRD constraints follow upstream Cilium's ``cilium.io/v2`` schema
(``pkg/policy/api``). The FQDN name rules live in :mod:`acns_operator.fqdn.patterns`;
here they are only declared for the CRD, so validation can explain a bad name in
words instead of quoting a regex.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import ConfigDict, Field

from acns_operator.api.base import ApiModel, crd_extra
from acns_operator.api.selectors import EndpointSelector

__all__ = [
    "CIDR_GROUP_REF_PATTERN",
    "ENTITIES",
    "FQDN_NAME_PATTERN",
    "FQDN_PATTERN_PATTERN",
    "AWSGroup",
    "CIDRRule",
    "Entity",
    "FQDNSelector",
    "Groups",
    "K8sServiceNamespace",
    "Service",
    "ServiceSelector",
]

Entity = Literal[
    "all",
    "world",
    "cluster",
    "host",
    "init",
    "ingress",
    "unmanaged",
    "remote-node",
    "health",
    "none",
    "kube-apiserver",
]
ENTITIES: tuple[str, ...] = get_args(Entity)
"""Every entity name Cilium accepts in toEntities / fromEntities."""

CIDR_GROUP_REF_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A CiliumCIDRGroup name: a DNS subdomain (the CRD's pattern, at most 253 characters)."""

FQDN_NAME_PATTERN = r"^([-a-zA-Z0-9_]+[.]?)+$"
"""The CRD's pattern for matchName (at most 255 characters)."""

FQDN_PATTERN_PATTERN = r"^([-a-zA-Z0-9_*]+[.]?)+$"
"""The CRD's pattern for matchPattern (at most 255 characters)."""

_CIDR = crd_extra(format="cidr")


class CIDRRule(ApiModel):
    """A CIDR peer with exceptions, or a reference to CiliumCIDRGroups."""

    model_config = ConfigDict(
        json_schema_extra=crd_extra(
            oneOf=[
                {"properties": {"cidr": {}}, "required": ["cidr"]},
                {"properties": {"cidrGroupRef": {}}, "required": ["cidrGroupRef"]},
                {"properties": {"cidrGroupSelector": {}}, "required": ["cidrGroupSelector"]},
            ]
        )
    )

    cidr: str | None = Field(
        default=None,
        description="An IP prefix such as 192.0.2.0/24.",
        json_schema_extra=_CIDR,
    )
    cidr_group_ref: str | None = Field(
        default=None,
        alias="cidrGroupRef",
        description="The name of a CiliumCIDRGroup whose prefixes are the peer.",
        json_schema_extra=crd_extra(maxLength=253, pattern=CIDR_GROUP_REF_PATTERN),
    )
    cidr_group_selector: EndpointSelector | None = Field(
        default=None,
        alias="cidrGroupSelector",
        description="Selects CiliumCIDRGroups by their labels.",
    )
    except_cidrs: list[str] | None = Field(
        default=None,
        alias="except",
        description="Prefixes inside cidr that are not part of the peer.",
        json_schema_extra={"items": _CIDR},
    )


class K8sServiceNamespace(ApiModel):
    """A Kubernetes Service named by name and namespace."""

    service_name: str | None = Field(default=None, alias="serviceName", description="Name.")
    namespace: str | None = Field(default=None, description="Namespace.")


class ServiceSelector(ApiModel):
    """Kubernetes Services selected by their labels, optionally in one namespace."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["selector"]))

    selector: EndpointSelector | None = Field(
        default=None, description="Label selector on the Service objects."
    )
    namespace: str | None = Field(default=None, description="Namespace of the Services.")


class Service(ApiModel):
    """A load-balanced Kubernetes Service as a peer."""

    k8s_service: K8sServiceNamespace | None = Field(
        default=None, alias="k8sService", description="A Service by name and namespace."
    )
    k8s_service_selector: ServiceSelector | None = Field(
        default=None, alias="k8sServiceSelector", description="Services by labels."
    )


class AWSGroup(ApiModel):
    """AWS security groups whose members are the peer (Cilium's AWS integration)."""

    labels: dict[str, str] | None = Field(default=None, description="Instance labels.")
    security_groups_ids: list[str] | None = Field(
        default=None, alias="securityGroupsIds", description="Security group IDs."
    )
    security_groups_names: list[str] | None = Field(
        default=None, alias="securityGroupsNames", description="Security group names."
    )
    region: str | None = Field(default=None, description="AWS region.")


class Groups(ApiModel):
    """A peer group from an outside provider; only AWS exists upstream."""

    aws: AWSGroup | None = Field(default=None, description="AWS security groups.")


class FQDNSelector(ApiModel):
    """One ``toFQDNs`` or ``rules.dns`` item: exactly one of matchName or matchPattern."""

    model_config = ConfigDict(
        json_schema_extra=crd_extra(
            oneOf=[
                {"properties": {"matchName": {}}, "required": ["matchName"]},
                {"properties": {"matchPattern": {}}, "required": ["matchPattern"]},
            ]
        )
    )

    match_name: str | None = Field(
        default=None,
        alias="matchName",
        description=(
            "A literal DNS name, compared without case; a trailing dot is implied. No wildcards."
        ),
        json_schema_extra=crd_extra(maxLength=255, pattern=FQDN_NAME_PATTERN),
    )
    match_pattern: str | None = Field(
        default=None,
        alias="matchPattern",
        description=(
            "A DNS name with wildcards, compared without case. '*' matches zero or more "
            "label characters within one label (never a dot); a leading '**.' matches "
            "one or more whole labels (Cilium 1.19 and later)."
        ),
        json_schema_extra=crd_extra(maxLength=255, pattern=FQDN_PATTERN_PATTERN),
    )
