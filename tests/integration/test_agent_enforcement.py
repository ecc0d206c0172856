"""The agent end to end: real API server, network namespaces, dnsmasq, the DNS proxy.

The agent runs next to the API server (host loopback) and enforces in node1's
namespace (``--netns``); the DNS proxy runs inside node1, where the agent's TPROXY
rules deliver the pods' DNS to it. Pods are network namespaces on veths; the seed
multi-tier scenario (frontend -> backend 8080, backend -> database 5432, backend ->
payments.example.test:443 with DNS allowed for ``*.example.test``) is applied as real
CiliumNetworkPolicy objects.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from acns_operator.local.controlplane import ControlPlane
from acns_operator.local.dnsserver import default_test_zone
from acns_operator.local.kube import (
    ApiClient,
    ApiError,
    create_namespace,
    create_pod,
    create_service,
)
from acns_operator.local.prometheus import PrometheusServer
from acns_operator.local.topology import Cluster, Pod, Topology, build_cluster
from tests.fixtures_controlplane import CRD_DIR

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.controlplane]

ACNS = str(Path(sys.executable).parent / "acns")
NODE = "node1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class AgentProcess:
    """``acns agent`` as a child process (stopped by PID)."""

    def __init__(
        self, workdir: Path, kubeconfig: Path, netns: str, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.env = dict(os.environ, **(env or {}))
        self.kubeconfig = kubeconfig
        self.netns = netns
        self.http_port = free_port()
        self.socket = workdir / "agent.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "agent.log"

    def start(self) -> None:
        argv = [
            ACNS, "agent", "--node", NODE, "--kubeconfig", str(self.kubeconfig),
            "--backend", "nftables", "--netns", self.netns,
            "--state-dir", str(self.workdir / "state"), "--grpc-socket", str(self.socket),
            "--http-port", str(self.http_port), "--gc-interval", "1", "--log-level", "DEBUG",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        wait_for("the agent to sync", self.ready)

    def ready(self) -> bool:
        try:
            return bool(self.get("/readyz")["ready"])
        except OSError:
            return False

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def proxy_acked(self) -> bool:
        status = self.get("/v1/status")
        proxies = status["proxies"]
        return bool(proxies) and all(p["acked"] >= status["snapshot_revision"] for p in proxies)

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, ACNS_AGENT_URL=f"http://127.0.0.1:{self.http_port}")
        return subprocess.run(
            [ACNS, *args], capture_output=True, text=True, env=env, timeout=30, check=False
        )


@dataclass
class Scenario:
    cluster: Cluster
    api: ApiClient
    namespace: str
    agent: AgentProcess
    frontend: Pod
    backend: Pod
    database: Pod

    def apply_policy(self, name: str, spec: dict[str, Any]) -> None:
        self.api.create(
            f"/apis/cilium.io/v2/namespaces/{self.namespace}/ciliumnetworkpolicies",
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": spec,
            },
        )

    def delete_policy(self, name: str) -> None:
        self.api.delete(
            f"/apis/cilium.io/v2/namespaces/{self.namespace}/ciliumnetworkpolicies/{name}"
        )

    def settle(self) -> None:
        """Wait until the agent compiled the latest change and the proxy acked it."""
        time.sleep(0.3)
        wait_for("the proxy to ack the rules", self.agent.proxy_acked)


DNS_RULE = {
    "toEndpoints": [
        {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}
    ],
    "toPorts": [
        {
            "ports": [{"port": "53", "protocol": "ANY"}],
            "rules": {"dns": [{"matchPattern": "*.example.test"}]},
        }
    ],
}


def ensure_cluster_dns(api: ApiClient, namespace: str) -> None:
    """The kube-dns pod object (10.244.1.53 on node1) and its Service 10.244.250.10."""
    create_pod(
        api, "kube-system", f"kube-dns-{namespace}"[:63], node_name=NODE,
        labels={"k8s-app": "kube-dns"}, pod_ip="10.244.1.53",
    )  # fmt: skip
    # One Service per control plane (the session shares it): create it once.
    if not api.request("GET", "/api/v1/namespaces/kube-system/services/kube-dns").ok:
        create_service(
            api, "kube-system", "kube-dns", cluster_ip="10.244.250.10",
            selector={"k8s-app": "kube-dns"},
        )  # fmt: skip


@contextlib.contextmanager
def running_scenario(
    topology: Topology,
    k8s_api: ApiClient,
    k8s_namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
    agent_env: dict[str, str] | None = None,
) -> Iterator[Scenario]:
    """The seed scenario's pods and policies, the DNS proxy in node1, the agent running."""
    zone = default_test_zone().with_address("short2.example.test", "192.0.2.51", ttl=2)
    cluster = build_cluster(topology, zone=zone, listen_ports=(80, 443))
    node1, node2 = cluster.nodes
    frontend = topology.add_pod(node1, "frontend")
    backend = topology.add_pod(node1, "backend")
    database = topology.add_pod(node2, "database")
    backend.listen(8080)
    database.listen(5432)
    namespace = k8s_namespace
    created: list[str] = [f"kube-system/kube-dns-{namespace}"[:63]]
    ensure_cluster_dns(k8s_api, namespace)
    for pod, node, labels in (
        (frontend, NODE, {"app": "frontend"}),
        (backend, NODE, {"app": "backend"}),
        (database, "node2", {"app": "database"}),
    ):
        create_pod(k8s_api, namespace, pod.name, node_name=node, labels=labels, pod_ip=pod.ip)
        created.append(f"{namespace}/{pod.name}")
    agent = AgentProcess(tmp_path, kubeconfig, node1.netns.name, agent_env)
    node1.spawn(
        [
            ACNS, "dnsproxy", "--agent-address", f"unix://{agent.socket}",
            "--rules-file", str(tmp_path / "proxy-rules.json"), "--metrics-port", "0",
        ],
        name="dnsproxy",
    )  # fmt: skip
    this = Scenario(cluster, k8s_api, namespace, agent, frontend, backend, database)
    this.apply_policy(
        "frontend-egress",
        {
            "endpointSelector": {"matchLabels": {"app": "frontend"}},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": {"app": "backend"}}],
                    "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}],
                }
            ],
        },
    )
    this.apply_policy(
        "backend-egress",
        {
            "endpointSelector": {"matchLabels": {"app": "backend"}},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": {"app": "database"}}],
                    "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}],
                },
                DNS_RULE,
                {
                    "toFQDNs": [
                        {"matchName": "payments.example.test"},
                        {"matchName": "short.example.test"},
                        {"matchName": "short2.example.test"},
                    ],
                    "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                },
            ],
        },
    )
    try:
        agent.start()
        this.settle()
        yield this
    finally:
        agent.stop()
        for key in created:
            ns, name = key.split("/")
            with contextlib.suppress(ApiError):
                k8s_api.delete(f"/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=0")
        if agent.log.exists():
            print(agent.log.read_text()[-6000:])


