"""Every setting of every program, in one typed place.

Each program reads its own class from the environment (prefix ``ACNS_``), from
command-line options that override fields, or from code that builds the object and
passes it down explicitly. Nothing reads settings at import time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PolicySettings(BaseSettings):
    """How policies are judged: the AKS profile and the cluster facts it needs.

    Shared by ``acns lint``, the operator and the agent, which must agree exactly.
    """

    model_config = SettingsConfigDict(env_prefix="ACNS_", extra="forbid")

    cluster_domain: str = Field(
        default="cluster.local",
        description=(
            "The cluster DNS domain. toFQDNs names under it are Kubernetes service names, "
            "which AKS does not support as FQDN selectors."
        ),
    )
    node_local_dns_addresses: list[str] = Field(
        default_factory=lambda: ["169.254.20.10"],
        description=(
            "Addresses of node-local DNS caches. A DNS rule whose peer is one of them is "
            "blocked: FQDN filtering does not work with node-local DNS on AKS."
        ),
    )
    node_local_dns_labels: dict[str, str] = Field(
        default_factory=lambda: {"k8s-app": "node-local-dns"},
        description=(
            "Pod labels that identify node-local DNS pods. A DNS rule whose toEndpoints "
            "selector requires these labels is blocked."
        ),
    )
    allow_multilevel_prefix: bool = Field(
        default=True,
        description=(
            "Accept the leading '**.' multi-label wildcard (Cilium >= 1.19) with a warning. "
            "When false it is blocked, for clusters on older Cilium where '**.' means '*.'."
        ),
    )


class AgentSettings(BaseSettings):
    """The node agent (``acns agent``): endpoints, policy-map store, enforcement.

    Every FQDN knob defaults to upstream Cilium's value
    (``reference/cilium-semantics.md`` §3.1, §3.4, §3.5).
    """

    model_config = SettingsConfigDict(env_prefix="ACNS_AGENT_", extra="forbid")

    node_name: str = Field(
        default="",
        description="Name of the node this agent serves (spec.nodeName of its local pods).",
    )
    kubeconfig: str | None = Field(
        default=None,
        description=(
            "Path of a kubeconfig. Unset: the in-cluster service-account token, or "
            "$KUBECONFIG when the agent does not run in a pod."
        ),
    )
    backend: Literal["auto", "nftables", "memory"] = Field(
        default="auto",
        description=(
            "Enforcement backend: 'nftables' filters in the kernel (needs NET_ADMIN); "
            "'memory' keeps the same state in process only (no enforcement); 'auto' is "
            "nftables when it can be used, else memory with a warning."
        ),
    )
    netns: str | None = Field(
        default=None,
        description=(
            "Named network namespace (/run/netns/NAME) whose nftables, routes and "
            "conntrack the agent manages. Unset: the agent's own namespace (the host "
            "network of a DaemonSet pod)."
        ),
    )
    nft_table: str = Field(
        default="acns_agent",
        description="The one nftables table (family inet) owned by the agent.",
    )
    tproxy_mark: int = Field(
        default=0x200,
        description=(
            "Firewall mark set on DNS packets redirected to the proxy with TPROXY "
            "(Cilium's MARK_MAGIC_TO_PROXY); `ip rule fwmark MARK/MASK lookup TABLE`."
        ),
    )
    tproxy_mark_mask: int = Field(
        default=0xF00,
        description="Mask applied to the firewall mark in the policy-routing rule.",
    )
    tproxy_route_table: int = Field(
        default=2004,
        description=(
            "Routing table holding `local 0.0.0.0/0 dev lo`, so marked packets are "
            "delivered to the proxy's transparent socket (Cilium's table 2004)."
        ),
    )
    tproxy_rule_priority: int = Field(
        default=9,
        description="Priority of the fwmark policy-routing rule (before the main table).",
    )
    proxy_port: int = Field(
        default=10094,
        description="Port of the DNS proxy on the node that DNS is redirected to (UDP and TCP).",
    )
    proxy_address: str = Field(
        default="",
        description=(
            "Address the TPROXY redirect delivers to; empty means the address of the "
            "interface the packet came in on (the proxy listens on the wildcard address)."
        ),
    )
    deny_action: Literal["drop", "reject"] = Field(
        default="drop",
        description="What happens to denied egress packets: 'drop' (like Cilium) or 'reject'.",
    )
    grpc_socket: str = Field(
        default="/var/run/acns/agent.sock",
        description="Unix socket on which the agent serves the FQDNData gRPC service.",
    )
    grpc_tcp_port: int | None = Field(
        default=None,
        description="Also serve FQDNData on 127.0.0.1:PORT (Cilium's SDP uses 10095).",
    )
    snapshot_min_interval: float = Field(
        default=1.0,
        description="Minimum seconds between two DNS-rule snapshots pushed to the proxy.",
    )
    state_dir: str = Field(
        default="/var/lib/acns/agent",
        description=(
            "Where the policy-map store is persisted (state.json written atomically, "
            "plus an append-only journal of mappings since the last snapshot)."
        ),
    )
    state_compact_interval: float = Field(
        default=30.0,
        description="Seconds between rewrites of state.json (the journal covers the gap).",
    )
    min_ttl: int = Field(
        default=0,
        description="tofqdns-min-ttl: lower bound in seconds on the TTL of learned IPs.",
    )
    max_ips_per_hostname: int = Field(
        default=1000,
        description=(
            "tofqdns-endpoint-max-ip-per-hostname: IPs kept per name per endpoint; on GC "
            "the soonest-expiring are evicted (and become zombies)."
        ),
    )
    max_deferred_connection_deletes: int = Field(
        default=10000,
        ge=0,
        description=(
            "tofqdns-max-deferred-connection-deletes: alive zombies kept per endpoint; "
            "0 disables zombies."
        ),
    )
    idle_connection_grace_period: float = Field(
        default=0.0,
        description=(
            "tofqdns-idle-connection-grace-period: seconds an expired IP stays allowed "
            "after its last connection went idle."
        ),
    )
    gc_interval: float = Field(
        default=60.0,
        description="Seconds between DNS garbage collections (Cilium: 1 min).",
    )
    zombie_ttl: int = Field(
        default=120,
        description="TTL in seconds with which alive zombies are put back in the cache.",
    )
    conntrack: Literal["auto", "proc", "tool", "none"] = Field(
        default="auto",
        description=(
            "How zombie liveness is read: /proc/net/nf_conntrack ('proc'), the "
            "`conntrack -L` tool ('tool'), whichever works ('auto'), or not at all."
        ),
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address of the local inspection API and /metrics.",
    )
    http_port: int = Field(
        default=9962,
        description="Port of the local inspection API and /metrics (Cilium agent's 9962).",
    )
    kube_backoff_max: float = Field(
        default=30.0,
        description="Longest wait in seconds between reconnects of a failed watch.",
    )


class OperatorSettings(BaseSettings):
    """How ``acns operator`` connects, serves its admission webhook, elects a leader
    and writes policy status.

    Built once (from the environment, prefix ``ACNS_OPERATOR_``, then command-line
    options) and passed down explicitly; the kopf settings are derived from it.
    Durations are in seconds.
    """

    model_config = SettingsConfigDict(env_prefix="ACNS_OPERATOR_", extra="forbid")

    kubeconfig: str | None = Field(
        default=None,
        description=(
            "Kubeconfig file to connect with. Unset: the in-cluster service account when "
            "running in a pod, else $KUBECONFIG or ~/.kube/config."
        ),
    )
    context: str | None = Field(
        default=None,
        description="Kubeconfig context to use (default: the file's current-context).",
    )
    namespaces: list[str] = Field(
        default_factory=list,
        description=(
            "Namespaces whose CiliumNetworkPolicies are watched and admitted; empty means "
            "all. CiliumClusterwideNetworkPolicies are cluster-scoped and always watched."
        ),
    )
    operator_namespace: str = Field(
        default="acns-system",
        description=(
            "Namespace holding the operator's own objects: the leader-election Lease and "
            "the webhook TLS Secret."
        ),
    )
    identity: str | None = Field(
        default=None,
        description=(
            "This replica's identity in the leader-election Lease (default: host name "
            "plus a random suffix)."
        ),
    )
    webhook_enabled: bool = Field(
        default=True,
        description="Serve the validating admission webhook.",
    )
    webhook_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - a pod must accept the API server's connections
        description=(
            "Address the webhook listens on. When neither webhook_url nor "
            "webhook_service_name is set it is also the host registered in the "
            "ValidatingWebhookConfiguration (so it must then be a reachable address)."
        ),
    )
    webhook_port: int = Field(
        default=9443,
        ge=1,
        le=65535,
        description="TCP port the webhook listens on (HTTPS).",
    )
    webhook_url: str | None = Field(
        default=None,
        description=(
            "URL registered for the API server to call (e.g. https://127.0.0.1:9443) "
            "when it differs from https://webhook_host:webhook_port."
        ),
    )
    webhook_service_name: str | None = Field(
        default=None,
        description=(
            "In-cluster: register the webhook as this Service in operator_namespace "
            "instead of a URL (what the Helm chart does)."
        ),
    )
    webhook_service_port: int = Field(
        default=443,
        ge=1,
        le=65535,
        description="Port of webhook_service_name.",
    )
    webhook_register: bool = Field(
        default=True,
        description=(
            "Create or update the ValidatingWebhookConfiguration at start-up and whenever "
            "the CA changes. Turn off when it is managed elsewhere."
        ),
    )
    webhook_unregister_on_exit: bool = Field(
        default=False,
        description=(
            "Delete the ValidatingWebhookConfiguration on exit. Off by default: with two "
            "replicas one stopping must not switch admission off for the other. Useful "
            "for local runs."
        ),
    )
    webhook_configuration_name: str = Field(
        default="acns-operator",
        description="Name of the ValidatingWebhookConfiguration the operator manages.",
    )
    failure_policy: Literal["Fail", "Ignore"] = Field(
        default="Fail",
        description=(
            "What the API server does when the webhook cannot be reached: 'Fail' rejects "
            "the write (blocked policies never get in), 'Ignore' admits it (status and "
            "Events still flag it)."
        ),
    )
    webhook_timeout: int = Field(
        default=10,
        ge=1,
        le=30,
        description="timeoutSeconds of the webhook (the API server allows 1-30).",
    )
    tls_source: Literal["generate", "secret"] = Field(
        default="generate",
        description=(
            "'generate': the operator keeps its own CA and serving certificate in "
            "tls_secret_name, shared by all replicas and renewed before expiry. 'secret': "
            "read tls.crt, tls.key and ca.crt from tls_secret_name (e.g. written by "
            "cert-manager) and never write it."
        ),
    )
    tls_secret_name: str = Field(
        default="acns-operator-webhook-tls",
        description="Secret in operator_namespace holding the webhook's TLS material.",
    )
    tls_certificate_validity: float = Field(
        default=365 * 86400.0,
        gt=0,
        description="Lifetime of a generated serving certificate.",
    )
    tls_ca_validity: float = Field(
        default=10 * 365 * 86400.0,
        gt=0,
        description="Lifetime of a generated CA.",
    )
    tls_renew_before: float = Field(
        default=30 * 86400.0,
        gt=0,
        description=(
            "Generated certificates (and the CA) are replaced this long before they "
            "expire; the previous CA stays in the caBundle until it expires."
        ),
    )
    tls_check_interval: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How often the TLS Secret is re-read (rotation, cert-manager renewals) and the "
            "ValidatingWebhookConfiguration checked (and restored if it was changed)."
        ),
    )
    health_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - kubelet probes and Prometheus scrape the pod IP
        description="Address of the plain-HTTP /healthz, /readyz and /metrics server.",
    )
    health_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="Port of /healthz, /readyz and /metrics (0: pick a free port).",
    )
    leader_election: bool = Field(
        default=True,
        description=(
            "Elect one status writer through a coordination.k8s.io Lease; off means this "
            "replica always writes (single-replica and local runs)."
        ),
    )
    lease_name: str = Field(
        default="acns-operator",
        description="Name of the leader-election Lease in operator_namespace.",
    )
    lease_duration: float = Field(
        default=15.0,
        gt=0,
        description="How long a Lease holds without renewal before others may take it.",
    )
    lease_renew_deadline: float = Field(
        default=10.0,
        gt=0,
        description="The leader steps down if it could not renew for this long.",
    )
    lease_retry_period: float = Field(
        default=2.0,
        gt=0,
        description="Interval between attempts to acquire or renew the Lease.",
    )
    reconcile_backoff: float = Field(
        default=1.0,
        gt=0,
        description="First delay before retrying a failed status write; doubles each time.",
    )
    reconcile_backoff_max: float = Field(
        default=60.0,
        gt=0,
        description="Longest delay between retries of a failed status write.",
    )
    event_component: str = Field(
        default="acns-operator",
        description="source.component / reportingController of the Events it posts.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Log level of the operator and of kopf.",
    )
    policy: PolicySettings = Field(
        default_factory=PolicySettings,
        description="How policies are judged; the same settings the agents use.",
    )


class DnsProxySettings(BaseSettings):
    """The DNS proxy (``acns dnsproxy``): listeners, upstreams, agent link, metrics.

    FQDN knobs default to upstream Cilium's values (``reference/cilium-semantics.md``
    §3.1): REFUSED for denied queries, a 100 ms hold while the agent applies a mapping,
    no reply on an upstream timeout of 10 s.
    """

    model_config = SettingsConfigDict(env_prefix="ACNS_DNSPROXY_", extra="forbid")

    listen_address: str = Field(
        default="0.0.0.0",  # noqa: S104 - TPROXY delivers to the interface address
        description=(
            "Address the UDP and TCP listeners bind. The wildcard lets TPROXY deliver to "
            "the address of the interface a pod's packet came in on."
        ),
    )
    port: int = Field(
        default=10094,
        ge=1,
        le=65535,
        description="Port of the UDP and TCP listeners (the agent's redirect target).",
    )
    enable_tcp: bool = Field(default=True, description="Also serve DNS over TCP.")
    transparent: bool = Field(
        default=True,
        description=(
            "Set IP_TRANSPARENT on the listeners and read each query's original "
            "destination, as TPROXY requires (needs CAP_NET_ADMIN). Off: only direct "
            "queries to the listener, forwarded to `upstream` (benchmarks, debugging)."
        ),
    )
    upstream: str | None = Field(
        default=None,
        description=(
            "HOST:PORT every query is forwarded to. Unset: a redirected query goes to its "
            "original destination (the cluster DNS Service), and a query sent straight "
            "to the listener gets SERVFAIL."
        ),
    )
    upstream_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds to wait for the upstream reply. On expiry no reply is sent and the "
            "client times out, as Cilium does (error='timeout' in the metric)."
        ),
    )
    upstream_udp_sockets: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Long-lived UDP sockets (random source ports) shared by all upstream queries.",
    )
    max_inflight: int = Field(
        default=50_000,
        ge=1,
        description=(
            "Upstream queries in flight at most; past it a query gets SERVFAIL "
            "(Cilium's dnsproxy-concurrency-limit behaviour)."
        ),
    )
    reject_response_code: Literal["refused", "nameError"] = Field(
        default="refused",
        description=(
            "Reply code for policy-denied queries: 'refused' (REFUSED) or 'nameError' "
            "(NXDOMAIN), Cilium's tofqdns-dns-reject-response-code."
        ),
    )
    search_suffix_help: bool = Field(
        default=False,
        description=(
            "Musl/Alpine help: let an allowed name followed by one of the pod's search "
            "suffixes through to the resolver (it answers NXDOMAIN and musl walks on) "
            "instead of REFUSED, which makes musl give up."
        ),
    )
    agent_address: str | None = Field(
        default="unix:///var/run/acns/agent.sock",
        description=(
            "gRPC target of the agent's FQDNData service (unix:///PATH or HOST:PORT on "
            "loopback). Unset: standalone, rules only from `rules_file`."
        ),
    )
    rules_file: str = Field(
        default="/var/lib/acns/dnsproxy/snapshot.json",
        description=(
            "The persisted rule snapshot: loaded at start, rewritten atomically after "
            "every snapshot from the agent. In standalone mode, the rules to enforce."
        ),
    )
    proxy_response_max_delay: float = Field(
        default=0.1,
        ge=0,
        description=(
            "Seconds a reply is held while the agent applies its mapping "
            "(Cilium's tofqdns-proxy-response-max-delay)."
        ),
    )
    mapping_queue_size: int = Field(
        default=10_000,
        ge=1,
        description=(
            "Mappings kept for replay while the agent is unreachable; when full the "
            "oldest is dropped (newest kept) and counted."
        ),
    )
    mapping_dedup_entries: int = Field(
        default=100_000,
        ge=0,
        description=(
            "Acknowledged mappings remembered so that an answer the agent already has "
            "(same addresses, no later expiry) is not pushed again; 0 disables."
        ),
    )
    agent_reconnect_interval: float = Field(
        default=1.0, gt=0, description="Seconds between attempts to reach the agent."
    )
    metrics_address: str = Field(
        default="127.0.0.1",
        description="Address of the HTTP server for /metrics, /healthz and /readyz.",
    )
    metrics_port: int = Field(
        default=9964,
        ge=0,
        le=65535,
        description="Port of the metrics/health server; 0 disables it.",
    )
    shutdown_grace: float = Field(
        default=5.0,
        ge=0,
        description="On SIGTERM: seconds to finish queries in flight after the listeners close.",
    )
    denied_log_per_second: float = Field(
        default=10.0,
        ge=0,
        description="Rate limit of the JSON log line per denied query (0: no such lines).",
    )
    use_uvloop: bool = Field(
        default=True, description="Run on uvloop when it is installed (faster I/O)."
    )
