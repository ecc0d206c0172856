"""Warnings about DNS rules: toFQDNs nobody resolves, in-cluster names nobody may resolve.

toFQDNs learns IPs only from DNS answers the DNS proxy sees, and the proxy sees a
pod's lookups only when a DNS rule (``toPorts[].rules.dns``) selects that traffic.
Conversely, once DNS rules apply, every name they do not allow is refused, including
the cluster's own service names. Both mistakes pass validation upstream and break
pods at run time, so they are warned about here.

Only the policy at hand is known, so "covered" means: by a DNS rule of a rule in the
same policy whose endpointSelector is the same, or is the empty selector (every pod
of the namespace). The messages say another policy may still cover the pods.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from acns_operator.api.findings import WARNING, Finding
from acns_operator.api.objects import PolicyObject
from acns_operator.api.peers import FQDNSelector
from acns_operator.api.rules import EgressRule, Rule
from acns_operator.fqdn.patterns import is_match_all
from acns_operator.policy.names import (
    any_selects,
    cluster_domain,
    cluster_probes,
    probe,
    selects_under_domain,
)
from acns_operator.settings import PolicySettings

__all__ = ["dns_findings"]

_ALL_PODS = "endpoints:{}"


@dataclass(frozen=True)
class _DNSRules:
    path: str
    selectors: list[FQDNSelector]
    toward_cluster_dns: bool

    @property
    def allows_all(self) -> bool:
        return not self.selectors or any(
            selector.match_pattern is not None and is_match_all(selector.match_pattern)
            for selector in self.selectors
        )


@dataclass
class _Group:
    """The rules of one policy that select the same endpoints."""

    rules: list[tuple[str, Rule]] = field(default_factory=list)
    dns: list[_DNSRules] = field(default_factory=list)


def _key(rule: Rule) -> str:
    if rule.endpoint_selector is not None:
        wire = rule.endpoint_selector.to_wire()
        return "endpoints:" + json.dumps(wire, sort_keys=True, separators=(",", ":"))
    if rule.node_selector is not None:
        wire = rule.node_selector.to_wire()
        return "nodes:" + json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return "none"


def _may_reach_cluster_dns(rule: EgressRule) -> bool:
    # The cluster DNS is a pod: selected by toEndpoints, by the "cluster"/"all"
    # entities, or by a rule with no L3 peer at all (toPorts alone allows any peer).
    if rule.to_endpoints:
        return True
    if rule.to_entities and ({"cluster", "all"} & set(rule.to_entities)):
        return True
    peers = (rule.to_cidr, rule.to_cidr_set, rule.to_entities, rule.to_services, rule.to_fqdns)
    others = (rule.to_groups, rule.to_nodes)
    return not any(peers) and not any(others)


def _collect_dns(path: str, rule: Rule) -> list[_DNSRules]:
    found = []
    for index, egress in enumerate(rule.egress or []):
        for position, port_rule in enumerate(egress.to_ports or []):
            if port_rule.rules is not None and port_rule.rules.dns is not None:
                found.append(
                    _DNSRules(
                        path=f"{path}.egress[{index}].toPorts[{position}].rules.dns",
                        selectors=port_rule.rules.dns,
                        toward_cluster_dns=_may_reach_cluster_dns(egress),
                    )
                )
    return found


def dns_findings(policy: PolicyObject, settings: PolicySettings) -> Iterator[Finding]:
    """Yield the DNS-coverage warnings for ``policy``."""
    groups: dict[str, _Group] = {}
    for path, rule in policy.rules:
        group = groups.setdefault(_key(rule), _Group())
        group.rules.append((path, rule))
        group.dns.extend(_collect_dns(path, rule))
    everyone = groups.get(_ALL_PODS)
    domain = cluster_domain(settings.cluster_domain)
    for key, group in groups.items():
        applying = list(group.dns)
        if everyone is not None and key != _ALL_PODS:
            applying += everyone.dns
        yield from _fqdn_coverage(group, applying)
        yield from _cluster_names(group, applying, domain)


def _fqdn_coverage(group: _Group, applying: list[_DNSRules]) -> Iterator[Finding]:
    allows_all = any(entry.allows_all for entry in applying)
    allowed = [selector for entry in applying for selector in entry.selectors]
    for path, rule in group.rules:
        for index, egress in enumerate(rule.egress or []):
            if not egress.to_fqdns:
                continue
            where = f"{path}.egress[{index}].toFQDNs"
            if not applying:
                first = egress.to_fqdns[0]
                field_name = "matchName" if first.match_pattern is None else "matchPattern"
                example = f"{field_name}: {first.match_pattern or first.match_name or ''!r}"
                yield Finding(
                    WARNING,
                    where,
                    "no DNS rule in this policy covers the pods it selects, so their "
                    "lookups do not pass through the DNS proxy and toFQDNs learns no IPs: "
                    "the traffic will be dropped. Add an egress rule toward kube-dns with "
                    'toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: '
                    f"[{{{example}}}]}}}}] (unless another policy selecting "
                    "the same pods has one)",
                    "aks.fqdn-without-dns-rule",
                )
                continue
            if allows_all:
                continue
            for position, selector in enumerate(egress.to_fqdns):
                name = probe(selector)
                if name is None or any_selects(allowed, name):
                    continue
                shown = selector.match_pattern or selector.match_name
                yield Finding(
                    WARNING,
                    f"{where}[{position}]",
                    f"the DNS rules of this policy do not allow looking up {shown!r} (e.g. "
                    f"{name.rstrip('.')}), so this selector learns no IPs for it; add it to "
                    "the rules.dns list (unless another policy selecting the same pods "
                    "allows it)",
                    "aks.fqdn-not-in-dns-rules",
                )


def _cluster_names(group: _Group, applying: list[_DNSRules], domain: str) -> Iterator[Finding]:
    own = [entry for entry in group.dns if entry.toward_cluster_dns]
    if not own or any(entry.allows_all for entry in applying):
        return
    allowed = [selector for entry in applying for selector in entry.selectors]
    if any(any_selects(allowed, name) for name in cluster_probes(domain)):
        return
    if any(selects_under_domain(selector, domain) for selector in allowed):
        return
    bare = domain.rstrip(".")
    yield Finding(
        WARNING,
        own[0].path,
        f"these DNS rules allow no in-cluster service name: the selected pods cannot "
        f"resolve names such as kubernetes.default.svc.{bare} (the DNS proxy refuses "
        "them). If they talk to services in the cluster, also allow "
        f"matchPattern: '*.*.svc.{bare}' (or the namespaces they use)",
        "aks.dns-blocks-cluster-names",
    )
