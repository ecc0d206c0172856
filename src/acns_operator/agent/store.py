"""The policy-map store: which IPs each name resolved to, for how long, and zombies.

Pure state with an injected clock, following Cilium's ``pkg/fqdn`` DNS cache
(``reference/cilium-semantics.md`` §3.4-3.5, §3.8):

* Per endpoint (pod IP), per name: IP -> expiry, where
  expiry = lookup time + max(TTL, min-TTL). A repeated lookup only ever extends an
  entry. Lookups never return expired entries; GC removes them.
* A node-wide cache (``global``) joins every endpoint's entries, so a toFQDNs selector
  of pod B selects IPs that pod A resolved.
* GC (every minute by default) moves expired entries, and entries over the per-name
  limit (soonest-expiring first), into per-endpoint *zombies*. A zombie stays alive
  while conntrack shows a connection from the endpoint to its IP (plus an idle grace
  period); alive zombies go back into the node-wide cache with a short TTL (120 s).
  A fresh lookup that returns a zombie's IP clears the zombie.
* :meth:`PolicyMapStore.to_state` / :meth:`PolicyMapStore.restore` persist and restore
  it with TTLs honoured: what expired while the agent was down comes back as zombies.

The store knows nothing about selectors or the kernel: callers ask it which IPs a name
has and apply the :class:`MappingResult` / :class:`GCResult` it returns.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from acns_operator.agent.clock import Clock
from acns_operator.errors import InputError

STATE_VERSION = 1


@dataclass(slots=True)
class CacheEntry:
    """One (name, IP) lookup of one endpoint."""

    lookup_time: float
    ttl: int
    expiry: float


@dataclass(slots=True)
class Zombie:
    """An expired IP of one endpoint that may still carry a connection."""

    ip: str
    names: set[str]
    delete_pending_at: float
    alive_at: float


@dataclass(slots=True)
class EndpointCache:
    """The DNS history of one endpoint: name -> IP -> entry, plus its zombies."""

    names: dict[str, dict[str, CacheEntry]] = field(default_factory=dict)
    zombies: dict[str, Zombie] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MappingResult:
    """What one recorded DNS answer changed in the node-wide cache."""

    name: str
    # (ip, expiry) of node-wide entries that are new or now expire later.
    changed: tuple[tuple[str, float], ...]
    new_ips: int


@dataclass(frozen=True, slots=True)
class GCResult:
    """What one GC run did."""

    deleted_names: tuple[str, ...]
    changed_names: tuple[str, ...]
    new_zombies: int
    dead_zombies: int
    evicted_zombies: int


@dataclass(frozen=True, slots=True)
class CacheRow:
    """One line of ``acns fqdn cache list``."""

    endpoint: str
    name: str
    ip: str
    ttl: int
    expiry: float
    lookup_time: float
    source: str  # "lookup" or "zombie"


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Gauges of one endpoint (``cilium_fqdn_active_*``)."""

    active_names: int
    active_ips: int
    alive_zombies: int


