"""Prometheus metrics of the DNS proxy, with Cilium's and Hubble's names and labels.

Where a metric means what a Cilium or Hubble metric means it has that name, so existing
dashboards (Grafana 20926 among them) work unchanged (``reference/cilium-semantics.md``
§6):

* ``cilium_policy_l7_total{rule, proxy_type="fqdn"}`` - rule is received, forwarded,
  denied or parse_errors.
* ``cilium_proxy_upstream_reply_seconds{error, protocol_l7="dns", scope}`` - error is
  allow, denied, timeout or proxyErr; scope is totalTime, upstreamTime,
  policyCheckTime or dataplaneTime (the hold while the agent applies a mapping).
* ``cilium_proxy_datapath_update_timeout_total`` - the hold hit the max delay.
* ``hubble_dns_queries_total{rcode, qtypes, ips_returned}`` - rcode is "" or
  "Policy denied", as Hubble counts dropped queries.
* ``hubble_dns_responses_total{rcode, qtypes, ips_returned}`` - rcode in Hubble's
  text form ("No Error", "Query Refused", …); ips_returned is the count, "10+" above
  ten so that the label stays bounded.

Our own, under ``acns_dnsproxy_``: mapping queue depth and drops, pushes by result,
replays, agent connection state, snapshot revision and endpoints, suppressed denial
logs. No label ever carries a query name.

The hot path must stay within a few microseconds per query, and prometheus-client's
labelled children take a lock and cost about a microsecond per call. So the proxy
counts in plain dicts and lists, mutated only on the event-loop thread, and this
collector turns them into metric families at scrape time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from acns_operator.dnsproxy import wire

# Hubble's text rcodes (miekg/dns RcodeToString).
HUBBLE_RCODES: dict[int, str] = {
    wire.NOERROR: "No Error",
    wire.FORMERR: "Format Error",
    wire.SERVFAIL: "Server Failure",
    wire.NXDOMAIN: "Non-Existent Domain",
    wire.NOTIMP: "Not Implemented",
    wire.REFUSED: "Query Refused",
}
POLICY_DENIED = "Policy denied"

# Seconds; a DNS answer through the proxy is sub-millisecond to seconds.
BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

RULES = ("received", "forwarded", "denied", "parse_errors")


def rcode_label(rcode: int) -> str:
    """Hubble's text for an rcode (the number for unusual ones)."""
    return HUBBLE_RCODES.get(rcode, str(rcode))


def ips_label(count: int) -> str:
    """The bounded ``ips_returned`` label."""
    return str(count) if count <= 10 else "10+"


