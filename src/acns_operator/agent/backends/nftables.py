"""The nftables backend: one table owned by the agent, in the node's network namespace.

Layout (family ``inet``; everything the agent installs lives in this one table)::

    table inet acns_agent
      set layout         empty; its comment names the layout version
      map endpoints      ipv4_addr : verdict    endpoint IP -> jump ep_<ip>
      map dns_endpoints  ipv4_addr : verdict    endpoint IP -> jump dns_<ip>
      set fqdn_<hash>    ipv4_addr, timeout     one per toFQDNs selector (comment = key)
      chain dns_raw      prerouting, raw        ip saddr vmap @dns_endpoints
      chain dns_<ip>     DNS to the endpoint's DNS servers/ports: mark + notrack
      chain dns_tproxy   prerouting, mangle     marked UDP/TCP -> TPROXY to the proxy port
      chain egress_forward  forward, filter     ip saddr vmap @endpoints
      chain egress_input    input, filter       redirected DNS accepted, then the same
      chain ep_<ip>      deny rules; established,related accept; L3/L4 allows;
                         toFQDNs selector sets (+ ports); final verdict with the
                         program fingerprint as comment. ICMP rules match
                         ``meta l4proto icmp icmp type {...}`` instead of ports.

DNS redirect: TPROXY at mangle priority runs before a kube-proxy style DNAT, and the
redirected packets are not tracked, so no DNAT rewrites them and the proxy sees the
original destination (the Service ClusterIP). Policy routing ``fwmark MARK/MASK lookup
TABLE`` with ``local 0.0.0.0/0 dev lo`` in TABLE delivers them to the proxy socket.

Every update is one kernel transaction: nothing is ever flushed and reloaded wholesale.
Structural updates are text batches through libnftables; updates that only add or
remove selector-set elements (DNS answers, GC) are sent as one raw nf_tables netlink
batch (:mod:`.nlset`), because libnftables 1.0.6 reloads its cache of the whole
ruleset before every command. A changed endpoint program is replaced with ``flush chain`` plus its
new rules inside the same transaction, so no packet sees a half-written chain. On start
the agent reads the table back (:meth:`NftablesBackend.observe`) and carries on from it;
stopping or killing the agent leaves the table enforcing.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from acns_operator.agent.backends.libnft import LibNftables, NftablesError, open_nftables
from acns_operator.agent.backends.nlset import SetElementWriter
from acns_operator.agent.datapath import (
    ICMP,
    PROTOCOL_NAMES,
    DatapathUpdate,
    EndpointProgram,
    ObservedState,
    PeerRule,
    PortRange,
)
from acns_operator.agent.netns import NetnsRunner
from acns_operator.errors import ConfigurationError
from acns_operator.settings import AgentSettings

LAYOUT = "acns-agent layout 1"
FAST_PATH_MAX = 4096
FINGERPRINT_PREFIX = "acns:fp="


@dataclass(frozen=True, slots=True)
class NftConfig:
    """What the rendered rules depend on."""

    table: str = "acns_agent"
    mark: int = 0x200
    mark_mask: int = 0xF00
    proxy_port: int = 10094
    proxy_address: str = ""
    deny_action: str = "drop"


def chain_suffix(ip: str) -> str:
    """``10.244.1.10`` -> ``10_244_1_10``."""
    return ip.replace(".", "_").replace(":", "_")


def set_name(key: str) -> str:
    """The nftables set of a selector key (names are short; the key is the comment)."""
    return "fqdn_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def timeout_text(expiry: float, now: float) -> str:
    """An element timeout in whole seconds, at least one."""
    return f"{max(1, math.ceil(expiry - now))}s"


def _collapse(prefixes: Iterable[str]) -> list[str]:
    return list(_collapse_sorted(tuple(sorted(set(prefixes)))))


@functools.lru_cache(maxsize=16384)
def _collapse_sorted(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    # Many endpoints share the same peers; parsing addresses dominates rendering.
    networks = [ipaddress.ip_network(p, strict=False) for p in prefixes]
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    return tuple(str(n) for n in ipaddress.collapse_addresses(v4))


def _merge_ports(ports: Iterable[PortRange]) -> list[PortRange]:
    """Merge overlapping or adjacent ranges per protocol (anonymous sets reject overlaps)."""
    out: list[PortRange] = []
    for port in sorted(ports):
        last = out[-1] if out else None
        if last is not None and last.protocol == port.protocol and port.first <= last.last + 1:
            out[-1] = PortRange(last.protocol, last.first, max(last.last, port.last))
        else:
            out.append(port)
    return out


def _span(port: PortRange) -> str:
    return str(port.first) if port.first == port.last else f"{port.first}-{port.last}"


def _port_matches(ports: tuple[PortRange, ...]) -> list[str]:
    """The port parts of a rule: one rule each (ICMP types cannot share a rule with
    ports; the compiler never mixes them, but a mix must still render correctly)."""
    icmp = tuple(port for port in ports if port.protocol == ICMP)
    if not icmp:
        return [_port_match(ports)]
    rest = tuple(port for port in ports if port.protocol != ICMP)
    return [_icmp_match(icmp)] + ([_port_match(rest)] if rest else [])


def _icmp_match(types: tuple[PortRange, ...]) -> str:
    """``meta l4proto icmp icmp type 8`` (or a set of types): IPv4 ICMP only."""
    values = sorted({t for port in types for t in range(port.first, min(port.last, 255) + 1)})
    if len(values) == 256:
        return " meta l4proto icmp"
    if len(values) == 1:
        return f" meta l4proto icmp icmp type {values[0]}"
    return f" meta l4proto icmp icmp type {{ {', '.join(str(v) for v in values)} }}"


def _port_match(ports: tuple[PortRange, ...]) -> str:
    """The port part of a rule, as plain as possible (no ICMP: see :func:`_port_matches`).

    Anonymous sets cost libnftables far more to evaluate than plain matches (tens of
    thousands of rules are installed at start), so one protocol gets ``meta l4proto
    tcp th dport 443`` (or a port set), and only mixed protocols a concatenated set.
    """
    if not ports:
        return ""
    merged = _merge_ports(ports)
    protocols = {port.protocol for port in merged}
    if len(protocols) == 1:
        proto = PROTOCOL_NAMES.get(merged[0].protocol, str(merged[0].protocol))
        full = [p for p in merged if (p.first, p.last) == (0, 65535)]
        if full:
            return f" meta l4proto {proto}"
        if len(merged) == 1:
            return f" meta l4proto {proto} th dport {_span(merged[0])}"
        return f" meta l4proto {proto} th dport {{ {', '.join(_span(p) for p in merged)} }}"
    items = [f"{PROTOCOL_NAMES.get(p.protocol, str(p.protocol))} . {_span(p)}" for p in merged]
    return f" meta l4proto . th dport {{ {', '.join(items)} }}"


def _daddr_match(prefixes: Iterable[str]) -> str | None:
    """``ip daddr ...``; "" for every address; None when nothing IPv4 is left."""
    collapsed = _collapse(prefixes)
    if not collapsed:
        return None
    if collapsed == ["0.0.0.0/0"]:
        return ""
    if len(collapsed) == 1:
        return f" ip daddr {collapsed[0]}"
    return f" ip daddr {{ {', '.join(collapsed)} }}"


def merge_peer_rules(rules: Iterable[PeerRule]) -> list[PeerRule]:
    """Rules with the same ports become one rule (the union of their prefixes).

    Many policies allow the same peers (the DNS servers on port 53 above all); one rule
    per distinct port list keeps chains short. Verdicts are unchanged: a packet matches
    the merged rule exactly when it matched one of the originals.
    """
    by_ports: dict[tuple[PortRange, ...], list[str]] = {}
    sources: dict[tuple[PortRange, ...], list[str]] = {}
    for rule in rules:
        ports = tuple(_merge_ports(rule.ports))
        by_ports.setdefault(ports, []).extend(rule.prefixes)
        sources.setdefault(ports, []).append(rule.source)
    return [
        PeerRule(tuple(_collapse(prefixes)), ports, "; ".join(dict.fromkeys(sources[ports])))
        for ports, prefixes in sorted(by_ports.items())
    ]


def _peer_rules(rule: PeerRule, verdict: str) -> list[str]:
    daddr = _daddr_match(rule.prefixes)
    if daddr is None:
        return []
    return [f"{daddr}{match} {verdict}".strip() for match in _port_matches(rule.ports)]


def render_program(config: NftConfig, program: EndpointProgram, *, existed: bool) -> list[str]:
    """The commands that install or replace one endpoint's programs."""
    table = f"inet {config.table}"
    suffix = chain_suffix(program.ip)
    chain = f"ep_{suffix}"
    lines = [f"add chain {table} {chain}"]
    if existed:
        lines.append(f"flush chain {table} {chain}")
    rules: list[str] = []
    for rule in merge_peer_rules(program.deny):
        rules.extend(_peer_rules(rule, "drop"))
    rules.append("ct state established,related accept")
    for rule in merge_peer_rules(program.allow):
        rules.extend(_peer_rules(rule, "accept"))
    fqdn_rules = {
        (key, tuple(_merge_ports(fqdn.ports))) for fqdn in program.fqdn for key in fqdn.selectors
    }
    for key, ports in sorted(fqdn_rules):
        for match in _port_matches(ports):
            rules.append(f"ip daddr @{set_name(key)}{match} accept")
    final = config.deny_action if program.enforced else "accept"
    rules.append(f'{final} comment "{FINGERPRINT_PREFIX}{program.fingerprint()}"')
    lines.extend(f"add rule {table} {chain} {rule}" for rule in rules)
    lines.append(f"add element {table} endpoints {{ {program.ip} : jump {chain} }}")

    dns_chain = f"dns_{suffix}"
    if program.dns_redirect:
        lines.append(f"add chain {table} {dns_chain}")
        if existed:
            lines.append(f"flush chain {table} {dns_chain}")
        mark = f"meta mark set {config.mark:#x} notrack"
        for rule in merge_peer_rules(program.dns_redirect):
            for text in _peer_rules(rule, mark):
                lines.append(f"add rule {table} {dns_chain} {text}")
        lines.append(f"add element {table} dns_endpoints {{ {program.ip} : jump {dns_chain} }}")
    return lines