class PolicyMapStore:
    """Name -> IP cache per endpoint and node-wide, with TTLs, limits and zombies."""

    def __init__(
        self,
        clock: Clock,
        *,
        min_ttl: int = 0,
        max_ips_per_hostname: int = 1000,
        max_zombies_per_endpoint: int = 10_000,
        idle_grace: float = 0.0,
        zombie_ttl: int = 120,
    ) -> None:
        if max_zombies_per_endpoint < 0:
            raise InputError("max_zombies_per_endpoint must not be negative")
        self._clock = clock
        self.min_ttl = min_ttl
        self.max_ips_per_hostname = max_ips_per_hostname
        self.max_zombies_per_endpoint = max_zombies_per_endpoint
        self.idle_grace = idle_grace
        self.zombie_ttl = zombie_ttl
        self._endpoints: dict[str, EndpointCache] = {}
        # name -> ip -> expiry, the join of every endpoint's entries and alive zombies
        self._global: dict[str, dict[str, float]] = {}
        self.gc_deletions_total = 0

    @property
    def clock(self) -> Clock:
        """The store's clock."""
        return self._clock

    # -- writes -------------------------------------------------------------------

    def record(
        self,
        endpoint: str,
        name: str,
        ips: Sequence[str],
        ttl: int,
        lookup_time: float | None = None,
    ) -> MappingResult:
        """Record one DNS answer of ``endpoint``: ``name`` resolved to ``ips``.

        ``name`` must already be lower-case and dot-terminated and ``ips`` canonical
        textual addresses (the gRPC service checks both).
        """
        when = self._clock.now() if lookup_time is None else lookup_time
        effective_ttl = max(ttl, self.min_ttl)
        expiry = when + effective_ttl
        cache = self._endpoints.get(endpoint)
        if cache is None:
            cache = self._endpoints[endpoint] = EndpointCache()
        entries = cache.names.get(name)
        if entries is None:
            entries = cache.names[name] = {}
        node_wide = self._global.get(name)
        if node_wide is None:
            node_wide = self._global[name] = {}
        changed: list[tuple[str, float]] = []
        new_ips = 0
        zombies = cache.zombies
        for ip in ips:
            entry = entries.get(ip)
            if entry is None:
                entries[ip] = CacheEntry(when, effective_ttl, expiry)
                new_ips += 1
            elif entry.expiry < expiry:
                # Cilium: a new lookup replaces the entry only if it expires later.
                entry.lookup_time, entry.ttl, entry.expiry = when, effective_ttl, expiry
            if zombies:
                zombie = zombies.get(ip)
                # A fresh answer with a zombie's IP clears it (ForceExpireByNameIP).
                if zombie is not None and name in zombie.names:
                    zombie.names.discard(name)
                    if not zombie.names:
                        del zombies[ip]
            previous = node_wide.get(ip)
            if previous is None or previous < expiry:
                node_wide[ip] = expiry
                changed.append((ip, expiry))
        return MappingResult(name=name, changed=tuple(changed), new_ips=new_ips)

    def forget_endpoint(self, endpoint: str) -> tuple[str, ...]:
        """Drop an endpoint that no longer exists; returns the names whose IPs changed."""
        cache = self._endpoints.pop(endpoint, None)
        if cache is None:
            return ()
        affected = set(cache.names)
        for zombie in cache.zombies.values():
            affected |= zombie.names
        return self._rebuild(affected, self._clock.now())[1]

    # -- reads --------------------------------------------------------------------

    def ips(self, name: str) -> dict[str, float]:
        """Node-wide: the unexpired IPs of ``name`` with their expiry."""
        now = self._clock.now()
        return {ip: exp for ip, exp in self._global.get(name, {}).items() if exp > now}

    def names(self) -> list[str]:
        """Node-wide: every name with at least one unexpired IP."""
        now = self._clock.now()
        return sorted(n for n, ips in self._global.items() if any(e > now for e in ips.values()))

    def iter_global(self) -> Iterator[tuple[str, Mapping[str, float]]]:
        """Node-wide entries as stored (expired ones included until GC)."""
        return iter(self._global.items())

    def endpoints(self) -> list[str]:
        """Endpoints with any DNS history or zombie."""
        return sorted(self._endpoints)

    def rows(self, endpoint: str | None = None, name: str | None = None) -> list[CacheRow]:
        """Entries and zombies for inspection, optionally filtered, sorted."""
        now = self._clock.now()
        out: list[CacheRow] = []
        for ep, cache in self._endpoints.items():
            if endpoint is not None and ep != endpoint:
                continue
            for n, entries in cache.names.items():
                if name is not None and n != name:
                    continue
                for ip, entry in entries.items():
                    if entry.expiry > now:
                        out.append(
                            CacheRow(
                                ep, n, ip, entry.ttl, entry.expiry, entry.lookup_time, "lookup"
                            )
                        )
            for zombie in cache.zombies.values():
                for n in sorted(zombie.names):
                    if name is not None and n != name:
                        continue
                    out.append(
                        CacheRow(
                            ep,
                            n,
                            zombie.ip,
                            0,
                            zombie.delete_pending_at,
                            zombie.alive_at,
                            "zombie",
                        )
                    )
        out.sort(key=lambda r: (r.endpoint, r.name, r.source, r.ip))
        return out

    def stats(self) -> dict[str, EndpointStats]:
        """Per endpoint: unexpired names and IPs, and zombies (alive as of the last GC)."""
        now = self._clock.now()
        out: dict[str, EndpointStats] = {}
        for ep, cache in self._endpoints.items():
            names = 0
            ips: set[str] = set()
            for entries in cache.names.values():
                live = [ip for ip, e in entries.items() if e.expiry > now]
                if live:
                    names += 1
                    ips.update(live)
            out[ep] = EndpointStats(names, len(ips), len(cache.zombies))
        return out

    # -- GC -----------------------------------------------------------------------

    def gc(self, live_connections: Collection[tuple[str, str]] = ()) -> GCResult:
        """One GC run. ``live_connections``: (endpoint IP, destination IP) pairs in conntrack."""
        now = self._clock.now()
        affected: set[str] = set()
        new_zombies = dead = evicted = 0
        for ep, cache in self._endpoints.items():
            for zombie in cache.zombies.values():
                affected |= zombie.names
            for name in list(cache.names):
                entries = cache.names[name]
                doomed = [(ip, e.expiry) for ip, e in entries.items() if e.expiry <= now]
                over = len(entries) - len(doomed) - self.max_ips_per_hostname
                if over > 0:
                    alive = [(e.expiry, ip) for ip, e in entries.items() if e.expiry > now]
                    doomed.extend((ip, exp) for exp, ip in heapq.nsmallest(over, alive))
                if not doomed:
                    continue
                affected.add(name)
                for ip, expiry in doomed:
                    del entries[ip]
                    if self.max_zombies_per_endpoint == 0:
                        continue
                    existing = cache.zombies.get(ip)
                    pending = max(expiry, now)
                    if existing is None:
                        cache.zombies[ip] = Zombie(ip, {name}, pending, expiry)
                        new_zombies += 1
                    else:
                        existing.names.add(name)
                        existing.delete_pending_at = max(existing.delete_pending_at, pending)
                if not entries:
                    del cache.names[name]
            d, e = self._collect_zombies_locked(ep, cache, live_connections, now)
            dead += d
            evicted += e
        deleted, changed = self._rebuild(affected, now)
        self.gc_deletions_total += len(deleted)
        for ep in [ep for ep, c in self._endpoints.items() if not c.names and not c.zombies]:
            del self._endpoints[ep]
        return GCResult(deleted, changed, new_zombies, dead, evicted)

    def _collect_zombies_locked(
        self,
        endpoint: str,
        cache: EndpointCache,
        live_connections: Collection[tuple[str, str]],
        now: float,
    ) -> tuple[int, int]:
        """Drop dead zombies and enforce the per-endpoint cap; returns (dead, evicted)."""
        alive: list[Zombie] = []
        maybe_dead: list[Zombie] = []
        for zombie in cache.zombies.values():
            if (endpoint, zombie.ip) in live_connections:
                zombie.alive_at = now
                alive.append(zombie)
            elif now < max(zombie.delete_pending_at, zombie.alive_at) + self.idle_grace:
                alive.append(zombie)
            else:
                maybe_dead.append(zombie)
        # Cilium keeps a zombie whose name still has another alive IP: clients rotate
        # between the addresses of one name.
        alive_names: set[str] = set()
        for zombie in alive:
            alive_names |= zombie.names
        dead = 0
        for zombie in maybe_dead:
            if zombie.names & alive_names:
                alive.append(zombie)
            else:
                del cache.zombies[zombie.ip]
                dead += 1
        evicted = 0
        if len(alive) > self.max_zombies_per_endpoint:
            # Keep the most recently alive; then latest delete-pending; then most names.
            alive.sort(key=lambda z: (-z.alive_at, -z.delete_pending_at, -len(z.names)))
            for zombie in alive[self.max_zombies_per_endpoint :]:
                del cache.zombies[zombie.ip]
                evicted += 1
        return dead, evicted

    def _rebuild(self, names: Iterable[str], now: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Recompute the node-wide entries of ``names``; returns (deleted, changed)."""
        wanted = set(names)
        fresh: dict[str, dict[str, float]] = {name: {} for name in wanted}
        for cache in self._endpoints.values():
            for name in wanted.intersection(cache.names):
                target = fresh[name]
                for ip, entry in cache.names[name].items():
                    if entry.expiry > target.get(ip, 0.0):
                        target[ip] = entry.expiry
            for zombie in cache.zombies.values():
                for name in zombie.names & wanted:
                    target = fresh[name]
                    zombie_expiry = now + self.zombie_ttl
                    if zombie_expiry > target.get(zombie.ip, 0.0):
                        target[zombie.ip] = zombie_expiry
        deleted: list[str] = []
        changed: list[str] = []
        for name in sorted(wanted):
            old = self._global.get(name)
            new = fresh[name]
            if new:
                self._global[name] = new
                if old != new:
                    changed.append(name)
            elif old is not None:
                del self._global[name]
                deleted.append(name)
                changed.append(name)
        return tuple(deleted), tuple(changed)

    # -- persistence --------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (Cilium's DNSHistory + DNSZombies, per endpoint)."""
        endpoints: dict[str, Any] = {}
        for ep, cache in sorted(self._endpoints.items()):
            lookups = [
                [name, ip, e.lookup_time, e.ttl, e.expiry]
                for name, entries in sorted(cache.names.items())
                for ip, e in sorted(entries.items())
            ]
            zombies = [
                [z.ip, sorted(z.names), z.delete_pending_at, z.alive_at]
                for _, z in sorted(cache.zombies.items())
            ]
            endpoints[ep] = {"lookups": lookups, "zombies": zombies}
        return {
            "version": STATE_VERSION,
            "saved_at": self._clock.now(),
            "gc_deletions_total": self.gc_deletions_total,
            "endpoints": endpoints,
        }

    def restore(self, state: Mapping[str, Any]) -> int:
        """Load a snapshot made by :meth:`to_state`, honouring TTLs.

        Entries that expired while the agent was down become zombies; zombies go back
        into the node-wide cache with the zombie TTL until the next GC has looked at
        conntrack. Returns how many entries were loaded.
        """
        if state.get("version") != STATE_VERSION:
            raise InputError(f"unsupported store state version {state.get('version')!r}")
        now = self._clock.now()
        loaded = 0
        try:
            self.gc_deletions_total = int(state.get("gc_deletions_total", 0))
            for ep, data in state["endpoints"].items():
                cache = self._endpoints.setdefault(str(ep), EndpointCache())
                for ip, names, pending, alive_at in data.get("zombies", []):
                    cache.zombies[str(ip)] = Zombie(
                        str(ip), {str(n) for n in names}, float(pending), float(alive_at)
                    )
                    loaded += 1
                for name, ip, lookup_time, ttl, expiry in data.get("lookups", []):
                    loaded += 1
                    entry = CacheEntry(float(lookup_time), int(ttl), float(expiry))
                    cache.names.setdefault(str(name), {})[str(ip)] = entry
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed store state: {exc}") from exc
        self.settle_restored(now)
        return loaded

    def settle_restored(self, now: float | None = None) -> None:
        """After a restore or journal replay: expired entries -> zombies, rebuild the cache."""
        when = self._clock.now() if now is None else now
        affected: set[str] = set()
        for cache in self._endpoints.values():
            for name in list(cache.names):
                entries = cache.names[name]
                for ip in [ip for ip, e in entries.items() if e.expiry <= when]:
                    expiry = entries.pop(ip).expiry
                    if self.max_zombies_per_endpoint:
                        zombie = cache.zombies.setdefault(ip, Zombie(ip, set(), expiry, when))
                        zombie.names.add(name)
                        # Liveness is unknown until GC reads conntrack: alive until then.
                        zombie.alive_at = when
                if not entries:
                    del cache.names[name]
                affected.add(name)
            for zombie in cache.zombies.values():
                affected |= zombie.names
        self._global.clear()
        self._rebuild(affected, when)
