"""What the enforcement backends enforce, and the engine that keeps them in sync.

The datapath model mirrors Cilium's identity design without identities:

* Each local endpoint selected by a policy gets an :class:`EndpointProgram`: deny
  rules first (they win), established/related traffic, then allowed L3/L4 peers,
  then toFQDNs rules referring to *selector sets*, then the default verdict (deny when
  any egress rule selects the endpoint).
* Each toFQDNs selector (``matchName`` / ``matchPattern``) has one node-wide set of
  IPs, each element with its own expiry: the IPs of every cached name it matches
  (Cilium's node-wide cache, ``fqdn:<selector>`` identities). A DNS answer therefore
  costs O(IPs x matching selectors), whatever the number of endpoints.
* DNS of endpoints that have DNS rules is redirected to the proxy
  (:attr:`EndpointProgram.dns_redirect`).

:class:`Datapath` turns compiled programs plus the policy-map store into
:class:`DatapathUpdate` diffs and hands each to the backend as one transaction.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from acns_operator.agent.clock import Clock
from acns_operator.agent.store import GCResult, MappingResult, PolicyMapStore
from acns_operator.fqdn.matcher import FQDNSelector, Matcher, compile_selectors
from acns_operator.fqdn.names import to_fqdn
from acns_operator.fqdn.patterns import sanitize_pattern

ICMP = 1
TCP = 6
UDP = 17
SCTP = 132
PROTOCOL_NAMES = {ICMP: "icmp", TCP: "tcp", UDP: "udp", SCTP: "sctp"}
PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOL_NAMES.items()}


@dataclass(frozen=True, slots=True, order=True)
class PortRange:
    """One protocol and an inclusive destination-port range (0-65535: every port).

    For ICMP (IPv4) the "port" is the ICMP type: ``PortRange(ICMP, 8, 8)`` is an echo
    request, and a packet is checked with ``protocol=ICMP, port=<its type>``.
    """

    protocol: int
    first: int = 0
    last: int = 65535

    def contains(self, protocol: int, port: int) -> bool:
        """Whether (protocol, port) falls in this range."""
        return protocol == self.protocol and self.first <= port <= self.last

    def __str__(self) -> str:
        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        if (self.first, self.last) == (0, 65535):
            return f"{proto}/any"
        if self.first == self.last:
            return f"{proto}/{self.first}"
        return f"{proto}/{self.first}-{self.last}"


def ports_match(ports: tuple[PortRange, ...], protocol: int, port: int) -> bool:
    """An empty port list allows every protocol and port (an L3-only rule)."""
    return not ports or any(p.contains(protocol, port) for p in ports)


@dataclass(frozen=True, slots=True)
class PeerRule:
    """Allowed or denied destinations: prefixes, optionally restricted to ports."""

    prefixes: tuple[str, ...]
    ports: tuple[PortRange, ...] = ()
    source: str = ""

    def matches(self, destination: str, protocol: int, port: int) -> bool:
        """Whether a packet to destination:port/protocol (ICMP: the type) matches."""
        if not ports_match(self.ports, protocol, port):
            return False
        address = ipaddress.ip_address(destination)
        return any(address in ipaddress.ip_network(prefix) for prefix in self.prefixes)


@dataclass(frozen=True, slots=True)
class FQDNRule:
    """Destinations learned through DNS for some selectors, optionally on some ports."""

    selectors: tuple[str, ...]  # selector keys, see selector_key()
    ports: tuple[PortRange, ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True)
class EndpointProgram:
    """Everything the datapath enforces for one local endpoint."""

    ip: str
    enforced: bool
    deny: tuple[PeerRule, ...] = ()
    allow: tuple[PeerRule, ...] = ()
    fqdn: tuple[FQDNRule, ...] = ()
    # (DNS-server prefixes, UDP/TCP ports) whose traffic goes to the proxy.
    dns_redirect: tuple[PeerRule, ...] = ()

    def fingerprint(self) -> str:
        """A short stable digest, stored in the kernel to skip unchanged programs."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]

    def selectors(self) -> set[str]:
        """Every selector key the program refers to."""
        return {key for rule in self.fqdn for key in rule.selectors}


def selector_key(selector: FQDNSelector) -> str:
    """A canonical key of a selector: ``name:<fqdn>`` or ``pattern:<sanitised>``."""
    if selector.match_name is not None:
        return "name:" + to_fqdn(selector.match_name)
    return "pattern:" + sanitize_pattern(selector.match_pattern or "")