def render_removal(config: NftConfig, ip: str, *, had_dns: bool) -> list[str]:
    """The commands that remove one endpoint's programs (map element first)."""
    table = f"inet {config.table}"
    suffix = chain_suffix(ip)
    lines = [
        f"delete element {table} endpoints {{ {ip} }}",
        f"flush chain {table} ep_{suffix}",
        f"delete chain {table} ep_{suffix}",
    ]
    if had_dns:
        lines += [
            f"delete element {table} dns_endpoints {{ {ip} }}",
            f"flush chain {table} dns_{suffix}",
            f"delete chain {table} dns_{suffix}",
        ]
    return lines


def render_base(config: NftConfig) -> str:
    """The table with its maps and base chains (created once, when missing)."""
    t = f"inet {config.table}"
    target = f"{config.proxy_address}:{config.proxy_port}"
    mark = f"meta mark & {config.mark_mask:#x} == {config.mark:#x}"
    return "\n".join(
        [
            f"add table {t}",
            # nft 1.0.6 does not list table comments in JSON; a set's comment it does.
            f'add set {t} layout {{ type ipv4_addr; comment "{LAYOUT}"; }}',
            f"add map {t} endpoints {{ type ipv4_addr : verdict; }}",
            f"add map {t} dns_endpoints {{ type ipv4_addr : verdict; }}",
            f"add chain {t} dns_raw {{ type filter hook prerouting priority raw; policy accept; }}",
            f"add rule {t} dns_raw ip saddr vmap @dns_endpoints",
            f"add chain {t} dns_tproxy "
            "{ type filter hook prerouting priority mangle; policy accept; }",
            f"add rule {t} dns_tproxy {mark} meta l4proto {{ tcp, udp }} "
            f"tproxy ip to {target} accept",
            f"add chain {t} egress_forward "
            "{ type filter hook forward priority filter; policy accept; }",
            f"add rule {t} egress_forward ip saddr vmap @endpoints",
            f"add chain {t} egress_input "
            "{ type filter hook input priority filter; policy accept; }",
            f"add rule {t} egress_input {mark} accept",
            f"add rule {t} egress_input ip saddr vmap @endpoints",
        ]
    )


