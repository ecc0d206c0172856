"""A Cilium policy rule (``spec`` / ``specs[]``) and its ingress and egress sections.

Field sets per section follow upstream Cilium's ``cilium.io/v2`` CRD. Deny sections
are deliberately narrower: ``egressDeny`` has no ``toFQDNs`` and deny ``toPorts`` have
no L7 ``rules``, so such fields are reported as unknown, as the API server would.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator

from acns_operator.api.base import ApiModel, crd_extra
from acns_operator.api.peers import CIDRRule, Entity, FQDNSelector, Groups, Service
from acns_operator.api.ports import PortDenyRule, PortRule
from acns_operator.api.selectors import EndpointSelector

__all__ = [
    "ICMP_TYPE_NAMES",
    "ICMP_TYPE_PATTERN",
    "MAX_ICMP_FIELDS",
    "Authentication",
    "DefaultDenyConfig",
    "EgressCommonRule",
    "EgressDenyRule",
    "EgressRule",
    "ICMPField",
    "ICMPRule",
    "IngressCommonRule",
    "IngressDenyRule",
    "IngressRule",
    "LogConfig",
    "Rule",
    "RuleLabel",
]

MAX_ICMP_FIELDS = 40
"""The most ICMP types one ``icmps`` item may list."""

ICMP_TYPE_NAMES = (
    "EchoReply",
    "DestinationUnreachable",
    "Redirect",
    "Echo",
    "RouterAdvertisement",
    "RouterSelection",
    "TimeExceeded",
    "ParameterProblem",
    "Timestamp",
    "TimestampReply",
    "Photuris",
    "ExtendedEchoRequest",
    "ExtendedEcho Reply",
    "PacketTooBig",
    "ParameterProblem",
    "EchoRequest",
    "MulticastListenerQuery",
    "MulticastListenerReport",
    "MulticastListenerDone",
    "RouterSolicitation",
    "RouterAdvertisement",
    "NeighborSolicitation",
    "NeighborAdvertisement",
    "RedirectMessage",
    "RouterRenumbering",
    "ICMPNodeInformationQuery",
    "ICMPNodeInformationResponse",
    "InverseNeighborDiscoverySolicitation",
    "InverseNeighborDiscoveryAdvertisement",
    "HomeAgentAddressDiscoveryRequest",
    "HomeAgentAddressDiscoveryReply",
    "MobilePrefixSolicitation",
    "MobilePrefixAdvertisement",
    "DuplicateAddressRequestCodeSuffix",
    "DuplicateAddressConfirmationCodeSuffix",
)
"""ICMP type names the CRD accepts, in upstream's order (its quirks included: upstream
lists "ExtendedEcho Reply" with a space, and some names twice)."""

ICMP_TYPE_PATTERN = (
    "^([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]|" + "|".join(ICMP_TYPE_NAMES) + ")$"
)
"""The CRD's pattern for an ICMP type given as a string."""


def _int_or_string(value: Any) -> int | str:
    # The CRD declares x-kubernetes-int-or-string: exactly these two JSON types.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an ICMP type number (0-255) or an ICMP type name")
    return value


IntOrString = Annotated[int | str, PlainValidator(_int_or_string)]


class ICMPField(ApiModel):
    """One ICMP type, for IPv4 or IPv6."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["type"]))

    family: Literal["IPv4", "IPv6"] | None = Field(
        default=None,
        description="The IP family; IPv4 when omitted.",
        json_schema_extra=crd_extra(default="IPv4"),
    )
    type: IntOrString | None = Field(
        default=None,
        description="An ICMP type number (0-255) or its CamelCase name, e.g. EchoRequest.",
        json_schema_extra=crd_extra(
            anyOf=[{"type": "integer"}, {"type": "string"}],
            pattern=ICMP_TYPE_PATTERN,
            x_kubernetes_int_or_string=True,
        ),
    )


class ICMPRule(ApiModel):
    """A list of ICMP types allowed (or denied)."""

    fields: list[ICMPField] | None = Field(
        default=None, max_length=MAX_ICMP_FIELDS, description="The ICMP types; at most 40."
    )


class Authentication(ApiModel):
    """Mutual authentication required for the traffic (Cilium service mesh)."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["mode"]))

    mode: Literal["disabled", "required", "test-always-fail"] | None = Field(
        default=None, description="The authentication mode."
    )