def selector_from_key(key: str) -> FQDNSelector:
    """The inverse of :func:`selector_key`."""
    kind, _, value = key.partition(":")
    if kind == "name":
        return FQDNSelector.name(value)
    return FQDNSelector.pattern(value)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one packet, and the rule that made it."""

    allowed: bool
    reason: str
    source: str = ""


def evaluate(
    program: EndpointProgram | None,
    destination: str,
    protocol: int,
    port: int,
    selector_ips: Callable[[str], Mapping[str, float]],
    now: float,
    *,
    established: bool = False,
) -> Verdict:
    """Decide one egress packet exactly as the nftables chain does (the reference)."""
    if program is None:
        return Verdict(True, "no egress policy selects the endpoint")
    for rule in program.deny:
        if rule.matches(destination, protocol, port):
            return Verdict(False, "denied by an egress deny rule", rule.source)
    if established:
        return Verdict(True, "part of an established connection")
    for rule in program.allow:
        if rule.matches(destination, protocol, port):
            return Verdict(True, "allowed by an L3/L4 rule", rule.source)
    for fqdn_rule in program.fqdn:
        if not ports_match(fqdn_rule.ports, protocol, port):
            continue
        for key in fqdn_rule.selectors:
            expiry = selector_ips(key).get(destination)
            if expiry is not None and expiry > now:
                return Verdict(True, f"allowed by toFQDNs {key}", fqdn_rule.source)
    if program.enforced:
        return Verdict(False, "default deny: an egress policy selects the endpoint")
    return Verdict(True, "the endpoint is not in default deny (deny rules only)")


@dataclass(slots=True)
class DatapathUpdate:
    """One atomic change to the datapath."""

    programs: dict[str, EndpointProgram | None] = field(default_factory=dict)
    new_selectors: list[str] = field(default_factory=list)
    removed_selectors: list[str] = field(default_factory=list)
    # (selector, ip, expiry): add, or set the expiry of an existing element.
    elements: list[tuple[str, str, float]] = field(default_factory=list)
    removed_elements: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.programs
            or self.new_selectors
            or self.removed_selectors
            or self.elements
            or self.removed_elements
        )


@dataclass(slots=True)
class ObservedState:
    """What a backend found already installed when the agent started."""

    fingerprints: dict[str, str] = field(default_factory=dict)  # endpoint -> fingerprint
    selectors: set[str] = field(default_factory=set)
    elements: dict[str, dict[str, float]] = field(default_factory=dict)


class Datapath:
    """Keeps a backend equal to (compiled programs + the store), by diffs."""

    def __init__(self, backend: EnforcementBackend, store: PolicyMapStore, clock: Clock) -> None:
        self.backend = backend
        self.store = store
        self.clock = clock
        self.programs: dict[str, EndpointProgram] = {}
        self._fingerprints: dict[str, str] = {}
        self._refcount: dict[str, int] = {}
        self.elements: dict[str, dict[str, float]] = {}
        self._names_by_selector: dict[str, set[str]] = {}
        self._matcher: Matcher = compile_selectors([])
        self._matcher_keys: list[str] = []
        self._synced = False

    # -- start --------------------------------------------------------------------

    def adopt(self, observed: ObservedState) -> None:
        """Take over what the kernel kept from a previous run (no change is made).

        Until :meth:`set_programs` is called with the compiled policy, mappings keep
        feeding the selector sets that survived, so enforcement goes on as before.
        """
        self._fingerprints = dict(observed.fingerprints)
        self.elements = {key: dict(ips) for key, ips in observed.elements.items()}
        for key in observed.selectors:
            self.elements.setdefault(key, {})
            self._refcount[key] = 0
        self._rebuild_matcher()

    @property
    def synced(self) -> bool:
        """Whether compiled programs were applied at least once."""
        return self._synced

    # -- programs -----------------------------------------------------------------

    def set_programs(self, programs: Mapping[str, EndpointProgram]) -> DatapathUpdate:
        """Make the datapath enforce exactly ``programs`` (a full desired state)."""
        changes: dict[str, EndpointProgram | None] = dict(programs)
        for ip in set(self._fingerprints) | set(self.programs):
            if ip not in programs:
                changes[ip] = None
        update = self._update_programs(changes, full=True)
        self._synced = True
        return update

    def update_programs(self, changes: Mapping[str, EndpointProgram | None]) -> DatapathUpdate:
        """Incremental: replace (or with ``None`` remove) some endpoints' programs."""
        return self._update_programs(dict(changes), full=False)

    def _update_programs(
        self, changes: dict[str, EndpointProgram | None], *, full: bool
    ) -> DatapathUpdate:
        update = DatapathUpdate()
        for ip, program in changes.items():
            old = self.programs.get(ip)
            old_fp = self._fingerprints.get(ip)
            if program is None:
                if old is None and old_fp is None:
                    continue
                self.programs.pop(ip, None)
                self._fingerprints.pop(ip, None)
                update.programs[ip] = None
                if old is not None:
                    self._release(old.selectors())
                continue
            fingerprint = program.fingerprint()
            self.programs[ip] = program
            self._fingerprints[ip] = fingerprint
            if old is not None:
                self._release(old.selectors())
            self._retain(program.selectors(), update)
            if old_fp != fingerprint:
                update.programs[ip] = program
        if full or self._synced:
            # Sets no program uses any more (including sets adopted from the kernel; before
            # the first full sync those keep enforcing what the last run compiled).
            update.removed_selectors.extend(
                key for key, count in sorted(self._refcount.items()) if count == 0
            )
        for key in update.removed_selectors:
            self._refcount.pop(key, None)
            self.elements.pop(key, None)
            self._names_by_selector.pop(key, None)
        if update.new_selectors or update.removed_selectors:
            self._rebuild_matcher()
            now = self.clock.now()
            for key in update.new_selectors:
                self._fill_selector(key, update, now)
        if update:
            self.backend.apply(update, self.clock.now())
        return update

    def _retain(self, keys: Iterable[str], update: DatapathUpdate) -> None:
        for key in keys:
            count = self._refcount.get(key, 0)
            self._refcount[key] = count + 1
            if key not in self.elements:
                self.elements[key] = {}
                update.new_selectors.append(key)

    def _release(self, keys: Iterable[str]) -> None:
        # A count that reaches zero is swept at the end of the update, after the new
        # programs retained what they use.
        for key in keys:
            self._refcount[key] = max(self._refcount.get(key, 0) - 1, 0)

    def _rebuild_matcher(self) -> None:
        self._matcher_keys = sorted(self.elements)
        self._matcher = compile_selectors([selector_from_key(k) for k in self._matcher_keys])

    def refill_from_store(self) -> DatapathUpdate:
        """After a restart: index the restored store under every selector set and add
        (or extend) what it holds. Nothing is removed: elements the store does not know
        expire in the kernel by themselves."""
        update = DatapathUpdate()
        now = self.clock.now()
        for key in sorted(self.elements):
            self._fill_selector(key, update, now)
        if update:
            self.backend.apply(update, now)
        return update

    def _fill_selector(self, key: str, update: DatapathUpdate, now: float) -> None:
        """A new selector set gets the IPs of every cached name it matches."""
        single = compile_selectors([selector_from_key(key)])
        names = self._names_by_selector.setdefault(key, set())
        current = self.elements.setdefault(key, {})
        for name, ips in self.store.iter_global():
            if not single.matches(name):
                continue
            names.add(name)
            for ip, expiry in ips.items():
                if expiry > now and expiry > current.get(ip, 0.0):
                    current[ip] = expiry
                    update.elements.append((key, ip, expiry))

    # -- mappings and GC ----------------------------------------------------------

    def on_mapping(self, result: MappingResult) -> DatapathUpdate:
        """A DNS answer was recorded: extend the sets of the selectors matching it."""
        # The hot path (every DNS answer, while the proxy holds the reply): plain loops,
        # no per-call allocations beyond the elements themselves.
        elements: list[tuple[str, str, float]] = []
        if result.changed and self._matcher_keys:
            names = self._names_by_selector
            for index in self._matcher.matching(result.name):
                key = self._matcher_keys[index]
                known = names.get(key)
                if known is None:
                    known = names[key] = set()
                known.add(result.name)
                current = self.elements[key]
                for ip, expiry in result.changed:
                    if expiry > current.get(ip, 0.0):
                        current[ip] = expiry
                        elements.append((key, ip, expiry))
        update = DatapathUpdate(elements=elements)
        if elements:
            self.backend.apply(update, self.clock.now())
        return update

    def on_gc(self, result: GCResult) -> DatapathUpdate:
        """GC changed some names: recompute the sets of the selectors matching them."""
        return self.on_names_changed(result.changed_names)

    def on_names_changed(self, names: Iterable[str]) -> DatapathUpdate:
        """Recompute the sets of the selectors matching ``names``."""
        affected: set[str] = set()
        for name in names:
            for index in self._matcher.matching(name):
                affected.add(self._matcher_keys[index])
        return self.resync_selectors(affected)

    def resync_selectors(self, keys: Iterable[str]) -> DatapathUpdate:
        """Make the given selector sets equal to the store (adds, extends, removals)."""
        update = DatapathUpdate()
        now = self.clock.now()
        for key in sorted(keys):
            names = self._names_by_selector.get(key, set())
            desired: dict[str, float] = {}
            for name in list(names):
                ips = self.store.ips(name)
                if not ips:
                    names.discard(name)
                for ip, expiry in ips.items():
                    if expiry > desired.get(ip, 0.0):
                        desired[ip] = expiry
            current = self.elements.setdefault(key, {})
            for ip in [ip for ip in current if ip not in desired]:
                del current[ip]
                update.removed_elements.append((key, ip))
            for ip, expiry in desired.items():
                if current.get(ip) != expiry:
                    current[ip] = expiry
                    update.elements.append((key, ip, expiry))
        if update:
            self.backend.apply(update, now)
        return update

    def selector_ips(self, key: str) -> Mapping[str, float]:
        """The IPs the datapath holds for a selector."""
        return self.elements.get(key, {})


class EnforcementBackend(Protocol):
    """What the datapath needs from an enforcement backend (nftables, memory)."""

    name: str

    def observe(self) -> ObservedState:
        """What is installed already (it is kept across agent restarts)."""
        ...

    def apply(self, update: DatapathUpdate, now: float) -> None:
        """Apply ``update`` as one atomic transaction; ``now`` turns expiries into timeouts."""
        ...

    def close(self) -> None:
        """Release resources; installed state stays (it outlives the agent)."""
        ...