def render_update(
    config: NftConfig,
    update: DatapathUpdate,
    now: float,
    *,
    installed: set[str],
    with_dns: set[str],
) -> str:
    """One update as one batch. ``installed``/``with_dns``: endpoints already in the kernel."""
    table = f"inet {config.table}"
    lines: list[str] = []
    for key in update.new_selectors:
        lines.append(
            f'add set {table} {set_name(key)} {{ type ipv4_addr; flags timeout; comment "{key}"; }}'
        )
    for ip, program in sorted(update.programs.items()):
        if program is None:
            if ip in installed:
                lines += render_removal(config, ip, had_dns=ip in with_dns)
            continue
        if ip in with_dns and not program.dns_redirect:
            suffix = chain_suffix(ip)
            lines += [
                f"delete element {table} dns_endpoints {{ {ip} }}",
                f"flush chain {table} dns_{suffix}",
                f"delete chain {table} dns_{suffix}",
            ]
        lines += render_program(config, program, existed=ip in installed)
    by_set: dict[str, list[str]] = {}
    for key, ip, expiry in update.elements:
        by_set.setdefault(key, []).append(f"{ip} timeout {timeout_text(expiry, now)}")
    for key, items in by_set.items():
        lines.append(f"add element {table} {set_name(key)} {{ {', '.join(items)} }}")
    removed: dict[str, list[str]] = {}
    for key, ip in update.removed_elements:
        removed.setdefault(key, []).append(ip)
    for key, ips in removed.items():
        # add-then-delete: deleting an element that already timed out would fail the
        # whole transaction; adding it first makes the delete always valid.
        name = set_name(key)
        lines.append(
            f"add element {table} {name} {{ {', '.join(ip + ' timeout 1s' for ip in ips)} }}"
        )
        lines.append(f"delete element {table} {name} {{ {', '.join(ips)} }}")
    for key in update.removed_selectors:
        lines.append(f"delete set {table} {set_name(key)}")
    return "\n".join(lines) + "\n" if lines else ""


