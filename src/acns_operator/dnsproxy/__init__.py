"""The per-node DNS proxy (``acns dnsproxy``): filter queries by policy, learn IPs.

It runs as its own DaemonSet, apart from the agent, so DNS keeps working while the
agent is down or upgrading (Cilium's standalone DNS proxy, ``reference/
cilium-semantics.md`` §3-§4)::

    agent ──StreamPolicyState (full snapshots, acked)──► agent_link ──► rules.compile_snapshot
      ▲                                                      │            (persisted, atomic)
      └──UpdateMapping (one per answer with IPs) ◄── hold ≤ max delay ◄─┐
                                                                        │
    pod ──TPROXY──► server.UdpListener / TcpListener                    │
                      wire.parse_query ─► decision.decide ─► upstream ──┤
                      (drop | FORMERR)    (REFUSED | SERVFAIL)          │
                                                           wire.scan_answer (A/AAAA → qname,
                                                                         min TTL over CNAMEs)
    pod ◄── reply (client ID and case kept, from the original destination) ◄┘

Modules, one concern each:

* :mod:`~acns_operator.dnsproxy.wire` - sans-IO wire format (parse, scan, own replies).
* :mod:`~acns_operator.dnsproxy.rules` - snapshot file format, compiled per-endpoint rules.
* :mod:`~acns_operator.dnsproxy.decision` - the pure allow/deny/unknown decision.
* :mod:`~acns_operator.dnsproxy.upstream` - UDP socket pool and TCP forwarding.
* :mod:`~acns_operator.dnsproxy.server` - listeners and the per-query pipeline.
* :mod:`~acns_operator.dnsproxy.agent_link` - gRPC client: snapshots, mappings, queue.
* :mod:`~acns_operator.dnsproxy.metrics` - Cilium/Hubble-named Prometheus metrics.
* :mod:`~acns_operator.dnsproxy.app` - wiring, start, graceful stop.
* :mod:`~acns_operator.dnsproxy.testing` - loopback dnsmasq, proxy process, DNS client.
"""
