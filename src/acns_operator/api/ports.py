"""``toPorts``: L4 ports and the L7 rules (DNS, HTTP, Kafka, generic) attached to them.

The schema is the union of what upstream Cilium's ``cilium.io/v2`` CRD has accepted
across supported releases: newer releases dropped ``kafka`` and ``l7proto``/``l7``
from the schema, older ones still take them, and a policy written for either must
parse so that validation can name the field AKS blocks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from acns_operator.api.base import ApiModel, crd_extra
from acns_operator.api.peers import FQDN_PATTERN_PATTERN, FQDNSelector

__all__ = [
    "MAX_PORTS",
    "PORT_PATTERN",
    "EnvoyConfigRef",
    "HeaderMatch",
    "KafkaRule",
    "L4Protocol",
    "L7Rules",
    "Listener",
    "PortDenyRule",
    "PortProtocol",
    "PortRule",
    "PortRuleHTTP",
    "Secret",
    "TLSContext",
]

MAX_PORTS = 40
"""The most ports one ``toPorts`` item may list (CRD ``maxItems``, Go ``maxPorts``)."""

PORT_PATTERN = (
    r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
    r"|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$"
)
"""The CRD's pattern for ``port``: a number or an IANA service name.

Kept exactly as upstream writes it, including the alternation that is anchored only at
one end on each side; validation applies the stricter rules of Cilium's Go parser.
"""

L4Protocol = Literal["TCP", "UDP", "SCTP", "VRRP", "IGMP", "ANY"]


class PortProtocol(ApiModel):
    """One L4 port (number or named port), an optional range end, and a protocol."""

    port: str | None = Field(
        default=None,
        description=(
            'A port number (as a string, e.g. "53") or a named container port such as "dns".'
        ),
        json_schema_extra=crd_extra(pattern=PORT_PATTERN),
    )
    end_port: int | None = Field(
        default=None,
        alias="endPort",
        ge=0,
        le=65535,
        description="The last port of a range that starts at port. Not allowed with DNS rules.",
        json_schema_extra=crd_extra(format="int32"),
    )
    protocol: L4Protocol | None = Field(
        default=None,
        description="The L4 protocol; ANY or omitted matches TCP, UDP and SCTP.",
    )


class Secret(ApiModel):
    """A reference to a Kubernetes Secret."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["name"]))

    name: str | None = Field(default=None, description="Name of the Secret.")
    namespace: str | None = Field(default=None, description="Namespace of the Secret.")


class TLSContext(ApiModel):
    """TLS material for the L7 proxy (interception), taken from a Secret."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["secret"]))

    secret: Secret | None = Field(default=None, description="The Secret holding the items.")
    trusted_ca: str | None = Field(
        default=None, alias="trustedCA", description="Item with the trusted CA."
    )
    certificate: str | None = Field(default=None, description="Item with the certificate chain.")
    private_key: str | None = Field(
        default=None, alias="privateKey", description="Item with the private key."
    )


class HeaderMatch(ApiModel):
    """An HTTP header requirement of an HTTP rule."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["name"]))

    name: str | None = Field(default=None, min_length=1, description="The header name.")
    value: str | None = Field(default=None, description="The value the header must have.")
    secret: Secret | None = Field(default=None, description="A Secret holding the value.")
    mismatch: Literal["LOG", "ADD", "DELETE", "REPLACE"] | None = Field(
        default=None, description="What to do when the header does not match."
    )


class PortRuleHTTP(ApiModel):
    """An HTTP request filter (an L7 rule; not supported on AKS)."""

    path: str | None = Field(default=None, description="Regex on the request path.")
    method: str | None = Field(default=None, description="Regex on the request method.")
    host: str | None = Field(
        default=None,
        description="Regex on the Host header.",
        json_schema_extra=crd_extra(format="idn-hostname"),
    )
    headers: list[str] | None = Field(default=None, description="Headers that must be present.")
    header_matches: list[HeaderMatch] | None = Field(
        default=None, alias="headerMatches", description="Headers with required values."
    )


class KafkaRule(ApiModel):
    """A Kafka request filter (an L7 rule, removed from newer Cilium; not on AKS)."""

    role: str | None = Field(default=None, description="'produce' or 'consume'.")
    api_key: str | None = Field(default=None, alias="apiKey", description="A Kafka API key name.")
    api_version: str | None = Field(
        default=None, alias="apiVersion", description="A Kafka API version number."
    )
    client_id: str | None = Field(default=None, alias="clientID", description="A client ID.")
    topic: str | None = Field(
        default=None,
        description="A topic name.",
        json_schema_extra=crd_extra(maxLength=255),
    )


class L7Rules(ApiModel):
    """The L7 rules of one ``toPorts`` item; only one kind may be used.

    On AKS only ``dns`` is supported. An empty ``dns`` list allows every name.
    """

    dns: list[FQDNSelector] | None = Field(
        default=None, description="DNS names pods may look up through this port."
    )
    http: list[PortRuleHTTP] | None = Field(default=None, description="HTTP request filters.")
    kafka: list[KafkaRule] | None = Field(default=None, description="Kafka request filters.")
    l7proto: str | None = Field(
        default=None, description="The name of a proxylib L7 parser for the 'l7' rules."
    )
    l7: list[dict[str, str]] | None = Field(
        default=None, description="Key/value rules for the parser named by l7proto."
    )


class EnvoyConfigRef(ApiModel):
    """A reference to a CiliumEnvoyConfig holding a listener."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["name"]))

    kind: Literal["CiliumEnvoyConfig", "CiliumClusterwideEnvoyConfig"] | None = Field(
        default=None, description="The kind of the referenced object."
    )
    name: str | None = Field(default=None, min_length=1, description="Its name.")


class Listener(ApiModel):
    """A custom Envoy listener to redirect the traffic to (L7; not on AKS)."""

    model_config = ConfigDict(json_schema_extra=crd_extra(required=["envoyConfig", "name"]))

    envoy_config: EnvoyConfigRef | None = Field(
        default=None, alias="envoyConfig", description="Where the listener is defined."
    )
    name: str | None = Field(default=None, min_length=1, description="The listener name.")
    priority: int | None = Field(
        default=None, ge=1, le=100, description="Priority among listeners for the same port."
    )


class PortRule(ApiModel):
    """A ``toPorts`` item of an allow rule: ports, and optionally L7 rules or TLS."""

    ports: list[PortProtocol] | None = Field(
        default=None, max_length=MAX_PORTS, description="The L4 ports; at most 40."
    )
    rules: L7Rules | None = Field(default=None, description="L7 rules for these ports.")
    server_names: list[str] | None = Field(
        default=None,
        alias="serverNames",
        min_length=1,
        description="Allowed TLS SNI names (needs the L7 proxy; not on AKS).",
        json_schema_extra=crd_extra(
            x_kubernetes_list_type="set",
            items={"maxLength": 255, "pattern": FQDN_PATTERN_PATTERN},
        ),
    )
    listener: Listener | None = Field(default=None, description="A custom Envoy listener.")
    originating_tls: TLSContext | None = Field(
        default=None,
        alias="originatingTLS",
        description="TLS the L7 proxy uses towards the destination (not on AKS).",
    )
    terminating_tls: TLSContext | None = Field(
        default=None,
        alias="terminatingTLS",
        description="TLS the L7 proxy terminates (not on AKS).",
    )


class PortDenyRule(ApiModel):
    """A ``toPorts`` item of a deny rule: ports only, never L7 rules."""

    ports: list[PortProtocol] | None = Field(default=None, description="The L4 ports.")
