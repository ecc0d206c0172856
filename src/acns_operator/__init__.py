"""acns-operator: ACNS-style FQDN egress filtering for Kubernetes.

Data flow, one module per step::

    CiliumNetworkPolicy (YAML/JSON, API object)
      -> api          pydantic models of the cilium.io/v2 surface, CRD generation
      -> policy       AKS-profile validation (verdict + findings), compilation to
                      per-endpoint rules
      -> fqdn         name normalisation and matchName/matchPattern matching (pure)
      -> dnsproxy     DNS decision per query, forwarding, FQDN->IP mapping push
      -> agent        endpoints, policy-map store (TTL, zombies, GC), enforcement
                      backends (nftables | memory), inspection API, metrics
      -> operator     admission webhook, status conditions, Events (kopf)

`operator`, `agent` and `dnsproxy` never import each other; all three build on the
pure layers `api`, `fqdn` and `policy`.
"""

__version__ = "0.1.0"
