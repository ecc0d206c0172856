"""Upstream Cilium's own rules: what a real Cilium API server or agent refuses.

Everything here is refused by upstream whatever the platform: the CRD schema's
constraints that the models leave to validation (required fields, ``oneOf`` between
alternative fields, name patterns) and the agent's ``Sanitize()`` checks
(``pkg/policy/api/rule_validation.go``; see the Cilium semantics reference, §1.5).
The AKS profile's extra limits are in :mod:`acns_operator.policy.aks`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from acns_operator.api.base import ApiModel
from acns_operator.api.findings import ERROR, Finding
from acns_operator.api.objects import CiliumClusterwideNetworkPolicy, ObjectMeta, PolicyObject
from acns_operator.api.peers import CIDR_GROUP_REF_PATTERN, CIDRRule, FQDNSelector
from acns_operator.api.ports import KafkaRule, L7Rules, PortDenyRule, PortProtocol, PortRule
from acns_operator.api.rules import (
    ICMP_TYPE_NAMES,
    EgressDenyRule,
    EgressRule,
    ICMPRule,
    IngressDenyRule,
    IngressRule,
    Rule,
)
from acns_operator.api.selectors import EndpointSelector
from acns_operator.fqdn.patterns import match_name_error, match_pattern_error
from acns_operator.policy.cidrs import cidr_error, parse_cidr
from acns_operator.policy.ports import parse_port, port_error

__all__ = ["cilium_findings", "l7_kinds"]

_KAFKA_API_KEYS = frozenset(
    {
        "produce",
        "fetch",
        "offsets",
        "metadata",
        "leaderandisr",
        "stopreplica",
        "updatemetadata",
        "controlledshutdown",
        "offsetcommit",
        "offsetfetch",
        "findcoordinator",
        "joingroup",
        "heartbeat",
        "leavegroup",
        "syncgroup",
        "describegroups",
        "listgroups",
        "saslhandshake",
        "apiversions",
        "createtopics",
        "deletetopics",
        "deleterecords",
        "initproducerid",
        "offsetforleaderepoch",
        "addpartitionstotxn",
        "addoffsetstotxn",
        "endtxn",
        "writetxnmarkers",
        "txnoffsetcommit",
        "describeacls",
        "createacls",
        "deleteacls",
        "describeconfigs",
        "alterconfigs",
    }
)
_KAFKA_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
_KAFKA_MAX_TOPIC = 255
_CIDR_GROUP_REF = re.compile(CIDR_GROUP_REF_PATTERN)
_DNS_PROTOCOLS = (None, "UDP", "TCP", "ANY")


def _error(path: str, message: str, rule: str) -> Finding:
    return Finding(ERROR, path, message, rule)


def cilium_findings(policy: PolicyObject) -> Iterator[Finding]:
    """Yield every upstream Cilium rule ``policy`` breaks (all errors)."""
    yield from _required_fields(policy, "")
    if policy.metadata is not None and not policy.metadata.name:
        yield _error("metadata.name", "metadata.name is required: name the policy", "cilium.name")
    rules = policy.rules
    if not rules:
        yield _error(
            "spec",
            "the policy has no rules: add spec (one rule) or specs (a list of rules)",
            "cilium.no-rules",
        )
    clusterwide = isinstance(policy, CiliumClusterwideNetworkPolicy)
    for path, rule in rules:
        yield from _rule(path, rule, clusterwide=clusterwide)


def _required_fields(model: BaseModel, path: str) -> Iterator[Finding]:
    """Fields the CRD marks required, which the models leave optional on purpose."""
    if isinstance(model, ObjectMeta):
        return
    extra = type(model).model_config.get("json_schema_extra")
    listed = extra.get("required") if isinstance(extra, dict) else None
    required = (
        [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []
    )
    for name, info in type(model).model_fields.items():
        alias = info.alias or name
        value = getattr(model, name)
        child = f"{path}.{alias}" if path else alias
        if value is None:
            if alias in required:
                yield _error(child, f"{alias} is required here", "cilium.required")
            continue
        yield from _required_in(value, child)


def _required_in(value: Any, path: str) -> Iterator[Finding]:
    if isinstance(value, ApiModel):
        yield from _required_fields(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _required_in(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _required_in(item, f"{path}.{key}")


def _rule(path: str, rule: Rule, *, clusterwide: bool) -> Iterator[Finding]:
    has_endpoints = rule.endpoint_selector is not None
    has_nodes = rule.node_selector is not None
    if not has_endpoints and not has_nodes:
        yield _error(
            path,
            "the rule needs an endpointSelector naming the pods it applies to "
            "(an empty selector, {}, selects every pod in the namespace)",
            "cilium.selector-missing",
        )
    if has_endpoints and has_nodes:
        yield _error(
            f"{path}.nodeSelector",
            "endpointSelector and nodeSelector exclude each other; keep one (write a "
            "separate rule for the other)",
            "cilium.selector-both",
        )
    if has_nodes and not clusterwide:
        yield _error(
            f"{path}.nodeSelector",
            "nodeSelector (a host policy) is only allowed in CiliumClusterwideNetworkPolicy; "
            "use endpointSelector to select pods",
            "cilium.node-selector-namespaced",
        )
    sections = (rule.ingress, rule.ingress_deny, rule.egress, rule.egress_deny)
    if all(section is None for section in sections):
        yield _error(
            path,
            "the rule has no ingress, ingressDeny, egress or egressDeny section; the API "
            "server rejects it. Add the traffic it should allow or deny",
            "cilium.rule-empty",
        )
    if rule.endpoint_selector is not None:
        yield from _selector(f"{path}.endpointSelector", rule.endpoint_selector)
    if rule.node_selector is not None:
        yield from _selector(f"{path}.nodeSelector", rule.node_selector)
    for index, ingress in enumerate(rule.ingress or []):
        yield from _ingress(f"{path}.ingress[{index}]", ingress, host=has_nodes)
    for index, ingress_deny in enumerate(rule.ingress_deny or []):
        yield from _ingress_deny(f"{path}.ingressDeny[{index}]", ingress_deny)
    for index, egress in enumerate(rule.egress or []):
        yield from _egress(f"{path}.egress[{index}]", egress, host=has_nodes)
    for index, egress_deny in enumerate(rule.egress_deny or []):
        yield from _egress_deny(f"{path}.egressDeny[{index}]", egress_deny)
    if rule.log is not None and rule.log.value is not None and not rule.log.value.isprintable():
        yield _error(
            f"{path}.log.value",
            "log.value may hold printable characters only",
            "cilium.log-value",
        )


def _selector(path: str, selector: EndpointSelector) -> Iterator[Finding]:
    for key in selector.match_labels or {}:
        if key == "" or key.endswith(":"):
            yield _error(f"{path}.matchLabels", "a label key must not be empty", "cilium.label")
    for index, requirement in enumerate(selector.match_expressions or []):
        where = f"{path}.matchExpressions[{index}]"
        if requirement.key == "":
            yield _error(f"{where}.key", "a label key must not be empty", "cilium.label")
        if requirement.operator in ("In", "NotIn") and not requirement.values:
            yield _error(
                f"{where}.values",
                f"operator {requirement.operator} needs at least one value",
                "cilium.label-expression",
            )
        if requirement.operator in ("Exists", "DoesNotExist") and requirement.values:
            yield _error(
                f"{where}.values",
                f"operator {requirement.operator} takes no values; remove values",
                "cilium.label-expression",
            )


def _exclusive_peers(
    path: str, members: Sequence[tuple[str, Sequence[Any] | None]]
) -> Iterator[Finding]:
    present = [name for name, value in members if value]
    for name in present[1:]:
        first = present[0]
        hint = " (toFQDNs can be combined with toPorts only)" if "toFQDNs" in (first, name) else ""
        yield _error(
            f"{path}.{name}",
            f"{first} and {name} cannot be combined in one rule (Cilium does not support "
            f"it); split them into two rules{hint}",
            "cilium.peer-combination",
        )


def _requires(path: str, field: str, values: list[str] | None) -> Iterator[Finding]:
    if values:
        yield _error(
            f"{path}.{field}",
            f"{field} was removed from Cilium and must be empty; express the requirement "
            "with matchExpressions in the endpoint selectors",
            "cilium.requires-removed",
        )


def _icmps_with_ports(
    path: str, icmps: list[ICMPRule] | None, ports: Sequence[Any] | None
) -> Iterator[Finding]:
    if icmps and ports:
        yield _error(
            f"{path}.icmps",
            "icmps and toPorts cannot be in the same rule; write a separate rule for ICMP",
            "cilium.icmp-with-ports",
        )


def _ingress_common(path: str, rule: IngressRule | IngressDenyRule) -> Iterator[Finding]:
    """The checks allow and deny ingress rules share, before their ports."""
    yield from _exclusive_peers(
        path,
        [
            ("fromEndpoints", rule.from_endpoints),
            ("fromCIDR", rule.from_cidr),
            ("fromCIDRSet", rule.from_cidr_set),
            ("fromEntities", rule.from_entities),
        ],
    )
    yield from _requires(path, "fromRequires", rule.from_requires)
    yield from _icmps_with_ports(path, rule.icmps, rule.to_ports)
    yield from _peers(
        path, "from", rule.from_endpoints, rule.from_nodes, rule.from_cidr, rule.from_cidr_set
    )


def _ingress(path: str, rule: IngressRule, *, host: bool) -> Iterator[Finding]:
    yield from _ingress_common(path, rule)
    for index, port_rule in enumerate(rule.to_ports or []):
        yield from _port_rule(f"{path}.toPorts[{index}]", port_rule, ingress=True, host=host)
    yield from _icmps(path, rule.icmps)


def _ingress_deny(path: str, rule: IngressDenyRule) -> Iterator[Finding]:
    yield from _ingress_common(path, rule)
    for index, port_rule in enumerate(rule.to_ports or []):
        yield from _deny_ports(f"{path}.toPorts[{index}]", port_rule)
    yield from _icmps(path, rule.icmps)


def _egress_peers(rule: EgressRule | EgressDenyRule) -> list[tuple[str, Sequence[Any] | None]]:
    members: list[tuple[str, Sequence[Any] | None]] = [
        ("toEndpoints", rule.to_endpoints),
        ("toCIDR", rule.to_cidr),
        ("toCIDRSet", rule.to_cidr_set),
        ("toEntities", rule.to_entities),
        ("toServices", rule.to_services),
    ]
    if isinstance(rule, EgressRule):
        members.append(("toFQDNs", rule.to_fqdns))
    members += [("toGroups", rule.to_groups), ("toNodes", rule.to_nodes)]
    return members


def _egress_common(path: str, rule: EgressRule | EgressDenyRule) -> Iterator[Finding]:
    """The checks allow and deny egress rules share, after their peer exclusions."""
    yield from _requires(path, "toRequires", rule.to_requires)
    yield from _icmps_with_ports(path, rule.icmps, rule.to_ports)
    yield from _peers(path, "to", rule.to_endpoints, rule.to_nodes, rule.to_cidr, rule.to_cidr_set)


def _egress(path: str, rule: EgressRule, *, host: bool) -> Iterator[Finding]:
    yield from _exclusive_peers(path, _egress_peers(rule))
    if rule.to_services and rule.to_ports:
        yield _error(
            f"{path}.toPorts",
            "toServices cannot be combined with toPorts (Cilium does not support it); "
            "select the service's pods with toEndpoints and use toPorts with that",
            "cilium.services-with-ports",
        )
    yield from _egress_common(path, rule)
    for index, selector in enumerate(rule.to_fqdns or []):
        yield from _fqdn_selector(f"{path}.toFQDNs[{index}]", selector)
    for index, port_rule in enumerate(rule.to_ports or []):
        yield from _port_rule(f"{path}.toPorts[{index}]", port_rule, ingress=False, host=host)
    yield from _icmps(path, rule.icmps)


def _egress_deny(path: str, rule: EgressDenyRule) -> Iterator[Finding]:
    yield from _exclusive_peers(path, _egress_peers(rule))
    yield from _egress_common(path, rule)
    for index, port_rule in enumerate(rule.to_ports or []):
        yield from _deny_ports(f"{path}.toPorts[{index}]", port_rule)
    yield from _icmps(path, rule.icmps)


def _peers(
    path: str,
    direction: str,
    endpoints: list[EndpointSelector] | None,
    nodes: list[EndpointSelector] | None,
    cidrs: list[str] | None,
    cidr_rules: list[CIDRRule] | None,
) -> Iterator[Finding]:
    for index, selector in enumerate(endpoints or []):
        yield from _selector(f"{path}.{direction}Endpoints[{index}]", selector)
    for index, selector in enumerate(nodes or []):
        yield from _selector(f"{path}.{direction}Nodes[{index}]", selector)
    for index, cidr in enumerate(cidrs or []):
        problem = cidr_error(cidr)
        if problem is not None:
            yield _error(f"{path}.{direction}CIDR[{index}]", problem, "cilium.cidr")
    for index, cidr_rule in enumerate(cidr_rules or []):
        yield from _cidr_rule(f"{path}.{direction}CIDRSet[{index}]", cidr_rule)


def _cidr_rule(path: str, rule: CIDRRule) -> Iterator[Finding]:
    chosen = [
        name
        for name, value in (
            ("cidr", rule.cidr),
            ("cidrGroupRef", rule.cidr_group_ref),
            ("cidrGroupSelector", rule.cidr_group_selector),
        )
        if value is not None
    ]
    if len(chosen) != 1:
        found = ", ".join(chosen) if chosen else "none"
        yield _error(
            path,
            f"set exactly one of cidr, cidrGroupRef or cidrGroupSelector (found {found})",
            "cilium.cidr-rule",
        )
    if rule.cidr_group_ref is not None and (
        len(rule.cidr_group_ref) > 253 or _CIDR_GROUP_REF.fullmatch(rule.cidr_group_ref) is None
    ):
        yield _error(
            f"{path}.cidrGroupRef",
            f"{rule.cidr_group_ref!r} is not a CiliumCIDRGroup name (lower-case letters, "
            "digits, '-' and '.', at most 253 characters)",
            "cilium.cidr-group-ref",
        )
    if rule.cidr_group_selector is not None:
        yield from _selector(f"{path}.cidrGroupSelector", rule.cidr_group_selector)
    network = None
    if rule.cidr is not None:
        problem = cidr_error(rule.cidr)
        if problem is not None:
            yield _error(f"{path}.cidr", problem, "cilium.cidr")
        network = parse_cidr(rule.cidr)
    for index, excepted in enumerate(rule.except_cidrs or []):
        where = f"{path}.except[{index}]"
        problem = cidr_error(excepted)
        if problem is not None:
            yield _error(where, problem, "cilium.cidr")
            continue
        inner = parse_cidr(excepted)
        if (
            network is not None
            and inner is not None
            and (inner.version != network.version or inner.network_address not in network)
        ):
            yield _error(
                where,
                f"{excepted} is not inside {rule.cidr}; an exception must be part of the "
                "prefix it is cut from",
                "cilium.cidr-except",
            )


def l7_kinds(rules: L7Rules | None) -> list[str]:
    """The kinds of L7 rule set in ``rules`` (``dns``, ``http``, ``kafka``, ``l7proto``)."""
    if rules is None:
        return []
    kinds = [
        name
        for name, value in (("dns", rules.dns), ("http", rules.http), ("kafka", rules.kafka))
        if value is not None
    ]
    if rules.l7proto or rules.l7 is not None:
        kinds.append("l7proto")
    return kinds


def _port_rule(path: str, rule: PortRule, *, ingress: bool, host: bool) -> Iterator[Finding]:
    rules = rule.rules
    kinds = l7_kinds(rules)
    # Cilium treats the rules as empty unless one of these lists is present at all.
    has_l7 = rules is not None and any(
        value is not None for value in (rules.http, rules.kafka, rules.dns, rules.l7)
    )
    has_dns = rules is not None and rules.dns is not None
    if host and has_l7:
        yield _error(
            f"{path}.rules",
            "host policies (nodeSelector) cannot have L7 rules",
            "cilium.host-l7",
        )
    if ingress and rules is not None and rules.dns:
        yield _error(
            f"{path}.rules.dns",
            "DNS rules are only allowed on egress: they filter the lookups the selected "
            "pods make. Move them to an egress rule toward the DNS server",
            "cilium.dns-ingress",
        )
    yield from _server_names(path, rule, has_l7=has_l7)
    for index, port in enumerate(rule.ports or []):
        yield from _port(f"{path}.ports[{index}]", port, has_l7=has_l7, has_dns=has_dns)
    if rule.listener is not None:
        if ingress:
            yield _error(
                f"{path}.listener",
                "a listener is only allowed on egress",
                "cilium.listener-ingress",
            )
        if has_l7:
            yield _error(
                f"{path}.listener",
                "a listener cannot be combined with L7 rules; use one or the other",
                "cilium.listener-l7",
            )
    if not has_l7 or rules is None:
        return
    if has_dns and not rule.ports:
        yield _error(
            f"{path}.ports",
            'DNS rules need the DNS port: add ports: [{port: "53", protocol: ANY}]',
            "cilium.dns-port-missing",
        )
    if len(kinds) > 1:
        yield _error(
            f"{path}.rules",
            f"one toPorts item can hold one kind of L7 rule, found {' and '.join(kinds)}; "
            "put each kind in its own toPorts item",
            "cilium.l7-mixed",
        )
    if rules.l7 is not None and not rules.l7proto:
        yield _error(
            f"{path}.rules.l7",
            "l7 rules need l7proto naming the parser that reads them",
            "cilium.l7proto-missing",
        )
    for index, pairs in enumerate(rules.l7 or []):
        if "" in pairs:
            yield _error(f"{path}.rules.l7[{index}]", "empty keys are not allowed", "cilium.l7")
    for index, kafka in enumerate(rules.kafka or []):
        yield from _kafka(f"{path}.rules.kafka[{index}]", kafka)
    for index, selector in enumerate(rules.dns or []):
        yield from _fqdn_selector(f"{path}.rules.dns[{index}]", selector)


def _server_names(path: str, rule: PortRule, *, has_l7: bool) -> Iterator[Finding]:
    names = rule.server_names or []
    if names and has_l7 and rule.terminating_tls is None:
        yield _error(
            f"{path}.serverNames",
            "serverNames cannot be combined with L7 rules unless terminatingTLS is set",
            "cilium.server-names-l7",
        )
    seen: set[str] = set()
    for index, name in enumerate(names):
        where = f"{path}.serverNames[{index}]"
        if name == "":
            yield _error(where, "a server name must not be empty", "cilium.server-name")
        elif match_pattern_error(name) is not None:
            yield _error(
                where,
                f"{name!r} is not a valid server name: {match_pattern_error(name)}",
                "cilium.server-name",
            )
        if name in seen:
            yield _error(where, f"{name!r} is listed twice", "cilium.server-name")
        seen.add(name)


def _port(path: str, port: PortProtocol, *, has_l7: bool, has_dns: bool) -> Iterator[Finding]:
    problem = port_error(port.port)
    if problem is not None:
        yield _error(f"{path}.port", problem, "cilium.port")
    if not has_l7:
        return
    if has_dns and port.protocol not in _DNS_PROTOCOLS:
        yield _error(
            f"{path}.protocol",
            f"DNS rules work over UDP, TCP or ANY, not {port.protocol}",
            "cilium.dns-protocol",
        )
    if not has_dns and port.protocol != "TCP":
        shown = port.protocol or "ANY (the default)"
        yield _error(
            f"{path}.protocol",
            f"L7 rules other than DNS apply to TCP only, not {shown}; set protocol: TCP",
            "cilium.l7-protocol",
        )
    if port.port is not None and parse_port(port.port) == 0:
        yield _error(
            f"{path}.port",
            "L7 rules cannot be used with port 0 (every port); name the port",
            "cilium.l7-port-zero",
        )
    if has_dns and port.end_port:
        yield _error(
            f"{path}.endPort",
            "DNS rules do not support port ranges; list the DNS port on its own",
            "cilium.dns-port-range",
        )


def _deny_ports(path: str, rule: PortDenyRule) -> Iterator[Finding]:
    for index, port in enumerate(rule.ports or []):
        problem = port_error(port.port)
        if problem is not None:
            yield _error(f"{path}.ports[{index}].port", problem, "cilium.port")


def _kafka(path: str, rule: KafkaRule) -> Iterator[Finding]:
    if rule.role and rule.api_key:
        yield _error(path, "set role or apiKey, not both", "cilium.kafka")
    if rule.api_key and rule.api_key.lower() not in _KAFKA_API_KEYS:
        yield _error(f"{path}.apiKey", f"{rule.api_key!r} is not a Kafka API key", "cilium.kafka")
    if rule.role and rule.role.lower() not in ("produce", "consume"):
        yield _error(f"{path}.role", "role must be produce or consume", "cilium.kafka")
    if rule.api_version and not (
        rule.api_version.isascii() and rule.api_version.isdigit() and int(rule.api_version) <= 32767
    ):
        yield _error(
            f"{path}.apiVersion", "apiVersion must be a number from 0 to 32767", "cilium.kafka"
        )
    if rule.topic and (
        len(rule.topic) > _KAFKA_MAX_TOPIC or _KAFKA_TOPIC.fullmatch(rule.topic) is None
    ):
        yield _error(
            f"{path}.topic",
            "a topic has at most 255 letters, digits, '.', '_' and '-'",
            "cilium.kafka",
        )


def _fqdn_selector(path: str, selector: FQDNSelector) -> Iterator[Finding]:
    name, pattern = selector.match_name, selector.match_pattern
    if name is not None and pattern is not None:
        yield _error(
            path,
            "set only one of matchName or matchPattern; use two items for both",
            "cilium.fqdn-selector",
        )
    if name is None and pattern is None:
        yield _error(path, "set matchName or matchPattern", "cilium.fqdn-selector")
    if name is not None:
        problem = match_name_error(name)
        if problem is not None:
            yield _error(f"{path}.matchName", problem, "cilium.match-name")
    if pattern is not None:
        problem = match_pattern_error(pattern)
        if problem is not None:
            yield _error(f"{path}.matchPattern", problem, "cilium.match-pattern")


def _icmps(path: str, icmps: list[ICMPRule] | None) -> Iterator[Finding]:
    for index, icmp in enumerate(icmps or []):
        for position, field in enumerate(icmp.fields or []):
            value = field.type
            where = f"{path}.icmps[{index}].fields[{position}].type"
            if isinstance(value, int) and not 0 <= value <= 255:
                yield _error(where, f"ICMP type {value} is out of range 0-255", "cilium.icmp")
            numeric = isinstance(value, str) and value.isascii() and value.isdigit()
            if numeric and int(str(value)) > 255:
                yield _error(where, f"ICMP type {value} is out of range 0-255", "cilium.icmp")
            if isinstance(value, str) and not numeric and value not in ICMP_TYPE_NAMES:
                yield _error(
                    where,
                    f"{value!r} is not an ICMP type name; use a number (0-255) or a name "
                    "such as EchoRequest",
                    "cilium.icmp",
                )
