"""The operator's Prometheus metrics, registered on an injected CollectorRegistry.

The policy gauge mirrors the operator's view of the cluster, so it is computed at
scrape time from the :class:`~acns_operator.operator.reconciler.PolicyStore` rather
than kept up to date by hand (both replicas report it; only the leader writes).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from acns_operator.operator.judgement import VerdictName

# Admission is on the API server's request path with a 10 s budget; most answers
# take a millisecond or two, so resolution matters at the low end.
ADMISSION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

PolicyCounts = Callable[[], Iterable[tuple[str, str, "VerdictName"]]]
"""Yields (kind, namespace, verdict) for every policy the operator knows."""


class PolicyCollector(Collector):
    """``acns_policies{kind,namespace,verdict}``: policies the operator sees, by verdict."""

    def __init__(self, policies: PolicyCounts) -> None:
        self._policies = policies

    def collect(self) -> Iterator[Metric]:
        """Count the store's policies now."""
        family = GaugeMetricFamily(
            "acns_policies",
            "CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies by verdict of the "
            "AKS profile (blocked ones are not enforced).",
            labels=["kind", "namespace", "verdict"],
        )
        for (kind, namespace, verdict), count in sorted(Tally(self._policies()).items()):
            family.add_metric([kind, namespace, verdict], count)
        yield family


class OperatorMetrics:
    """Every metric the operator exports, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.admission_requests = Counter(
            "acns_admission_requests",
            "Admission reviews answered, by kind, operation and verdict "
            "(admitted, warned, denied, error).",
            ["kind", "operation", "verdict"],
            registry=registry,
        )
        self.admission_duration = Histogram(
            "acns_admission_duration_seconds",
            "Time to answer one admission review, from request received to response ready.",
            ["kind"],
            buckets=ADMISSION_BUCKETS,
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "acns_reconcile_errors",
            "Failed attempts to write a policy's status or Event, by kind and error.",
            ["kind", "error"],
            registry=registry,
        )
        self.status_writes = Counter(
            "acns_status_writes",
            "Writes of a policy's Valid condition through the status subresource.",
            ["kind"],
            registry=registry,
        )
        self.events_posted = Counter(
            "acns_events_posted",
            "Warning Events posted about blocked policies.",
            ["kind"],
            registry=registry,
        )
        self.reconcile_queue = Gauge(
            "acns_reconcile_queue_depth",
            "Policies waiting for their status to be reconciled.",
            registry=registry,
        )
        self.leader = Gauge(
            "acns_operator_leader",
            "1 while this replica holds the leader Lease and writes status, else 0.",
            registry=registry,
        )
        self.webhook_certificate_expiry = Gauge(
            "acns_webhook_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires (Unix time).",
            registry=registry,
        )

    def watch_policies(self, policies: PolicyCounts) -> None:
        """Export the policy gauge computed from ``policies`` at each scrape."""
        self.registry.register(PolicyCollector(policies))
