"""Admitted but not enforced: warnings for the parts of a policy the agent cannot apply.

Upstream Cilium and the AKS profile accept these fields, but the node agent has no
way to enforce them (yet). Rather than record that silently, validation says so at
admission, with the exact field and what the agent does instead. Every allow rule
fails closed: the traffic that only this part would allow stays denied. A deny rule's
part that is not enforced denies nothing, and the message says that too.

One stable rule id per feature (``acns.not-enforced.*``). Pure: policy in, findings out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from acns_operator.api.findings import WARNING, Finding
from acns_operator.api.objects import PolicyObject
from acns_operator.api.peers import CIDRRule
from acns_operator.api.ports import PortDenyRule, PortRule
from acns_operator.api.rules import EgressDenyRule, EgressRule, ICMPRule
from acns_operator.policy.icmp import icmpv4_type

__all__ = ["ENFORCED_PROTOCOLS", "NOT_ENFORCED_RULES", "not_enforced_findings"]

ENFORCED_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP", "ANY"})
"""The ``toPorts`` protocols the agent enforces (``ANY``: TCP, UDP and SCTP)."""

NOT_ENFORCED_RULES = (
    "acns.not-enforced.ingress",
    "acns.not-enforced.icmp",
    "acns.not-enforced.named-port",
    "acns.not-enforced.protocol",
    "acns.not-enforced.to-nodes",
    "acns.not-enforced.to-groups",
    "acns.not-enforced.cidr-group",
    "acns.not-enforced.authentication",
)
"""Every rule id this module may report."""


def not_enforced_findings(policy: PolicyObject) -> Iterator[Finding]:
    """Yield a warning for every admitted field of ``policy`` the agent does not enforce."""
    for path, rule in policy.rules:
        for section, items in (("ingress", rule.ingress), ("ingressDeny", rule.ingress_deny)):
            if items:
                yield Finding(
                    WARNING,
                    f"{path}.{section}",
                    f"the agent filters pods' egress only: {section} rules are stored but not "
                    "enforced, so this policy does not restrict traffic INTO the selected "
                    "pods; enforce ingress with a Kubernetes NetworkPolicy or your CNI's "
                    "policy engine",
                    "acns.not-enforced.ingress",
                )
        for index, egress in enumerate(rule.egress or []):
            yield from _item(f"{path}.egress[{index}]", egress, denies=False)
        for index, egress_deny in enumerate(rule.egress_deny or []):
            yield from _item(f"{path}.egressDeny[{index}]", egress_deny, denies=True)


def _outcome(denies: bool, what: str) -> str:
    if denies:
        return (
            f"the agent does not enforce {what}, so this deny rule denies nothing through "
            "it: traffic other rules allow stays allowed"
        )
    return (
        f"the agent does not enforce {what} and fails closed: the traffic only it would "
        "allow stays denied"
    )


def _item(path: str, rule: EgressRule | EgressDenyRule, *, denies: bool) -> Iterator[Finding]:
    if rule.to_nodes is not None:
        yield Finding(
            WARNING,
            f"{path}.toNodes",
            _outcome(denies, "toNodes (peers selected by node labels)")
            + "; select the nodes' addresses with toEntities (host, remote-node) or "
            "toCIDR instead",
            "acns.not-enforced.to-nodes",
        )
    if rule.to_groups is not None:
        yield Finding(
            WARNING,
            f"{path}.toGroups",
            _outcome(denies, "toGroups (peers from a cloud provider's groups)")
            + "; list the addresses with toCIDR or toCIDRSet, or their names with toFQDNs",
            "acns.not-enforced.to-groups",
        )
    yield from _cidr_groups(path, rule.to_cidr_set, denies)
    authentication = getattr(rule, "authentication", None)
    if authentication is not None and authentication.mode not in (None, "disabled"):
        yield Finding(
            WARNING,
            f"{path}.authentication.mode",
            _outcome(False, f"mutual authentication (mode {authentication.mode})")
            + "; this whole rule allows nothing. Remove authentication (or set mode: "
            "disabled) to allow the traffic without it",
            "acns.not-enforced.authentication",
        )
    yield from _icmps(path, rule.icmps, denies)
    port_rules: Sequence[PortRule | PortDenyRule] = rule.to_ports or []
    for index, port_rule in enumerate(port_rules):
        for position, port in enumerate(port_rule.ports or []):
            where = f"{path}.toPorts[{index}].ports[{position}]"
            text = (port.port or "").strip()
            if text and not text.isdigit():
                yield Finding(
                    WARNING,
                    f"{where}.port",
                    _outcome(denies, f"named ports ({text!r}: the agent does not read "
                             "container ports)")
                    + "; write the port number instead, e.g. port: \"8080\"",
                    "acns.not-enforced.named-port",
                )  # fmt: skip
            if port.protocol is not None and port.protocol not in ENFORCED_PROTOCOLS:
                yield Finding(
                    WARNING,
                    f"{where}.protocol",
                    _outcome(denies, f"protocol {port.protocol} (only TCP, UDP and SCTP)")
                    + "; use TCP, UDP, SCTP or ANY, or leave this traffic to the node",
                    "acns.not-enforced.protocol",
                )


def _cidr_groups(path: str, rules: list[CIDRRule] | None, denies: bool) -> Iterator[Finding]:
    for index, cidr_rule in enumerate(rules or []):
        for field, present in (
            ("cidrGroupRef", cidr_rule.cidr_group_ref is not None),
            ("cidrGroupSelector", cidr_rule.cidr_group_selector is not None),
        ):
            if present and cidr_rule.cidr is None:
                yield Finding(
                    WARNING,
                    f"{path}.toCIDRSet[{index}].{field}",
                    _outcome(denies, f"{field} (CiliumCIDRGroup objects are not watched)")
                    + "; write the group's prefixes as toCIDRSet[].cidr instead",
                    "acns.not-enforced.cidr-group",
                )


def _icmps(path: str, icmps: list[ICMPRule] | None, denies: bool) -> Iterator[Finding]:
    # IPv4 types are enforced; ICMPv6 is an AKS error already (aks.ipv6). What is left:
    # names the CRD admits that have no IPv4 code (IPv6-only names, upstream's typo).
    for index, icmp in enumerate(icmps or []):
        for position, field in enumerate(icmp.fields or []):
            if field.family == "IPv6" or icmpv4_type(field) is not None:
                continue
            yield Finding(
                WARNING,
                f"{path}.icmps[{index}].fields[{position}].type",
                _outcome(denies, f"ICMP type {field.type!r}, which has no IPv4 code")
                + "; write the IPv4 type number or one of Cilium's IPv4 names "
                "(e.g. EchoRequest, EchoReply, DestinationUnreachable)",
                "acns.not-enforced.icmp",
            )
