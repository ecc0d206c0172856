"""Compilation: admitted policies + cluster state -> per-endpoint egress rules (pure).

For each local endpoint (a pod on this node with an address), :class:`Compiler` says:

* whether it is default-deny for egress: some selecting rule has ``egress`` or
  ``egressDeny`` items and does not set ``enableDefaultDeny.egress: false`` (Cilium);
* its L3/L4 allow rules: ``toEndpoints`` (Cilium label prefixes, the implicit
  namespace label, namespace labels), ``toCIDR``, ``toCIDRSet`` with ``except``,
  ``toEntities`` (:mod:`.entities`), each with its ports and protocols (``ANY`` =
  TCP, UDP and SCTP) or its IPv4 ``icmps`` types (protocol ``ICMP``, the type as the
  port); a rule with only ``toPorts`` (or ``icmps``) allows those to anywhere; an
  empty rule ``{}`` allows nothing;
* its deny rules (``egressDeny``), which win over everything;
* its toFQDNs selectors with their ports;
* its DNS rules: names and patterns (an empty ``dns`` list allows every name), the DNS
  servers as prefixes - the selected DNS pods *and* the ClusterIPs of Services whose
  selector picks those pods, because pods query the Service address - ports and
  protocols.

Peers are cluster-wide: a ``toEndpoints`` selector resolves against every pod known,
on any node. Only policies that passed validation may be given to the compiler (the
agent checks with :func:`acns_operator.policy.validate` first).

Incremental: every ``set_*`` / ``remove_*`` call returns the local endpoints whose
result may have changed, found through indexes (policies by namespace, peer selectors
by one of their required labels), so one pod or policy change recompiles only those.
Compilation is deterministic: the same inputs give equal results.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from acns_operator.api.objects import CiliumClusterwideNetworkPolicy, PolicyObject
from acns_operator.api.peers import CIDRRule
from acns_operator.api.ports import PortDenyRule, PortProtocol, PortRule
from acns_operator.api.rules import EgressDenyRule, EgressRule, ICMPRule, Rule
from acns_operator.api.selectors import EndpointSelector
from acns_operator.fqdn.matcher import FQDNSelector
from acns_operator.policy.entities import ANY_PREFIX, EntityContext, entity_prefixes, subtract
from acns_operator.policy.icmp import icmpv4_type
from acns_operator.policy.selectors import (
    NAMESPACE_LABEL,
    PodIndex,
    Selector,
    cilium_labels,
    peer_selector,
    subject_selector,
)

ALL_PROTOCOLS = ("TCP", "UDP", "SCTP")
ICMP_PROTOCOL = "ICMP"
"""The protocol of compiled ICMP (IPv4) rules; their port range is the ICMP type."""


@dataclass(frozen=True, slots=True)
class Pod:
    """What the agent knows of a pod: identity, labels, address, node."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str | None = None
    node: str | None = None
    host_ip: str | None = None

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Service:
    """A Service's ClusterIP and selector (DNS servers sit behind one)."""

    namespace: str
    name: str
    cluster_ip: str | None
    selector: Mapping[str, str] | None

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class Port:
    """A protocol (TCP, UDP, SCTP) and an inclusive port range (0-65535: all).

    ``ICMP`` (IPv4) ranges hold ICMP types instead of ports: ``Port("ICMP", 8, 8)``.
    """

    protocol: str
    first: int = 0
    last: int = 65535

    def __str__(self) -> str:
        if (self.first, self.last) == (0, 65535):
            return f"{self.protocol}/any"
        if self.first == self.last:
            return f"{self.first}/{self.protocol}"
        return f"{self.first}-{self.last}/{self.protocol}"


@dataclass(frozen=True, slots=True, order=True)
class RuleSource:
    """Which policy and which rule in it produced something."""

    kind: str
    namespace: str
    name: str
    path: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where} {self.path}"


@dataclass(frozen=True, slots=True)
class PeerAllow:
    """Destinations (prefixes) on some ports (none: every port)."""

    prefixes: tuple[str, ...]
    ports: tuple[Port, ...]
    source: RuleSource
    peer: str  # how the policy named it, for people


@dataclass(frozen=True, slots=True)
class FQDNAllow:
    """toFQDNs selectors on some ports."""

    selectors: tuple[FQDNSelector, ...]
    ports: tuple[Port, ...]
    source: RuleSource