class _Histogram:
    """Cumulative-at-scrape histogram keyed by a label tuple."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], seconds: float) -> None:
        row = self.series.get(key)
        if row is None:
            # bucket counts, then +Inf count, then sum
            row = self.series[key] = [0.0] * (len(BUCKETS) + 2)
        row[bisect.bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds


class ProxyMetrics(Collector):
    """All the proxy's metrics; register on an injected registry.

    ``queue_depth``, ``agent_connected``, ``snapshot_revision`` and ``endpoints`` are
    read at scrape time from the objects that own that state.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.l7: dict[str, int] = dict.fromkeys(RULES, 0)
        self.queries: dict[tuple[str, str, str], int] = {}
        self.responses: dict[tuple[str, str, str], int] = {}
        self.reply_seconds = _Histogram()
        self.datapath_update_timeouts = 0
        self.mapping_pushes: dict[str, int] = {}
        self.mappings_dropped = 0
        self.mappings_replayed = 0
        self.denied_logs_suppressed = 0
        self.upstream_stray_replies = 0
        self.queue_depth: Callable[[], int] = lambda: 0
        self.agent_connected: Callable[[], bool] = lambda: False
        self.snapshot_revision: Callable[[], int] = lambda: 0
        self.endpoints: Callable[[], int] = lambda: 0
        if registry is not None:
            registry.register(self)

    # ------------------------------------------------------------- hot path

    def rule(self, name: str) -> None:
        """Count one ``cilium_policy_l7_total`` event."""
        self.l7[name] += 1

    def query(self, qtypes: str, rcode: str = "") -> None:
        """Count a query (``rcode`` is "" or :data:`POLICY_DENIED`)."""
        key = (rcode, qtypes, "0")
        self.queries[key] = self.queries.get(key, 0) + 1

    def response(self, rcode: int, qtypes: str, ips: int) -> None:
        """Count a response sent to a client."""
        key = (rcode_label(rcode), qtypes, ips_label(ips))
        self.responses[key] = self.responses.get(key, 0) + 1

    def observe(self, error: str, scope: str, seconds: float) -> None:
        """Observe one ``cilium_proxy_upstream_reply_seconds`` sample."""
        self.reply_seconds.observe((error, scope), seconds)

    def push(self, result: str) -> None:
        """Count a mapping push by result (acked, skipped, failed, queued, error)."""
        self.mapping_pushes[result] = self.mapping_pushes.get(result, 0) + 1

    # ------------------------------------------------------------- scrape

    def collect(self) -> Iterator[Metric]:
        """Build the metric families (called by the registry at scrape time)."""
        l7 = CounterMetricFamily(
            "cilium_policy_l7_total",
            "L7 DNS requests by policy outcome.",
            labels=["rule", "proxy_type"],
        )
        for name, value in self.l7.items():
            l7.add_metric([name, "fqdn"], value)
        yield l7

        hist = HistogramMetricFamily(
            "cilium_proxy_upstream_reply_seconds",
            "Seconds spent in each stage of answering a DNS query through the proxy.",
            labels=["error", "protocol_l7", "scope"],
        )
        for (error, scope), row in sorted(self.reply_seconds.series.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(BUCKETS, row, strict=False):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            cumulative += row[len(BUCKETS)]
            buckets.append(("+Inf", cumulative))
            hist.add_metric([error, "dns", scope], buckets, row[-1])
        yield hist

        timeouts = CounterMetricFamily(
            "cilium_proxy_datapath_update_timeout_total",
            "Replies released because the agent did not apply the mapping within the max delay.",
        )
        timeouts.add_metric([], self.datapath_update_timeouts)
        yield timeouts

        for name, doc, series in (
            ("hubble_dns_queries_total", "DNS queries observed.", self.queries),
            ("hubble_dns_responses_total", "DNS responses sent to clients.", self.responses),
        ):
            family = CounterMetricFamily(name, doc, labels=["rcode", "qtypes", "ips_returned"])
            for key, value in sorted(series.items()):
                family.add_metric(list(key), value)
            yield family

        pushes = CounterMetricFamily(
            "acns_dnsproxy_mapping_pushes_total",
            "Mappings by outcome: acked, skipped (agent already has it), failed, queued.",
            labels=["result"],
        )
        for result, value in sorted(self.mapping_pushes.items()):
            pushes.add_metric([result], value)
        yield pushes

        for name, doc, value in (
            (
                "acns_dnsproxy_mapping_queue_dropped_total",
                "Queued mappings dropped because the queue was full (oldest first).",
                self.mappings_dropped,
            ),
            (
                "acns_dnsproxy_mappings_replayed_total",
                "Queued mappings replayed to the agent after it came back.",
                self.mappings_replayed,
            ),
            (
                "acns_dnsproxy_denied_logs_suppressed_total",
                "Denied-query log lines not written because of the rate limit.",
                self.denied_logs_suppressed,
            ),
            (
                "acns_dnsproxy_upstream_stray_replies_total",
                "Upstream replies discarded: unknown ID, wrong server or wrong question.",
                self.upstream_stray_replies,
            ),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter

        for name, doc, gauge_value in (
            (
                "acns_dnsproxy_mapping_queue_depth",
                "Mappings waiting for the agent to come back.",
                float(self.queue_depth()),
            ),
            (
                "acns_dnsproxy_agent_connected",
                "1 while the snapshot stream to the agent is up.",
                1.0 if self.agent_connected() else 0.0,
            ),
            (
                "acns_dnsproxy_snapshot_revision",
                "Revision of the rule snapshot in force.",
                float(self.snapshot_revision()),
            ),
            (
                "acns_dnsproxy_endpoints",
                "Endpoints with DNS rules in the snapshot in force.",
                float(self.endpoints()),
            ),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], gauge_value)
            yield gauge
