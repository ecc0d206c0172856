"""The node agent: endpoint rules, the policy-map store, enforcement, the proxy link.

One concern per module, joined by objects passed in at construction::

    kube (list+watch) ─► app.Agent ─► policy.compile.Compiler (incremental, pure)
                            │             │ EndpointRules per local endpoint
                            │             ▼
                            │        programs.to_program / to_endpoint_policy
                            │             │                    │
                            ▼             ▼                    ▼
    fqdn_service (gRPC) ─► mapping ─► datapath.Datapath    SnapshotHub ─► dns-proxy
      UpdateMapping          │          │ diffs, one transaction each
                             ▼          ▼
                   store.PolicyMapStore  backends: nftables (kernel) | memory
                   (TTL, zombies, GC)    conntrack liveness for zombies
                   persistence (state.json + journal)
                             │
                   inspect (HTTP JSON, /metrics) ◄── acns fqdn cache list, acns explain

Time comes from :mod:`.clock`; nothing reads settings at import time. The agent never
imports the operator or the DNS proxy (import-linter contract).
"""