def element_batches(
    update: DatapathUpdate, now: float
) -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[str]]]:
    """An element-only update as (set -> [(ip, timeout ms)], set -> [ip]) for netlink."""
    upserts: dict[str, list[tuple[str, int]]] = {}
    for key, ip, expiry in update.elements:
        timeout_ms = max(1000, math.ceil((expiry - now) * 1000))
        upserts.setdefault(set_name(key), []).append((ip, timeout_ms))
    deletes: dict[str, list[str]] = {}
    for key, ip in update.removed_elements:
        deletes.setdefault(set_name(key), []).append(ip)
    return upserts, deletes


def parse_table(listing: str, now: float) -> tuple[str | None, ObservedState, set[str], set[str]]:
    """Read ``nft -j list table``: (layout comment, state, endpoints, endpoints with DNS)."""
    data = json.loads(listing)
    observed = ObservedState()
    endpoints: set[str] = set()
    with_dns: set[str] = set()
    layout: str | None = None
    for item in data.get("nftables", []):
        if "set" in item:
            info = item["set"]
            key = info.get("comment")
            if info["name"] == "layout":
                layout = key
            if not info["name"].startswith("fqdn_") or not key:
                continue
            observed.selectors.add(key)
            elements: dict[str, float] = {}
            for element in info.get("elem", []):
                if isinstance(element, dict) and "elem" in element:
                    value = element["elem"]
                    elements[str(value["val"])] = now + float(value.get("expires", 0))
            observed.elements[key] = elements
        elif "map" in item:
            info = item["map"]
            target = endpoints if info["name"] == "endpoints" else with_dns
            if info["name"] in ("endpoints", "dns_endpoints"):
                for element in info.get("elem", []):
                    target.add(str(element[0]))
        elif "rule" in item:
            rule = item["rule"]
            comment = rule.get("comment", "")
            if rule["chain"].startswith("ep_") and comment.startswith(FINGERPRINT_PREFIX):
                ip = rule["chain"][3:].replace("_", ".")
                observed.fingerprints[ip] = comment[len(FINGERPRINT_PREFIX) :]
    return layout, observed, endpoints, with_dns