_DEPRECATED_REQUIRES = crd_extra(maxItems=0)


class IngressCommonRule(ApiModel):
    """The peer fields ingress allow and deny rules share (upstream's IngressCommonRule)."""

    from_endpoints: list[EndpointSelector] | None = Field(
        default=None, alias="fromEndpoints", description="Peer pods by labels."
    )
    from_requires: list[str] | None = Field(
        default=None,
        alias="fromRequires",
        description="Removed upstream; must be empty.",
        json_schema_extra=_DEPRECATED_REQUIRES,
    )
    from_cidr: list[str] | None = Field(
        default=None,
        alias="fromCIDR",
        description="Peer IP prefixes outside the cluster.",
        json_schema_extra={"items": crd_extra(format="cidr")},
    )
    from_cidr_set: list[CIDRRule] | None = Field(
        default=None, alias="fromCIDRSet", description="Peer prefixes with exceptions."
    )
    from_entities: list[Entity] | None = Field(
        default=None, alias="fromEntities", description="Peer entities such as world or host."
    )
    from_groups: list[Groups] | None = Field(
        default=None, alias="fromGroups", description="Peers from an outside provider."
    )
    from_nodes: list[EndpointSelector] | None = Field(
        default=None, alias="fromNodes", description="Peer nodes by labels."
    )


class IngressRule(IngressCommonRule):
    """Traffic the selected endpoints may receive: peers, ports and L7 rules.

    Within one rule, fromEndpoints, fromCIDR, fromCIDRSet and fromEntities exclude
    each other. DNS rules are not allowed on ingress.
    """

    to_ports: list[PortRule] | None = Field(
        default=None, alias="toPorts", description="Local ports the peers may reach."
    )
    icmps: list[ICMPRule] | None = Field(default=None, description="ICMP types allowed.")
    authentication: Authentication | None = Field(
        default=None, description="Authentication the traffic needs."
    )


class IngressDenyRule(IngressCommonRule):
    """Traffic the selected endpoints must not receive, whatever else allows it."""

    to_ports: list[PortDenyRule] | None = Field(
        default=None, alias="toPorts", description="Local ports denied (no L7 rules)."
    )
    icmps: list[ICMPRule] | None = Field(default=None, description="ICMP types denied.")


class EgressCommonRule(ApiModel):
    """The peer fields egress allow and deny rules share (upstream's EgressCommonRule)."""

    to_endpoints: list[EndpointSelector] | None = Field(
        default=None, alias="toEndpoints", description="Peer pods by labels."
    )
    to_requires: list[str] | None = Field(
        default=None,
        alias="toRequires",
        description="Removed upstream; must be empty.",
        json_schema_extra=_DEPRECATED_REQUIRES,
    )
    to_cidr: list[str] | None = Field(
        default=None,
        alias="toCIDR",
        description="Peer IP prefixes outside the cluster.",
        json_schema_extra={"items": crd_extra(format="cidr")},
    )
    to_cidr_set: list[CIDRRule] | None = Field(
        default=None, alias="toCIDRSet", description="Peer prefixes with exceptions."
    )
    to_entities: list[Entity] | None = Field(
        default=None, alias="toEntities", description="Peer entities such as world or host."
    )
    to_services: list[Service] | None = Field(
        default=None,
        alias="toServices",
        description="Peer Kubernetes Services (not supported on AKS).",
    )
    to_groups: list[Groups] | None = Field(
        default=None, alias="toGroups", description="Peers from an outside provider."
    )
    to_nodes: list[EndpointSelector] | None = Field(
        default=None, alias="toNodes", description="Peer nodes by labels."
    )