@dataclass(frozen=True, slots=True)
class DNSAllow:
    """A DNS rule: names the endpoint may look up, through which servers and ports."""

    match_names: tuple[str, ...]
    match_patterns: tuple[str, ...]
    allow_all: bool
    servers: tuple[str, ...]  # prefixes; empty: any destination
    ports: tuple[Port, ...]
    source: RuleSource


@dataclass(frozen=True, slots=True)
class EndpointRules:
    """Everything compiled for one local endpoint."""

    pod: str
    namespace: str
    name: str
    ip: str
    enforced: bool
    allow: tuple[PeerAllow, ...] = ()
    deny: tuple[PeerAllow, ...] = ()
    fqdn: tuple[FQDNAllow, ...] = ()
    dns: tuple[DNSAllow, ...] = ()
    policies: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """Cluster facts the compiler needs."""

    node_name: str | None
    cluster_cidrs: tuple[str, ...] = ("10.244.0.0/16",)
    apiserver_addresses: tuple[str, ...] = ()
    host_addresses: tuple[str, ...] = ()


@dataclass(slots=True)
class _CompiledPolicy:
    key: str
    kind: str
    namespace: str | None
    name: str
    rules: list[tuple[str, Rule, Selector]]  # (path, rule, subject selector)
    peers: list[Selector]
    has_dns: bool
    # toEndpoints selector objects -> their normalised form (made once, at load)
    peer_map: dict[int, Selector] = field(default_factory=dict)

    def peer_of(self, selector: EndpointSelector) -> Selector:
        """The normalised form of one of this policy's toEndpoints selectors."""
        found = self.peer_map.get(id(selector))
        if found is None:
            found = self.peer_map[id(selector)] = peer_selector(selector, self.namespace)
        return found


