"""The AKS profile: what ACNS blocks although upstream Cilium would accept it.

From the ACNS documentation (the seeds) and design.md §2: clusterwide policies, the
universal wildcard, L7 rules other than DNS, Kubernetes service names, dual stack,
and node-local DNS. Each finding says what to write instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from acns_operator.api.findings import ERROR, WARNING, Finding
from acns_operator.api.objects import CiliumClusterwideNetworkPolicy, PolicyObject
from acns_operator.api.peers import CIDRRule, FQDNSelector
from acns_operator.api.ports import PortRule
from acns_operator.api.rules import EgressRule, ICMPRule, Rule
from acns_operator.api.selectors import selector_targets_label
from acns_operator.fqdn.patterns import has_multilevel_prefix, is_match_all
from acns_operator.policy.cidrs import parse_cidr
from acns_operator.policy.names import (
    any_selects,
    cluster_domain,
    cluster_probes,
    selects_under_domain,
)
from acns_operator.policy.ports import is_dns_port
from acns_operator.settings import PolicySettings

__all__ = ["aks_findings", "is_dns_peer_rule"]


def aks_findings(policy: PolicyObject, settings: PolicySettings) -> Iterator[Finding]:
    """Yield every AKS-profile limit ``policy`` runs into."""
    if isinstance(policy, CiliumClusterwideNetworkPolicy):
        yield Finding(
            ERROR,
            "kind",
            "CiliumClusterwideNetworkPolicy is not supported on AKS (ACNS); write a "
            "CiliumNetworkPolicy in each namespace that needs these rules",
            "aks.clusterwide",
        )
    for path, rule in policy.rules:
        yield from _rule(path, rule, settings)


def _rule(path: str, rule: Rule, settings: PolicySettings) -> Iterator[Finding]:
    for index, egress in enumerate(rule.egress or []):
        where = f"{path}.egress[{index}]"
        yield from _egress(where, egress, settings)
    for index, ingress in enumerate(rule.ingress or []):
        where = f"{path}.ingress[{index}]"
        yield from _ipv6(where, "from", ingress.from_cidr, ingress.from_cidr_set)
        yield from _icmp_ipv6(where, ingress.icmps)
        for position, port_rule in enumerate(ingress.to_ports or []):
            yield from _l7(f"{where}.toPorts[{position}]", port_rule, settings)
    for index, egress_deny in enumerate(rule.egress_deny or []):
        where = f"{path}.egressDeny[{index}]"
        yield from _ipv6(where, "to", egress_deny.to_cidr, egress_deny.to_cidr_set)
        yield from _icmp_ipv6(where, egress_deny.icmps)
        if egress_deny.to_services:
            yield _to_services(f"{where}.toServices")
    for index, ingress_deny in enumerate(rule.ingress_deny or []):
        where = f"{path}.ingressDeny[{index}]"
        yield from _ipv6(where, "from", ingress_deny.from_cidr, ingress_deny.from_cidr_set)
        yield from _icmp_ipv6(where, ingress_deny.icmps)


def _egress(path: str, rule: EgressRule, settings: PolicySettings) -> Iterator[Finding]:
    domain = cluster_domain(settings.cluster_domain)
    for index, selector in enumerate(rule.to_fqdns or []):
        yield from _to_fqdn(f"{path}.toFQDNs[{index}]", selector, domain, settings)
    if rule.to_services:
        yield _to_services(f"{path}.toServices")
    yield from _ipv6(path, "to", rule.to_cidr, rule.to_cidr_set)
    yield from _icmp_ipv6(path, rule.icmps)
    for index, port_rule in enumerate(rule.to_ports or []):
        yield from _l7(f"{path}.toPorts[{index}]", port_rule, settings)
    if is_dns_peer_rule(rule):
        yield from _node_local_dns(path, rule, settings)


def _to_services(path: str) -> Finding:
    return Finding(
        ERROR,
        path,
        "Kubernetes service names (toServices) are not supported on AKS; select the "
        "service's pods with toEndpoints (the Service's selector labels) and its port "
        "with toPorts",
        "aks.to-services",
    )


def _pattern_field(selector: FQDNSelector) -> str:
    return "matchPattern" if selector.match_pattern is not None else "matchName"


def _match_all(path: str, pattern: str | None, where: str) -> Finding | None:
    """The error for a match-all ``pattern`` (``*``, ``**`` ...), which AKS refuses in ``where``."""
    if pattern is None or not is_match_all(pattern):
        return None
    return Finding(
        ERROR,
        path,
        f"{pattern!r} matches every name, and AKS does not support the universal "
        f"wildcard in {where}; list the domains instead, e.g. '*.example.com'",
        "aks.match-all",
    )


def _to_fqdn(
    path: str, selector: FQDNSelector, domain: str, settings: PolicySettings
) -> Iterator[Finding]:
    pattern = selector.match_pattern
    match_all = _match_all(f"{path}.matchPattern", pattern, "toFQDNs")
    if match_all is not None:
        yield match_all
        return
    yield from _multilevel(f"{path}.matchPattern", pattern, settings)
    if selects_under_domain(selector, domain):
        yield Finding(
            ERROR,
            f"{path}.{_pattern_field(selector)}",
            f"{selector.match_name or pattern!r} is a Kubernetes service name (under "
            f"{domain.rstrip('.')}), which FQDN filtering on AKS does not support; select "
            "the service's pods with toEndpoints instead",
            "aks.service-name",
        )
    elif pattern is not None and any(
        any_selects([selector], name) for name in cluster_probes(domain)
    ):
        yield Finding(
            WARNING,
            f"{path}.matchPattern",
            f"{pattern!r} also matches Kubernetes service names under "
            f"{domain.rstrip('.')}; toFQDNs does not apply to them on AKS, so select "
            "in-cluster peers with toEndpoints",
            "aks.pattern-covers-service-names",
        )


def _multilevel(path: str, pattern: str | None, settings: PolicySettings) -> Iterator[Finding]:
    if pattern is None or not has_multilevel_prefix(pattern):
        return
    if settings.allow_multilevel_prefix:
        yield Finding(
            WARNING,
            path,
            f"{pattern!r} starts with '**.', which matches several labels only on Cilium "
            "1.19 and later (earlier versions read it as '*.', one label)",
            "cilium.multilevel-prefix",
        )
    else:
        yield Finding(
            ERROR,
            path,
            f"{pattern!r} starts with '**.', which this cluster's Cilium reads as '*.' "
            "(one label); write '*.' for one label or list each depth ('*.*.example.com')",
            "cilium.multilevel-prefix",
        )


def _l7(path: str, rule: PortRule, settings: PolicySettings) -> Iterator[Finding]:
    rules = rule.rules
    if rules is not None:
        unsupported = [
            ("http", rules.http is not None, "aks.l7-http"),
            ("kafka", rules.kafka is not None, "aks.l7-kafka"),
            ("l7proto", bool(rules.l7proto), "aks.l7-generic"),
            ("l7", rules.l7 is not None and not rules.l7proto, "aks.l7-generic"),
        ]
        for name, present, code in unsupported:
            if present:
                yield Finding(
                    ERROR,
                    f"{path}.rules.{name}",
                    f"L7 {name} rules are not supported on AKS (only DNS rules are); "
                    "remove them and keep the L3/L4 part of the rule, or enforce this "
                    "in the application or a service mesh",
                    code,
                )
        if rules.dns is not None:
            yield from _dns_rules(f"{path}.rules.dns", rules.dns, settings)
    for name, present in (
        ("serverNames", rule.server_names is not None),
        ("terminatingTLS", rule.terminating_tls is not None),
        ("originatingTLS", rule.originating_tls is not None),
        ("listener", rule.listener is not None),
    ):
        if present:
            yield Finding(
                ERROR,
                f"{path}.{name}",
                f"{name} needs Cilium's L7 proxy, which AKS does not support; remove it "
                "(toFQDNs with DNS rules filters egress by name)",
                "aks.l7-proxy",
            )


def _dns_rules(
    path: str, selectors: list[FQDNSelector], settings: PolicySettings
) -> Iterator[Finding]:
    if not selectors:
        yield Finding(
            ERROR,
            path,
            "an empty dns list allows every name, like matchPattern '*', which AKS does "
            "not support; list the names the pods may look up",
            "aks.dns-allow-all",
        )
    for index, selector in enumerate(selectors):
        pattern = selector.match_pattern
        match_all = _match_all(f"{path}[{index}].matchPattern", pattern, "DNS rules")
        if match_all is not None:
            yield match_all
        else:
            yield from _multilevel(f"{path}[{index}].matchPattern", pattern, settings)


def _ipv6(
    path: str, direction: str, cidrs: list[str] | None, cidr_rules: list[CIDRRule] | None
) -> Iterator[Finding]:
    message = (
        "IPv6 prefixes are not supported on AKS (no dual stack with FQDN filtering); "
        "use IPv4 prefixes"
    )
    for index, cidr in enumerate(cidrs or []):
        network = parse_cidr(cidr)
        if network is not None and network.version == 6:
            yield Finding(ERROR, f"{path}.{direction}CIDR[{index}]", message, "aks.ipv6")
    for index, cidr_rule in enumerate(cidr_rules or []):
        where = f"{path}.{direction}CIDRSet[{index}]"
        network = parse_cidr(cidr_rule.cidr) if cidr_rule.cidr is not None else None
        if network is not None and network.version == 6:
            yield Finding(ERROR, f"{where}.cidr", message, "aks.ipv6")
        for position, excepted in enumerate(cidr_rule.except_cidrs or []):
            inner = parse_cidr(excepted)
            if inner is not None and inner.version == 6:
                yield Finding(ERROR, f"{where}.except[{position}]", message, "aks.ipv6")


def _icmp_ipv6(path: str, icmps: list[ICMPRule] | None) -> Iterator[Finding]:
    for index, icmp in enumerate(icmps or []):
        for position, field in enumerate(icmp.fields or []):
            if field.family == "IPv6":
                yield Finding(
                    ERROR,
                    f"{path}.icmps[{index}].fields[{position}].family",
                    "ICMPv6 rules need IPv6, and dual stack is not supported on AKS; "
                    "use IPv4 ICMP types",
                    "aks.ipv6",
                )


def is_dns_peer_rule(rule: EgressRule) -> bool:
    """Tell whether ``rule`` lets the selected pods send DNS to its peers.

    True when it has DNS rules, lists a DNS port (53 or a port named like dns), or
    allows every port (no toPorts at all).
    """
    if not rule.to_ports:
        return True
    for port_rule in rule.to_ports:
        if port_rule.rules is not None and port_rule.rules.dns is not None:
            return True
        if any(is_dns_port(port.port) for port in port_rule.ports or []):
            return True
    return False


def _node_local_dns(path: str, rule: EgressRule, settings: PolicySettings) -> Iterator[Finding]:
    message = (
        "FQDN filtering on AKS does not work with node-local DNS as the DNS server; "
        "send DNS to the cluster DNS (toEndpoints with k8s-app: kube-dns in kube-system) "
        "instead"
    )
    labels = settings.node_local_dns_labels
    for index, selector in enumerate(rule.to_endpoints or []):
        if labels and all(
            selector_targets_label(selector, key, value) for key, value in labels.items()
        ):
            yield Finding(ERROR, f"{path}.toEndpoints[{index}]", message, "aks.node-local-dns")
    addresses = set(settings.node_local_dns_addresses)
    for index, cidr in enumerate(rule.to_cidr or []):
        if _is_host_prefix_of(cidr, addresses):
            yield Finding(ERROR, f"{path}.toCIDR[{index}]", message, "aks.node-local-dns")
    for index, cidr_rule in enumerate(rule.to_cidr_set or []):
        if cidr_rule.cidr is not None and _is_host_prefix_of(cidr_rule.cidr, addresses):
            yield Finding(ERROR, f"{path}.toCIDRSet[{index}].cidr", message, "aks.node-local-dns")


def _is_host_prefix_of(cidr: str, addresses: set[str]) -> bool:
    # Only a prefix naming exactly the node-local address targets it; a wide prefix
    # such as 0.0.0.0/0 merely happens to contain it.
    network = parse_cidr(cidr)
    if network is None or network.num_addresses != 1:
        return False
    for address in addresses:
        try:
            if ipaddress.ip_address(address) == network.network_address:
                return True
        except ValueError:
            continue
    return False
