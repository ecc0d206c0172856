"""Why may (or may not) a pod reach a name: ``acns explain`` (pure).

Follows the path a connection takes under FQDN filtering:

1. No egress rule selects the pod: nothing is filtered.
2. The DNS query: with DNS rules, the proxy answers it only when a rule allows the
   name (else REFUSED, and no address is ever learned from this pod's queries).
3. The connection to the resolved address: deny rules win; then a toFQDNs selector
   matching the name on the port, or an L3/L4 rule covering the address (when the
   addresses are known, or the rule covers every address); else default deny.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from acns_operator.fqdn.matcher import FQDNSelector, compile_selectors
from acns_operator.fqdn.names import to_fqdn
from acns_operator.policy.compile import EndpointRules, PeerAllow, Port


@dataclass(frozen=True, slots=True)
class Explanation:
    """The verdict, the rule that decided it, and the steps that led there."""

    allowed: bool
    decided_by: str
    reason: str
    dns_allowed: bool | None
    dns_rule: str | None
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)


def _port_matches(ports: Sequence[Port], port: int | None, protocol: str) -> bool:
    if port is None or not ports:
        return True
    return any(p.protocol == protocol and p.first <= port <= p.last for p in ports)


def _covers(rule: PeerAllow, addresses: Sequence[str]) -> bool:
    networks = [ipaddress.ip_network(p) for p in rule.prefixes]
    if addresses:
        return all(any(ipaddress.ip_address(a) in n for n in networks) for a in addresses)
    return any(n.prefixlen == 0 for n in networks)


def explain(
    rules: EndpointRules | None,
    name: str,
    port: int | None = None,
    *,
    protocol: str = "TCP",
    addresses: Sequence[str] = (),
) -> Explanation:
    """Explain whether the endpoint of ``rules`` may reach ``name`` (on ``port``)."""
    fqdn = to_fqdn(name)
    target = f"{fqdn}{f' port {port}/{protocol}' if port is not None else ''}"
    if rules is None:
        return Explanation(
            True,
            "",
            "no egress policy selects the pod: its egress is not filtered",
            None,
            None,
            ["no CiliumNetworkPolicy with egress rules selects the pod"],
        )
    steps = [f"selected by {', '.join(rules.policies)}"]
    dns_allowed: bool | None = None
    dns_rule: str | None = None
    if rules.dns:
        for dns in rules.dns:
            selectors = [FQDNSelector.name(n) for n in dns.match_names]
            selectors += [FQDNSelector.pattern(p) for p in dns.match_patterns]
            if dns.allow_all or compile_selectors(selectors).matches(fqdn):
                dns_allowed, dns_rule = True, str(dns.source)
                break
        else:
            dns_allowed = False
        if dns_allowed:
            steps.append(f"DNS query for {fqdn} allowed by {dns_rule}")
        else:
            steps.append(f"DNS query for {fqdn} refused: no DNS rule of the pod allows it")
            return Explanation(
                False,
                "",
                f"the DNS proxy refuses {fqdn}: no DNS rule allows it",
                False,
                None,
                steps,
            )
    else:
        steps.append(
            "the pod has no DNS rule: its queries are not sent through the proxy, so it "
            "learns no addresses itself (toFQDNs only sees names other pods on the node "
            "resolved)"
        )
    for deny in rules.deny:
        if _port_matches(deny.ports, port, protocol) and _covers(deny, addresses):
            steps.append(f"denied by {deny.source} ({deny.peer})")
            return Explanation(
                False, str(deny.source), "an egress deny rule matches", dns_allowed, dns_rule, steps
            )
    for rule in rules.fqdn:
        if not _port_matches(rule.ports, port, protocol):
            continue
        matched = [s for s in rule.selectors if compile_selectors([s]).matches(fqdn)]
        if matched:
            steps.append(f"toFQDNs {matched[0]} of {rule.source} selects {fqdn}")
            reason = f"allowed by toFQDNs ({matched[0]}) once {fqdn} is resolved"
            if rules.dns and not dns_allowed:
                reason += ", but the pod cannot resolve it"
            return Explanation(True, str(rule.source), reason, dns_allowed, dns_rule, steps)
    for allow in rules.allow:
        if _port_matches(allow.ports, port, protocol) and _covers(allow, addresses):
            steps.append(f"allowed by {allow.source} ({allow.peer})")
            return Explanation(
                True,
                str(allow.source),
                "an L3/L4 rule covers the destination",
                dns_allowed,
                dns_rule,
                steps,
            )
    if not rules.enforced:
        steps.append("no rule puts the pod in default deny for egress")
        return Explanation(True, "", "not in default deny for egress", dns_allowed, dns_rule, steps)
    steps.append(f"no rule allows {target}: default deny")
    return Explanation(
        False,
        "",
        f"default deny: no rule of {', '.join(rules.policies)} allows {target}",
        dns_allowed,
        dns_rule,
        steps,
    )