@dataclass(slots=True)
class _PartOutput:
    allow: list[PeerAllow] = field(default_factory=list)
    deny: list[PeerAllow] = field(default_factory=list)
    fqdn: list[FQDNAllow] = field(default_factory=list)
    dns: list[DNSAllow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Part:
    """One ``egress`` / ``egressDeny`` item: compiled when needed, dropped on change."""

    denies: bool
    rule: EgressRule | EgressDenyRule
    source: RuleSource
    peers: tuple[Selector, ...]
    has_dns: bool
    output: _PartOutput | None = None


@dataclass(slots=True)
class _RuleOutput:
    """One rule of a policy. Its items do not depend on the endpoint they apply to, so
    each is compiled once and shared by every endpoint the rule selects."""

    subject: Selector
    enforced: bool
    parts: list[_Part]


def policy_key(policy: PolicyObject) -> str:
    """``Kind/namespace/name`` of a policy object."""
    kind = type(policy).__name__
    return f"{kind}/{policy.namespace or ''}/{policy.name or ''}"


@functools.lru_cache(maxsize=65536)
def _fqdn_selector(match_name: str | None, match_pattern: str | None) -> FQDNSelector:
    # Construction validates the name (tens of microseconds); policies repeat names.
    return FQDNSelector(match_name=match_name, match_pattern=match_pattern)


def to_ports(items: Iterable[PortProtocol] | None) -> tuple[tuple[Port, ...], list[str]]:
    """API ports -> :class:`Port` values, plus notes on what could not be used."""
    key = tuple((item.port, item.end_port, item.protocol) for item in items or [])
    ports, notes = _to_ports(key)
    return ports, list(notes)


@functools.lru_cache(maxsize=4096)
def _to_ports(
    items: tuple[tuple[str | None, int | None, str | None], ...],
) -> tuple[tuple[Port, ...], tuple[str, ...]]:
    ports: list[Port] = []
    notes: list[str] = []
    for port_text, end_port, protocol_name in items:
        protocols = ALL_PROTOCOLS if protocol_name in (None, "ANY") else (protocol_name,)
        text = (port_text or "0").strip()
        if not text.isdigit():
            notes.append(f"named port {text!r} cannot be resolved without container ports")
            continue
        first = int(text)
        last = end_port if end_port else first
        if first == 0:
            first, last = 0, 65535
        for protocol in protocols:
            if protocol not in ALL_PROTOCOLS:
                notes.append(f"protocol {protocol} is not enforced")
                continue
            ports.append(Port(str(protocol), first, max(first, last)))
    return tuple(sorted(set(ports))), tuple(notes)


def icmp_ports(icmps: Iterable[ICMPRule], notes: list[str]) -> tuple[Port, ...]:
    """IPv4 ICMP types as ``Port("ICMP", type, type)``; notes on types left out.

    ICMPv6 is blocked by the AKS profile; a name with no IPv4 code is warned at
    admission (``acns.not-enforced.icmp``) and allows or denies nothing here.
    """
    ports: set[Port] = set()
    for icmp in icmps:
        for item in icmp.fields or []:
            number = icmpv4_type(item)
            if number is None:
                notes.append(f"ICMP type {item.type!r} ({item.family or 'IPv4'}) is not enforced")
                continue
            ports.add(Port(ICMP_PROTOCOL, number, number))
    return tuple(sorted(ports))


def _usable_ports(
    port_rules: Iterable[PortRule | None], notes: list[str]
) -> Iterator[tuple[PortRule | None, tuple[Port, ...]]]:
    """Each toPorts entry (None: no toPorts, any port) with its enforceable ports.

    An entry that lists ports of which none can be enforced (e.g. only named ports) is
    left out, so it allows nothing (fails closed) instead of every port; why goes to
    ``notes``.
    """
    for port_rule in port_rules:
        ports, port_notes = to_ports(port_rule.ports if port_rule else None)
        notes.extend(port_notes)
        if port_rule is not None and port_rule.ports and not ports:
            continue
        yield port_rule, ports


def _cidr_set(rules: Iterable[CIDRRule], notes: list[str]) -> list[str]:
    out: list[str] = []
    for rule in rules:
        if rule.cidr is None:
            notes.append("cidrGroupRef/cidrGroupSelector are not supported")
            continue
        network = ipaddress.ip_network(rule.cidr, strict=False)
        if not isinstance(network, ipaddress.IPv4Network):
            continue
        out.extend(subtract(str(network), rule.except_cidrs or []))
    return out


def _v4(prefixes: Iterable[str]) -> tuple[str, ...]:
    """IPv4 prefixes only, collapsed and sorted (the same input gives the same tuple)."""
    return _collapse_v4(tuple(sorted(set(prefixes))))


@functools.lru_cache(maxsize=16384)
def _collapse_v4(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    # Peers resolve to the same pod sets again and again (one per rule and endpoint):
    # parsing and collapsing is the costly part of a compile, so results are cached.
    networks = []
    for prefix in prefixes:
        network = ipaddress.ip_network(prefix, strict=False)
        if isinstance(network, ipaddress.IPv4Network):
            networks.append(network)
    return tuple(str(n) for n in ipaddress.collapse_addresses(networks))


class Compiler:
    """Cluster state, admitted policies and the incremental per-endpoint compiler."""

    def __init__(self, options: CompileOptions) -> None:
        self.options = options
        self.pods: dict[str, Pod] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.services: dict[str, Service] = {}
        self.index = PodIndex()
        self._policies: dict[str, _CompiledPolicy] = {}
        self._by_namespace: dict[str | None, set[str]] = {}
        self._peer_index: dict[tuple[str, str], set[str]] = {}
        self._peer_unindexed: set[str] = set()
        self._dns_policies: set[str] = set()
        self._peer_cache: dict[Selector, tuple[str, ...]] = {}
        self._service_cache: dict[Selector, list[str]] = {}
        # A policy's rules do not depend on the endpoint they select (only on peers,
        # Services and entities), so each is compiled once and reused; changes drop
        # the outputs of the policies they touch.
        self._outputs: dict[str, list[_RuleOutput]] = {}
        # While False (a bulk load before the first compile_all), changes do not work
        # out which endpoints they affect: everything is compiled afterwards anyway.
        self.tracking = True
        self._selected_cache: dict[str, frozenset[str]] = {}

    # -- state changes (each returns the local endpoints to recompile) --------------

    def set_policy(self, policy: PolicyObject) -> set[str]:
        """Add or replace an (admitted) policy."""
        key = policy_key(policy)
        affected = self.remove_policy(key)
        clusterwide = isinstance(policy, CiliumClusterwideNetworkPolicy)
        namespace = None if clusterwide else (policy.namespace or "default")
        rules: list[tuple[str, Rule, Selector]] = []
        peers: list[Selector] = []
        peer_map: dict[int, Selector] = {}
        has_dns = False
        for path, rule in policy.rules:
            if rule.endpoint_selector is None:
                continue  # nodeSelector rules apply to hosts, not pods
            rules.append((path, rule, subject_selector(rule.endpoint_selector, namespace)))
            targets = [e.to_endpoints for e in rule.egress or []]
            targets += [e.to_endpoints for e in rule.egress_deny or []]
            for selectors in targets:
                for selector in selectors or []:
                    normalised = peer_selector(selector, namespace)
                    peers.append(normalised)
                    peer_map[id(selector)] = normalised
            for egress_rule in rule.egress or []:
                for port_rule in egress_rule.to_ports or []:
                    if port_rule.rules is not None and port_rule.rules.dns is not None:
                        has_dns = True
        compiled = _CompiledPolicy(
            key, type(policy).__name__, namespace, policy.name or "", rules, peers, has_dns,
            peer_map,
        )  # fmt: skip
        self._policies[key] = compiled
        self._by_namespace.setdefault(namespace, set()).add(key)
        for peer in peers:
            self._file_peer(key, peer)
        if has_dns:
            self._dns_policies.add(key)
        return affected | self._selected_by(compiled) if self.tracking else affected

    def remove_policy(self, key: str) -> set[str]:
        """Forget a policy (deleted, or no longer admitted)."""
        compiled = self._policies.pop(key, None)
        self._outputs.pop(key, None)
        self._selected_cache.pop(key, None)
        if compiled is None:
            return set()
        self._by_namespace.get(compiled.namespace, set()).discard(key)
        for bucket in self._peer_index.values():
            bucket.discard(key)
        self._peer_unindexed.discard(key)
        self._dns_policies.discard(key)
        return self._selected_by(compiled) if self.tracking else set()

    def set_pod(self, pod: Pod) -> set[str]:
        """Add or replace a pod (any node: peers are cluster-wide)."""
        old = self.pods.get(pod.key)
        if old == pod:
            return set()
        old_labels = self.index.labels.get(pod.key)
        if self._is_local(pod) or (old is not None and self._is_local(old)):
            self._selected_cache.clear()
        touched = self._peer_policies(pod.key) if old is not None else set()
        self.pods[pod.key] = pod
        self.index.put(pod.key, self._labels_of(pod))
        self._clear_caches()
        touched |= self._peer_policies(pod.key)
        labels = [self.index.labels[pod.key], *([old_labels] if old_labels else [])]
        affected = self._invalidate_parts(touched, labels)
        if self._backs_service(pod) or (old is not None and self._backs_service(old)):
            affected |= self._invalidate_parts(self._dns_policies, [], dns=True)
        if old is not None and old.host_ip != pod.host_ip:
            # Entities (host, remote-node, world) depend on node addresses.
            self._outputs.clear()
            affected |= set(self.local_endpoints())
        if self._is_local(pod) or (old is not None and self._is_local(old)):
            affected.add(pod.key)
        return affected

    def remove_pod(self, key: str) -> set[str]:
        """Forget a pod."""
        old = self.pods.get(key)
        if old is None:
            return set()
        affected = self._invalidate_parts(self._peer_policies(key), [self.index.labels[key]])
        if self._is_local(old):
            self._selected_cache.clear()
        if self._backs_service(old):
            affected |= self._invalidate_parts(self._dns_policies, [], dns=True)
        if self._is_local(old):
            affected.add(key)
        del self.pods[key]
        self.index.remove(key)
        self._clear_caches()
        return affected

    def set_namespace(self, name: str, labels: Mapping[str, str]) -> set[str]:
        """Add or relabel a namespace (its labels are pod labels to Cilium)."""
        if self.namespaces.get(name) == dict(labels):
            return set()
        touched: set[str] = set()
        self._selected_cache.clear()
        members = [p for p in self.pods.values() if p.namespace == name]
        for pod in members:
            touched |= self._peer_policies(pod.key)
        self.namespaces[name] = dict(labels)
        for pod in members:
            self.index.put(pod.key, self._labels_of(pod))
            touched |= self._peer_policies(pod.key)
        affected = self._invalidate(touched)
        for pod in members:
            if self._is_local(pod):
                affected.add(pod.key)
        self._clear_caches()
        return affected

    def remove_namespace(self, name: str) -> set[str]:
        """Forget a namespace's labels."""
        if name not in self.namespaces:
            return set()
        return self.set_namespace(name, {}) | set()

    def set_service(self, service: Service) -> set[str]:
        """Add or replace a Service."""
        if self.services.get(service.key) == service:
            return set()
        self.services[service.key] = service
        self._service_cache.clear()
        if service.key == "default/kubernetes":
            self._outputs.clear()  # the kube-apiserver entity
            return set(self.local_endpoints())
        return self._invalidate_parts(self._dns_policies, [], dns=True)

    def remove_service(self, key: str) -> set[str]:
        """Forget a Service."""
        if self.services.pop(key, None) is None:
            return set()
        self._service_cache.clear()
        if key == "default/kubernetes":
            self._outputs.clear()
            return set(self.local_endpoints())
        return self._invalidate_parts(self._dns_policies, [], dns=True)

    # -- queries --------------------------------------------------------------------

    def policy_keys(self) -> list[str]:
        """Keys of the policies loaded (see :func:`policy_key`)."""
        return sorted(self._policies)

    def local_endpoints(self) -> list[str]:
        """Keys of the pods on this node that have an address."""
        return sorted(k for k, p in self.pods.items() if self._is_local(p))

    def compile_all(self) -> dict[str, EndpointRules]:
        """Every local endpoint that has egress rules."""
        out: dict[str, EndpointRules] = {}
        for key in self.local_endpoints():
            rules = self.compile(key)
            if rules is not None:
                out[key] = rules
        return out

    def compile(self, key: str) -> EndpointRules | None:
        """The rules of one local endpoint; None when no egress rule selects it."""
        pod = self.pods.get(key)
        if pod is None or not self._is_local(pod) or pod.ip is None:
            return None
        labels = self.index.labels[key]
        allow: list[PeerAllow] = []
        deny: list[PeerAllow] = []
        fqdn: list[FQDNAllow] = []
        dns: list[DNSAllow] = []
        notes: list[str] = []
        policies: list[str] = []
        enforced = False
        selected_any = False
        candidates = self._by_namespace.get(pod.namespace, set()) | self._by_namespace.get(
            None, set()
        )
        for policy_name in sorted(candidates):
            for output in self._policy_output(policy_name):
                if not output.subject.matches(labels):
                    continue
                selected_any = True
                if policy_name not in policies:
                    policies.append(policy_name)
                enforced = enforced or output.enforced
                compiled = self._policies[policy_name]
                for part in output.parts:
                    done = self._part_output(compiled, part)
                    allow.extend(done.allow)
                    deny.extend(done.deny)
                    fqdn.extend(done.fqdn)
                    dns.extend(done.dns)
                    notes.extend(done.notes)
        if not selected_any:
            return None
        return EndpointRules(
            pod=key,
            namespace=pod.namespace,
            name=pod.name,
            ip=pod.ip,
            enforced=enforced,
            allow=tuple(allow),
            deny=tuple(deny),
            fqdn=tuple(fqdn),
            dns=tuple(dns),
            policies=tuple(policies),
            notes=tuple(dict.fromkeys(notes)),
        )

    # -- rule compilation -----------------------------------------------------------

    def _policy_output(self, key: str) -> list[_RuleOutput]:
        cached = self._outputs.get(key)
        if cached is not None:
            return cached
        compiled = self._policies[key]
        outputs: list[_RuleOutput] = []
        for path, rule, subject in compiled.rules:
            if not rule.egress and not rule.egress_deny:
                continue
            wants_deny = rule.enable_default_deny is None or (
                rule.enable_default_deny.egress is not False
            )
            parts: list[_Part] = []
            items: list[tuple[bool, str, EgressRule | EgressDenyRule]] = [
                (False, f"{path}.egress[{i}]", e) for i, e in enumerate(rule.egress or [])
            ]
            items += [
                (True, f"{path}.egressDeny[{i}]", d) for i, d in enumerate(rule.egress_deny or [])
            ]
            for denies, item_path, item in items:
                source = RuleSource(
                    compiled.kind, compiled.namespace or "", compiled.name, item_path
                )
                peers = tuple(compiled.peer_of(sel) for sel in item.to_endpoints or [])
                has_dns = not denies and any(
                    p.rules is not None and p.rules.dns is not None
                    for p in getattr(item, "to_ports", None) or []
                )
                parts.append(_Part(denies, item, source, peers, has_dns))
            outputs.append(_RuleOutput(subject, wants_deny, parts))
        self._outputs[key] = outputs
        return outputs

    def _part_output(self, compiled: _CompiledPolicy, part: _Part) -> _PartOutput:
        if part.output is None:
            out = _PartOutput()
            if part.denies:
                assert isinstance(part.rule, EgressDenyRule)
                self._egress_deny(compiled, part.rule, part.source, out.deny, out.notes)
            else:
                assert isinstance(part.rule, EgressRule)
                self._egress(
                    compiled, part.rule, part.source, out.allow, out.fqdn, out.dns, out.notes
                )
            part.output = out
        return part.output

    def _invalidate(self, policy_keys: Iterable[str]) -> set[str]:
        """Drop the outputs of some policies; returns the endpoints they select."""
        affected: set[str] = set()
        for key in policy_keys:
            self._outputs.pop(key, None)
            compiled = self._policies.get(key)
            if compiled is not None and self.tracking:
                affected |= self._selected_by(compiled)
        return affected

    def _invalidate_parts(
        self, policy_keys: Iterable[str], labels: Sequence[Mapping[str, str]], *, dns: bool = False
    ) -> set[str]:
        """Drop only the items whose peers select a pod with ``labels`` (or, with ``dns``,
        the items with DNS rules); returns the endpoints of the policies touched."""
        affected: set[str] = set()
        for key in policy_keys:
            # Not compiled yet: nothing to drop, but its endpoints may still change.
            touched = key not in self._outputs
            for output in self._outputs.get(key, []):
                for part in output.parts:
                    hit = (dns and part.has_dns) or any(
                        peer.matches(one) for peer in part.peers for one in labels
                    )
                    if hit:
                        part.output = None
                        touched = True
            compiled = self._policies.get(key)
            if touched and compiled is not None and self.tracking:
                affected |= self._selected_by(compiled)
        return affected

    def _peers(
        self, compiled: _CompiledPolicy, rule: EgressRule | EgressDenyRule, notes: list[str]
    ) -> tuple[bool, list[str], list[str], list[str]]:
        """(has an L3 peer, prefixes, peer descriptions, DNS-server extra prefixes)."""
        has_peer = False
        prefixes: list[str] = []
        described: list[str] = []
        service_ips: list[str] = []
        if rule.to_endpoints is not None:
            has_peer = True
            for selector in rule.to_endpoints:
                normalised = compiled.peer_of(selector)
                ips = self._resolve(normalised)
                prefixes.extend(f"{ip}/32" for ip in ips)
                service_ips.extend(self._service_ips(normalised))
                described.append(f"toEndpoints {normalised}")
        if rule.to_cidr is not None:
            has_peer = True
            prefixes.extend(rule.to_cidr)
            described.append(f"toCIDR {','.join(rule.to_cidr)}")
        if rule.to_cidr_set is not None:
            has_peer = True
            prefixes.extend(_cidr_set(rule.to_cidr_set, notes))
            described.append("toCIDRSet")
        if rule.to_entities is not None:
            has_peer = True
            context = self._entity_context()
            for entity in rule.to_entities:
                prefixes.extend(entity_prefixes(entity, context))
            described.append(f"toEntities {','.join(rule.to_entities)}")
        for unsupported in ("to_services", "to_groups", "to_nodes"):
            if getattr(rule, unsupported, None) is not None:
                has_peer = True
                notes.append(f"{unsupported} is not enforced")
        return has_peer, prefixes, described, service_ips

    def _egress(
        self,
        compiled: _CompiledPolicy,
        rule: EgressRule,
        source: RuleSource,
        allow: list[PeerAllow],
        fqdn: list[FQDNAllow],
        dns: list[DNSAllow],
        notes: list[str],
    ) -> None:
        if rule.authentication is not None and rule.authentication.mode not in (None, "disabled"):
            # Mutual authentication cannot be done here (warned at admission): fail closed.
            notes.append(f"authentication mode {rule.authentication.mode} is not enforced")
            return
        port_rules: list[PortRule | None] = list(rule.to_ports or []) or [None]
        icmp = icmp_ports(rule.icmps, notes) if rule.icmps else None
        if rule.to_fqdns is not None:
            selectors = tuple(_fqdn_selector(s.match_name, s.match_pattern) for s in rule.to_fqdns)
            if icmp is not None:
                if icmp:
                    fqdn.append(FQDNAllow(selectors, icmp, source))
                return
            for _, ports in _usable_ports(port_rules, notes):
                fqdn.append(FQDNAllow(selectors, ports, source))
            return
        has_peer, prefixes, described, service_ips = self._peers(compiled, rule, notes)
        if not has_peer and rule.to_ports is None and icmp is None:
            return  # an empty rule {} allows nothing (it only enables default deny)
        peer_text = " ".join(described) or "any destination"
        targets = _v4(prefixes) if has_peer else (ANY_PREFIX,)
        if icmp is not None:
            # icmps and toPorts exclude each other (validated): only these ICMP types.
            if icmp and targets:
                allow.append(PeerAllow(targets, icmp, source, peer_text))
            return
        for port_rule, ports in _usable_ports(port_rules, notes):
            l7 = port_rule.rules if port_rule is not None else None
            if l7 is not None and l7.dns is not None:
                servers = _v4([*prefixes, *(f"{ip}/32" for ip in service_ips)])
                names = tuple(s.match_name for s in l7.dns if s.match_name is not None)
                patterns = tuple(s.match_pattern for s in l7.dns if s.match_pattern is not None)
                dns.append(
                    DNSAllow(
                        match_names=names,
                        match_patterns=patterns,
                        allow_all=not l7.dns,
                        servers=servers if has_peer else (),
                        ports=ports,
                        source=source,
                    )
                )
                # The DNS traffic itself is allowed (it goes through the proxy).
                if has_peer and servers:
                    allow.append(PeerAllow(servers, ports, source, peer_text + " (DNS)"))
                elif not has_peer:
                    allow.append(PeerAllow((ANY_PREFIX,), ports, source, "DNS to any server"))
                continue
            if targets:
                allow.append(PeerAllow(targets, ports, source, peer_text))

    def _egress_deny(
        self,
        compiled: _CompiledPolicy,
        rule: EgressDenyRule,
        source: RuleSource,
        deny: list[PeerAllow],
        notes: list[str],
    ) -> None:
        icmp = icmp_ports(rule.icmps, notes) if rule.icmps else None
        has_peer, prefixes, described, _ = self._peers(compiled, rule, notes)
        if not has_peer and rule.to_ports is None and icmp is None:
            return
        targets = _v4(prefixes) if has_peer else (ANY_PREFIX,)
        if icmp is not None:
            if icmp and targets:
                deny.append(PeerAllow(targets, icmp, source, " ".join(described) or "any"))
            return
        deny_port_rules: list[PortDenyRule | None] = list(rule.to_ports or []) or [None]
        for port_rule in deny_port_rules:
            ports, port_notes = to_ports(port_rule.ports if port_rule else None)
            notes.extend(port_notes)
            if port_rule is not None and port_rule.ports and not ports:
                continue
            if targets:
                deny.append(PeerAllow(targets, ports, source, " ".join(described) or "any"))

    # -- helpers --------------------------------------------------------------------

    def _is_local(self, pod: Pod) -> bool:
        return pod.ip is not None and (
            self.options.node_name is None or pod.node == self.options.node_name
        )

    def _labels_of(self, pod: Pod) -> dict[str, str]:
        return cilium_labels(pod.labels, pod.namespace, self.namespaces.get(pod.namespace, {}))

    def _clear_caches(self) -> None:
        self._peer_cache.clear()
        self._service_cache.clear()

    def _resolve(self, selector: Selector) -> tuple[str, ...]:
        cached = self._peer_cache.get(selector)
        if cached is None:
            ips = {self.pods[k].ip for k in self.index.select(selector)}
            cached = tuple(sorted(ip for ip in ips if ip))
            self._peer_cache[selector] = cached
        return cached

    def _service_ips(self, selector: Selector) -> list[str]:
        """ClusterIPs of Services whose selector picks a pod ``selector`` selects."""
        if not self.services:
            return []
        cached = self._service_cache.get(selector)
        if cached is None:
            cached = self._service_cache[selector] = self._find_service_ips(selector)
        return cached

    def _find_service_ips(self, selector: Selector) -> list[str]:
        pods = [self.pods[k] for k in self.index.select(selector)]
        out: list[str] = []
        for service in self.services.values():
            if not service.cluster_ip or not service.selector or service.cluster_ip == "None":
                continue
            for pod in pods:
                if pod.namespace == service.namespace and all(
                    pod.labels.get(k) == v for k, v in service.selector.items()
                ):
                    out.append(service.cluster_ip)
                    break
        return out

    def _backs_service(self, pod: Pod) -> bool:
        """Whether a Service selects the pod (its ClusterIP may be a DNS server)."""
        return any(
            service.namespace == pod.namespace
            and service.selector
            and all(pod.labels.get(k) == v for k, v in service.selector.items())
            for service in self.services.values()
        )

    def _entity_context(self) -> EntityContext:
        local: set[str] = set(self.options.host_addresses)
        remote: set[str] = set()
        for pod in self.pods.values():
            if pod.host_ip:
                (local if pod.node == self.options.node_name else remote).add(pod.host_ip)
        apiserver = list(self.options.apiserver_addresses)
        kubernetes = self.services.get("default/kubernetes")
        if kubernetes is not None and kubernetes.cluster_ip:
            apiserver.append(kubernetes.cluster_ip)
        return EntityContext(
            cluster_cidrs=self.options.cluster_cidrs,
            local_node_addresses=tuple(sorted(local)),
            remote_node_addresses=tuple(sorted(remote - local)),
            apiserver_addresses=tuple(sorted(set(apiserver))),
        )

    def _file_peer(self, key: str, peer: Selector) -> None:
        # File under the most specific single-value requirement; the implicit namespace
        # label only when nothing else is required.
        chosen: tuple[str, str] | None = None
        for requirement in peer.requirements:
            if requirement.operator == "In" and len(requirement.values) == 1:
                pair = (requirement.key, next(iter(requirement.values)))
                if chosen is None or chosen[0] == NAMESPACE_LABEL:
                    chosen = pair
        if chosen is None:
            self._peer_unindexed.add(key)
        else:
            self._peer_index.setdefault(chosen, set()).add(key)

    def _peer_policies(self, pod_key: str) -> set[str]:
        """Policies with a peer selector that selects this pod (as labelled now)."""
        labels = self.index.labels.get(pod_key)
        if labels is None or (not self.tracking and not self._outputs):
            return set()
        candidates = set(self._peer_unindexed)
        for pair in labels.items():
            candidates |= self._peer_index.get(pair, set())
        return {
            key
            for key in candidates
            if any(peer.matches(labels) for peer in self._policies[key].peers)
        }

    def _selected_by(self, compiled: _CompiledPolicy) -> set[str]:
        # Only local pods can be selected, and they change far less than peers do.
        cached = self._selected_cache.get(compiled.key)
        if cached is not None:
            return set(cached)
        out: set[str] = set()
        for _, _, subject in compiled.rules:
            for key in self.index.select(subject):
                pod = self.pods.get(key)
                if pod is not None and self._is_local(pod):
                    out.add(key)
        self._selected_cache[compiled.key] = frozenset(out)
        return out


@dataclass(slots=True)
class ClusterSnapshot:
    """Plain inputs for a one-shot compile (``acns explain -f``, tests, benchmarks)."""

    policies: list[PolicyObject] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)


def compile_snapshot(snapshot: ClusterSnapshot, options: CompileOptions) -> Compiler:
    """A compiler loaded with ``snapshot`` (call :meth:`Compiler.compile_all` on it)."""
    compiler = Compiler(options)
    compiler.tracking = False
    for name, labels in snapshot.namespaces.items():
        compiler.set_namespace(name, labels)
    for service in snapshot.services:
        compiler.set_service(service)
    for pod in snapshot.pods:
        compiler.set_pod(pod)
    for policy in snapshot.policies:
        compiler.set_policy(policy)
    compiler.tracking = True
    return compiler