@pytest.fixture
def scenario(
    topology: Topology,
    k8s_api: ApiClient,
    k8s_namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[Scenario]:
    with running_scenario(topology, k8s_api, k8s_namespace, kubeconfig, tmp_path) as this:
        yield this


def test_the_seed_scenario_allows_exactly_the_resolved_names_peers_and_ports(
    scenario: Scenario,
) -> None:
    frontend, backend, database = scenario.frontend, scenario.backend, scenario.database
    assert frontend.tcp_connect(backend.ip, 8080)
    assert not frontend.tcp_connect(database.ip, 5432, timeout=1), "frontend must not reach the DB"
    assert backend.tcp_connect(database.ip, 5432)

    answer = backend.dig("payments.example.test")
    assert answer.rcode == "NOERROR"
    assert answer.addresses == ["192.0.2.10"]
    assert backend.tcp_connect("192.0.2.10", 443)
    assert not backend.tcp_connect("192.0.2.10", 80, timeout=1), "another port of an allowed name"
    assert not backend.tcp_connect("192.0.2.20", 443, timeout=1), "an address never resolved"
    assert backend.dig("www.other.test").rcode == "REFUSED"
    # DNS over TCP is redirected to the proxy too.
    assert backend.dig("payments.example.test", tcp=True).addresses == ["192.0.2.10"]
    assert backend.dig("www.other.test", tcp=True).rcode == "REFUSED"

    listing = scenario.agent.cli("fqdn", "cache", "list", "--endpoint", backend.ip, "-o", "json")
    assert listing.returncode == 0, listing.stderr
    entries = json.loads(listing.stdout)
    assert {(e["name"], e["ip"], e["source"]) for e in entries} >= {
        ("payments.example.test.", "192.0.2.10", "lookup")
    }
    explained = scenario.agent.cli(
        "explain", "--pod", f"{scenario.namespace}/backend", "--fqdn", "payments.example.test",
        "--port", "443", "-o", "json",
    )  # fmt: skip
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert json.loads(explained.stdout)["decided_by"].endswith("backend-egress spec.egress[2]")


def test_after_the_ttl_only_re_resolved_names_and_open_connections_still_work(
    scenario: Scenario,
) -> None:
    backend = scenario.backend
    assert backend.dig("short.example.test").addresses == ["192.0.2.50"]
    assert backend.dig("short2.example.test").addresses == ["192.0.2.51"]
    held = backend.open_connection("192.0.2.50", 443)
    assert backend.tcp_connect("192.0.2.51", 443)
    time.sleep(4.5)  # TTL 2 s, GC every second
    assert not backend.tcp_connect("192.0.2.51", 443, timeout=1), "expired and not re-resolved"
    assert held.is_alive(), "an open connection survives its TTL"
    rows = scenario.agent.get(f"/v1/fqdn/cache?endpoint={backend.ip}")["entries"]
    assert ("short.example.test.", "192.0.2.50", "zombie") in {
        (r["name"], r["ip"], r["source"]) for r in rows
    }
    assert backend.dig("short2.example.test").addresses == ["192.0.2.51"]
    assert backend.tcp_connect("192.0.2.51", 443), "re-resolved"


def test_kill_9_of_the_agent_keeps_enforcing_and_a_restart_restores_everything(
    scenario: Scenario,
) -> None:
    backend, agent = scenario.backend, scenario.agent
    assert backend.dig("payments.example.test").addresses == ["192.0.2.10"]
    held = backend.open_connection("192.0.2.10", 443)
    before = agent.get(f"/v1/fqdn/cache?endpoint={backend.ip}")["entries"]
    agent.kill9()

    assert held.is_alive()
    assert backend.tcp_connect("192.0.2.10", 443), "the last resolved IPs stay allowed"
    assert backend.dig("payments.example.test").addresses == ["192.0.2.10"], "DNS keeps working"
    assert backend.dig("www.other.test").rcode == "REFUSED"
    assert not backend.tcp_connect("192.0.2.20", 443, timeout=1), "disallowed stays blocked"
    assert not scenario.frontend.tcp_connect(scenario.database.ip, 5432, timeout=1)

    agent.start()
    scenario.settle()
    after = agent.get(f"/v1/fqdn/cache?endpoint={backend.ip}")["entries"]
    key = {(e["name"], e["ip"], e["source"], e["expiry"]) for e in before}
    assert key <= {(e["name"], e["ip"], e["source"], e["expiry"]) for e in after}
    assert held.is_alive()
    assert backend.tcp_connect("192.0.2.10", 443)
    assert not backend.tcp_connect("192.0.2.10", 80, timeout=1)


def test_deleting_a_policy_removes_its_enforcement_and_blocked_policies_are_never_enforced(
    scenario: Scenario,
) -> None:
    frontend, database = scenario.frontend, scenario.database
    assert not frontend.tcp_connect(database.ip, 5432, timeout=1)
    scenario.delete_policy("frontend-egress")
    wait_for(
        "the frontend's rules to go",
        lambda: f"{scenario.namespace}/frontend" not in scenario.agent.get("/v1/endpoints"),
    )
    assert frontend.tcp_connect(database.ip, 5432)
    # A match-all toFQDNs pattern is blocked on AKS: the agent must not enforce it.
    scenario.apply_policy(
        "match-all",
        {
            "endpointSelector": {"matchLabels": {"app": "frontend"}},
            "egress": [{"toFQDNs": [{"matchPattern": "*"}]}],
        },
    )
    wait_for(
        "the agent to see the blocked policy",
        lambda: any("match-all" in k for k in scenario.agent.get("/v1/status")["blocked_policies"]),
    )
    assert frontend.tcp_connect(database.ip, 5432)


def test_a_real_prometheus_scrapes_the_agents_metrics(scenario: Scenario, tmp_path: Path) -> None:
    assert scenario.backend.dig("payments.example.test").addresses == ["192.0.2.10"]
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{scenario.agent.http_port}/metrics", timeout=5
    ).read()
    lint = subprocess.run(
        ["promtool", "check", "metrics"],
        input=metrics,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    target = {"agent": f"127.0.0.1:{scenario.agent.http_port}"}
    with PrometheusServer(target, tmp_path / "prometheus") as prometheus:
        assert prometheus.wait_for_value('up{job="agent"}', minimum=1) == 1
        ips = prometheus.wait_for_value(
            f'cilium_fqdn_active_ips{{endpoint="{scenario.backend.ip}"}}', minimum=1
        )
        applied = prometheus.wait_for_value("acns_agent_mapping_apply_seconds_count", minimum=1)
        selectors = prometheus.wait_for_value("cilium_fqdn_selectors", minimum=3)
    assert ips >= 1
    assert applied >= 1
    assert selectors >= 3, "payments, short and short2"


def _watch_counts(agent: AgentProcess, field: str) -> int:
    watches = agent.get("/v1/status")["watches"]
    return min(int(w[field]) for w in watches.values())


def test_with_the_api_server_down_the_agent_keeps_enforcing_and_catches_up_when_it_returns(
    topology: Topology, tmp_path: Path
) -> None:
    """A dedicated control plane (the session's stays untouched) whose API server is
    stopped mid-run and started again on the same port and etcd."""
    control_plane = ControlPlane(
        crd_paths=sorted(CRD_DIR.glob("*.yaml")), work_dir=tmp_path / "controlplane"
    )
    control_plane.start()
    try:
        api = control_plane.api
        namespace = create_namespace(api, prefix="apiserver-down")
        with running_scenario(
            topology, api, namespace, control_plane.kubeconfig, tmp_path,
            agent_env={"ACNS_AGENT_KUBE_BACKOFF_MAX": "1"},
        ) as scenario:  # fmt: skip
            agent, backend, frontend = scenario.agent, scenario.backend, scenario.frontend
            database = scenario.database
            assert backend.dig("payments.example.test").addresses == ["192.0.2.10"]
            held = backend.open_connection("192.0.2.10", 443)
            relists = _watch_counts(agent, "relists")

            # Only the API server goes; etcd keeps the objects.
            control_plane.stop_apiserver()
            wait_for(
                "every watch to fail at least twice",
                lambda: _watch_counts(agent, "failures") >= 2,
            )
            time.sleep(3)  # several reconnect attempts with the 1 s backoff cap
            assert agent.process is not None
            assert agent.process.poll() is None, "still running"
            assert agent.get("/v1/status")["endpoints"] == 2, "the last state is kept"
            assert held.is_alive()
            assert backend.tcp_connect("192.0.2.10", 443)
            assert not backend.tcp_connect("192.0.2.20", 443, timeout=1)
            assert frontend.tcp_connect(backend.ip, 8080)
            assert not frontend.tcp_connect(database.ip, 5432, timeout=1)
            # DNS rules are still served to the proxy, and new answers still become
            # enforcement: the mapping path does not need the API server.
            assert backend.dig("www.other.test").rcode == "REFUSED"
            assert backend.dig("short2.example.test").addresses == ["192.0.2.51"]
            assert backend.tcp_connect("192.0.2.51", 443), "learned during the outage"
            assert agent.proxy_acked()

            control_plane.start_apiserver()
            wait_for(
                "every watch to list again",
                lambda: _watch_counts(agent, "relists") > relists,
                timeout=30,
            )
            # Changes made after the return are picked up: a deleted policy...
            scenario.delete_policy("frontend-egress")
            wait_for(
                "the frontend's rules to go",
                lambda: f"{namespace}/frontend" not in agent.get("/v1/endpoints"),
            )
            assert frontend.tcp_connect(database.ip, 5432)
            # ... and a new one.
            scenario.apply_policy(
                "frontend-egress-again",
                {
                    "endpointSelector": {"matchLabels": {"app": "frontend"}},
                    "egress": [{"toEndpoints": [{"matchLabels": {"app": "backend"}}]}],
                },
            )
            wait_for(
                "the frontend's new rules",
                lambda: f"{namespace}/frontend" in agent.get("/v1/endpoints"),
            )
            scenario.settle()
            assert not frontend.tcp_connect(database.ip, 5432, timeout=1)
            assert frontend.tcp_connect(backend.ip, 8080)
            assert held.is_alive()
            assert agent.process.poll() is None
    finally:
        control_plane.stop()
