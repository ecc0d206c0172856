"""Prometheus metrics of the agent, named as Cilium names them (cilium-semantics §6.1).

* ``cilium_fqdn_gc_deletions_total`` - names removed from the cache by DNS GC.
* ``cilium_fqdn_active_names{endpoint}``, ``cilium_fqdn_active_ips{endpoint}``,
  ``cilium_fqdn_alive_zombie_connections{endpoint}`` - per endpoint, read from the
  store at scrape time (``endpoint`` is the pod IP; bounded by the pods of one node).
* ``cilium_fqdn_selectors`` - toFQDNs selectors registered in the datapath.

Our own, under ``acns_agent_``: the time to apply one mapping (store + backend, what
the proxy waits for), mappings by result, datapath transactions, compile duration, and
the snapshot revision acked by the proxies.

Gauges mirroring state come from a collector that reads the store when scraped; the
registry is injected (tests use a fresh one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from acns_operator.agent.datapath import Datapath
from acns_operator.agent.fqdn_service import SnapshotHub
from acns_operator.agent.store import PolicyMapStore

APPLY_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1)


class _StoreCollector(Collector):
    def __init__(
        self,
        store: PolicyMapStore,
        datapath: Callable[[], Datapath | None],
        hub: Callable[[], SnapshotHub | None],
    ) -> None:
        self._store = store
        self._datapath = datapath
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        deletions = CounterMetricFamily(
            "cilium_fqdn_gc_deletions", "Number of FQDNs that have been cleaned on FQDN GC"
        )
        deletions.add_metric([], self._store.gc_deletions_total)
        yield deletions
        names = GaugeMetricFamily(
            "cilium_fqdn_active_names",
            "Number of domains inside the DNS cache",
            labels=["endpoint"],
        )
        ips = GaugeMetricFamily(
            "cilium_fqdn_active_ips", "Number of IPs inside the DNS cache", labels=["endpoint"]
        )
        zombies = GaugeMetricFamily(
            "cilium_fqdn_alive_zombie_connections",
            "Number of IPs associated with domains that have expired but are kept alive",
            labels=["endpoint"],
        )
        for endpoint, stats in sorted(self._store.stats().items()):
            names.add_metric([endpoint], stats.active_names)
            ips.add_metric([endpoint], stats.active_ips)
            zombies.add_metric([endpoint], stats.alive_zombies)
        yield names
        yield ips
        yield zombies
        datapath = self._datapath()
        selectors = GaugeMetricFamily(
            "cilium_fqdn_selectors", "Number of registered ToFQDN selectors"
        )
        selectors.add_metric([], len(datapath.elements) if datapath is not None else 0)
        yield selectors
        hub = self._hub()
        if hub is not None:
            revision = GaugeMetricFamily(
                "acns_agent_snapshot_revision",
                "Revision of the DNS-rule snapshot",
                labels=["state"],
            )
            revision.add_metric(["published"], hub.revision)
            acked = min((s.acked_revision for s in hub.streams), default=0)
            revision.add_metric(["acked"], acked)
            yield revision
            proxies = GaugeMetricFamily(
                "acns_agent_proxy_streams", "DNS proxies connected to the agent"
            )
            proxies.add_metric([], len(hub.streams))
            yield proxies


class AgentMetrics:
    """The agent's metrics, registered in ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        store: PolicyMapStore,
        *,
        datapath: Callable[[], Datapath | None] = lambda: None,
        hub: Callable[[], SnapshotHub | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.mapping_apply_seconds = Histogram(
            "acns_agent_mapping_apply_seconds",
            "Time to apply one DNS mapping to the store and the enforcement backend",
            registry=registry,
            buckets=APPLY_BUCKETS,
        )
        self.mappings = Counter(
            "acns_agent_mappings",
            "DNS mappings received from the proxy, by result",
            ["result"],
            registry=registry,
        )
        self.compile_seconds = Histogram(
            "acns_agent_compile_seconds",
            "Time to compile endpoint programs after a change",
            ["kind"],
            registry=registry,
        )
        self.datapath_errors = Counter(
            "acns_agent_datapath_errors",
            "Enforcement backend transactions that failed",
            registry=registry,
        )
        registry.register(_StoreCollector(store, datapath, hub))