class NftablesBackend:
    """Enforces the datapath model with nftables in one network namespace."""

    name = "nftables"

    def __init__(
        self,
        config: NftConfig,
        runner: NetnsRunner,
        *,
        route_table: int = 2004,
        rule_priority: int = 9,
    ) -> None:
        self.config = config
        self.runner = runner
        self.route_table = route_table
        self.rule_priority = rule_priority
        self._nft: Any = runner.call(open_nftables)
        self._writer: SetElementWriter | None
        try:
            self._writer = runner.call(SetElementWriter)
        except OSError:
            self._writer = None  # no raw netlink: every update goes through libnftables
        self._installed: set[str] = set()
        self._with_dns: set[str] = set()
        self.transactions = 0

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> NftablesBackend:
        """Build from the agent settings (enters ``settings.netns`` when set)."""
        config = NftConfig(
            table=settings.nft_table,
            mark=settings.tproxy_mark,
            mark_mask=settings.tproxy_mark_mask,
            proxy_port=settings.proxy_port,
            proxy_address=settings.proxy_address,
            deny_action=settings.deny_action,
        )
        return cls(
            config,
            NetnsRunner(settings.netns),
            route_table=settings.tproxy_route_table,
            rule_priority=settings.tproxy_rule_priority,
        )

    @property
    def uses_library(self) -> bool:
        """Whether batches go through libnftables (else the nft command)."""
        return isinstance(self._nft, LibNftables)

    def run(self, commands: str, *, json_output: bool = False) -> str:
        """Run one batch in the namespace."""
        return str(self.runner.call(lambda: self._nft.run(commands, json_output=json_output)))

    def observe(self) -> ObservedState:
        """Create the table if missing; otherwise read back what a previous run left."""
        import time

        self.ensure_routing()
        try:
            listing = self.run(f"list table inet {self.config.table}", json_output=True)
        except NftablesError:
            self.run(render_base(self.config) + "\n")
            return ObservedState()
        layout, observed, endpoints, with_dns = parse_table(listing, time.time())
        if layout != LAYOUT:
            # An older layout: replace the table in one transaction (an upgrade, rare).
            self.run(f"delete table inet {self.config.table}\n" + render_base(self.config) + "\n")
            return ObservedState()
        self._installed = endpoints
        self._with_dns = with_dns
        return observed

    def ensure_routing(self) -> None:
        """``ip rule fwmark MARK/MASK lookup TABLE`` and ``local 0.0.0.0/0 dev lo`` (idempotent)."""
        mark = f"{self.config.mark:#x}/{self.config.mark_mask:#x}"
        rules = self.runner.run(["ip", "-4", "rule", "show"]).stdout
        if f"fwmark {mark} lookup {self.route_table}" not in rules:
            self.runner.run(
                [
                    "ip", "-4", "rule", "add", "fwmark", mark, "lookup",
                    str(self.route_table), "priority", str(self.rule_priority),
                ]
            )  # fmt: skip
        self.runner.run(
            ["ip", "-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table",
             str(self.route_table)]
        )  # fmt: skip

    def apply(self, update: DatapathUpdate, now: float) -> None:
        """Apply ``update`` as one nftables transaction."""
        if self._writer is not None and self._elements_only(update):
            self._writer.apply(self.config.table, *element_batches(update, now))
            self.transactions += 1
            return
        batch = render_update(
            self.config, update, now, installed=self._installed, with_dns=self._with_dns
        )
        if not batch:
            return
        self.run(batch)
        self.transactions += 1
        for ip, program in update.programs.items():
            if program is None:
                self._installed.discard(ip)
                self._with_dns.discard(ip)
            else:
                self._installed.add(ip)
                if program.dns_redirect:
                    self._with_dns.add(ip)
                else:
                    self._with_dns.discard(ip)

    @staticmethod
    def _elements_only(update: DatapathUpdate) -> bool:
        # The fast path is for DNS answers and GC; big refills go through libnftables.
        return (
            not update.programs
            and not update.new_selectors
            and not update.removed_selectors
            and len(update.elements) + len(update.removed_elements) <= FAST_PATH_MAX
        )

    def list_ruleset(self) -> str:
        """The table as text (inspection, tests)."""
        return self.run(f"list table inet {self.config.table}")

    def close(self) -> None:
        """Free libnftables; the table stays in the kernel, enforcing."""
        self.runner.call(self._nft.close)
        if self._writer is not None:
            self._writer.close()
        self.runner.close()


def require_root_capabilities() -> None:
    """Raise :class:`ConfigurationError` early when nftables cannot be used at all."""
    try:
        NetnsRunner(None).call(lambda: open_nftables().run("list tables"))
    except (NftablesError, OSError) as exc:
        raise ConfigurationError(f"nftables is not usable here: {exc}") from exc
