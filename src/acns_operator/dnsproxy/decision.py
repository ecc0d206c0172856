"""The policy decision for one query: pure, no I/O, Cilium's semantics (§3.2).

(source IP, destination IP, port, protocol, first question name) → allowed, denied,
or unknown endpoint, with the rule that decided. The source endpoint is found by its
address; a rule applies when its server (prefixes, port, protocol) covers the
destination; the name is checked with the endpoint's compiled matcher.

Musl/Alpine help (opt-in): musl's resolver walks the pod's search list and gives up at
the first answer that is neither an address nor NXDOMAIN. A REFUSED for
``api.example.test.shop.svc.cluster.local`` therefore breaks ``api.example.test``.
With ``search_suffix_help`` a name that is an allowed name followed by one of the
pod's search suffixes is let through, so the cluster resolver answers NXDOMAIN and musl
moves on, without the extra patterns the AKS documentation asks users to write.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

from acns_operator.dnsproxy.rules import CompiledEndpoint, RuleSet, RuleSourceModel


class Verdict(enum.Enum):
    """What to do with a query."""

    ALLOWED = "allowed"
    DENIED = "denied"
    UNKNOWN_ENDPOINT = "unknown-endpoint"


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict, the endpoint it concerns and the rule that allowed the query."""

    verdict: Verdict
    endpoint: CompiledEndpoint | None = None
    rule: RuleSourceModel | None = None
    search_suffix: str | None = None
    """Set when the query was allowed only through the musl search-suffix help."""


UNKNOWN = Decision(Verdict.UNKNOWN_ENDPOINT)

# Destination addresses are few (the cluster DNS Service, a fixed upstream): keep
# their integer form instead of converting on every query.
_ADDRESS_CACHE: dict[str, tuple[int, int]] = {}
_ADDRESS_CACHE_MAX = 4096
# Decisions per rule set: DNS traffic repeats the same few names, so most queries are
# decided by one dict lookup. Cleared when full, which bounds it against random names.
MEMO_MAX = 65_536


def address_key(ip: str) -> tuple[int, int]:
    """Return (integer value, address family) of a text IP address (cached)."""
    cached = _ADDRESS_CACHE.get(ip)
    if cached is not None:
        return cached
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    value = int.from_bytes(socket.inet_pton(family, ip), "big")
    if len(_ADDRESS_CACHE) >= _ADDRESS_CACHE_MAX:
        _ADDRESS_CACHE.clear()
    _ADDRESS_CACHE[ip] = key = (value, int(family))
    return key


def _allowing_rule(
    endpoint: CompiledEndpoint, dst: tuple[int, int], port: int, protocol: int, qname: str
) -> RuleSourceModel | None:
    for group in endpoint.groups:
        if not group.server.admits(dst[0], dst[1], port, protocol):
            continue
        if group.allow_all_rule is not None:
            return endpoint.sources[group.allow_all_rule]
        if len(group.matcher) and group.matcher.matches(qname):
            first = group.matcher.matching(qname)[0]
            return endpoint.sources[group.selector_rules[first]]
    return None


def decide(
    rules: RuleSet,
    src_ip: str,
    dst_ip: str,
    dst_port: int,
    protocol: int,
    qname: str,
    *,
    search_suffix_help: bool = False,
) -> Decision:
    """Decide one query. ``qname`` is lower-case and dot-terminated (wire.Query.qname).

    ``protocol`` is the IP protocol number (17 UDP, 6 TCP).
    """
    key = (src_ip, dst_ip, dst_port, protocol, qname, search_suffix_help)
    memo = rules.memo
    known: Decision | None = memo.get(key)
    if known is not None:
        return known
    endpoint = rules.by_ip.get(src_ip)
    decision = (
        UNKNOWN
        if endpoint is None
        else _endpoint_decision(
            endpoint, address_key(dst_ip), dst_port, protocol, qname, search_suffix_help
        )
    )
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo[key] = decision
    return decision


def _endpoint_decision(
    endpoint: CompiledEndpoint,
    dst: tuple[int, int],
    port: int,
    protocol: int,
    qname: str,
    search_suffix_help: bool,
) -> Decision:
    rule = _allowing_rule(endpoint, dst, port, protocol, qname)
    if rule is not None:
        return Decision(Verdict.ALLOWED, endpoint, rule)
    if search_suffix_help:
        for suffix in endpoint.search_suffixes:
            if qname.endswith(suffix) and len(qname) > len(suffix):
                base = qname[: -len(suffix)] + "."
                rule = _allowing_rule(endpoint, dst, port, protocol, base)
                if rule is not None:
                    return Decision(Verdict.ALLOWED, endpoint, rule, search_suffix=suffix)
    return Decision(Verdict.DENIED, endpoint)