class EgressRule(EgressCommonRule):
    """Traffic the selected endpoints may send: peers, ports, L7 rules, FQDNs.

    Within one rule the L3 peer fields (toEndpoints, toCIDR, toCIDRSet, toEntities,
    toServices, toFQDNs, toGroups, toNodes) exclude each other; toFQDNs may be combined
    with toPorts.
    """

    to_fqdns: list[FQDNSelector] | None = Field(
        default=None,
        alias="toFQDNs",
        description=(
            "Peers by DNS name: the IPs in DNS answers the endpoint received for matching "
            "names. Needs a DNS rule so the lookups go through the DNS proxy."
        ),
    )
    to_ports: list[PortRule] | None = Field(
        default=None, alias="toPorts", description="Destination ports and L7 rules."
    )
    icmps: list[ICMPRule] | None = Field(default=None, description="ICMP types allowed.")
    authentication: Authentication | None = Field(
        default=None, description="Authentication the traffic needs."
    )


class EgressDenyRule(EgressCommonRule):
    """Traffic the selected endpoints must not send, whatever else allows it.

    There is no toFQDNs here: Cilium cannot deny by DNS name.
    """

    to_ports: list[PortDenyRule] | None = Field(
        default=None, alias="toPorts", description="Destination ports denied (no L7 rules)."
    )
    icmps: list[ICMPRule] | None = Field(default=None, description="ICMP types denied.")


class DefaultDenyConfig(ApiModel):
    """Whether the policy puts its endpoints in default-deny, per direction."""

    ingress: bool | None = Field(default=None, description="Default-deny for ingress.")
    egress: bool | None = Field(default=None, description="Default-deny for egress.")


class RuleLabel(ApiModel):
    """A label attached to the rule itself (metadata, not a selector)."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["key"]))

    key: str | None = Field(default=None, description="Label key.")
    value: str | None = Field(default=None, description="Label value.")
    source: str | None = Field(default=None, description="Label source, e.g. k8s.")


class LogConfig(ApiModel):
    """A policy-specific string added to Hubble flows this rule matches."""

    value: str | None = Field(
        default=None,
        max_length=32,
        description="Up to 32 printable characters.",
        json_schema_extra=crd_extra(pattern=r"^\PC*$"),
    )


_RULE_SCHEMA = crd_extra(
    oneOf=[
        {"properties": {"endpointSelector": {}}, "required": ["endpointSelector"]},
        {"properties": {"nodeSelector": {}}, "required": ["nodeSelector"]},
    ],
    anyOf=[
        {"properties": {"ingress": {}}, "required": ["ingress"]},
        {"properties": {"ingressDeny": {}}, "required": ["ingressDeny"]},
        {"properties": {"egress": {}}, "required": ["egress"]},
        {"properties": {"egressDeny": {}}, "required": ["egressDeny"]},
    ],
)


class Rule(ApiModel):
    """One policy rule: whom it selects and what traffic it allows or denies.

    Exactly one of endpointSelector and nodeSelector (nodeSelector only in
    CiliumClusterwideNetworkPolicy), and at least one of ingress, ingressDeny, egress
    and egressDeny.
    """

    model_config = ConfigDict(json_schema_extra=_RULE_SCHEMA)

    endpoint_selector: EndpointSelector | None = Field(
        default=None, alias="endpointSelector", description="The pods the rule applies to."
    )
    node_selector: EndpointSelector | None = Field(
        default=None,
        alias="nodeSelector",
        description="The nodes the rule applies to (clusterwide policies only).",
    )
    ingress: list[IngressRule] | None = Field(default=None, description="Allowed ingress.")
    ingress_deny: list[IngressDenyRule] | None = Field(
        default=None, alias="ingressDeny", description="Denied ingress."
    )
    egress: list[EgressRule] | None = Field(default=None, description="Allowed egress.")
    egress_deny: list[EgressDenyRule] | None = Field(
        default=None, alias="egressDeny", description="Denied egress."
    )
    enable_default_deny: DefaultDenyConfig | None = Field(
        default=None,
        alias="enableDefaultDeny",
        description=(
            "Whether the selected endpoints go default-deny; by default each direction "
            "with rules does."
        ),
    )
    labels: list[RuleLabel] | None = Field(default=None, description="Labels of the rule.")
    description: str | None = Field(default=None, description="Free-form text.")
    log: LogConfig | None = Field(default=None, description="Hubble logging for this rule.")
