"""``acns explain``: the pure explanation and the offline command."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from acns_operator.commands.explain import explain as explain_command
from acns_operator.policy.compile import (
    ClusterSnapshot,
    CompileOptions,
    EndpointRules,
    Pod,
    compile_snapshot,
)
from acns_operator.policy.explain import explain
from tests.unit.test_compile import SEED, SERVICES

PODS = [
    Pod("shop", "backend", {"app": "backend"}, "10.244.1.11", "node1"),
    Pod("shop", "frontend", {"app": "frontend"}, "10.244.1.10", "node1"),
    Pod("shop", "idle", {"app": "idle"}, "10.244.1.12", "node1"),
    Pod("kube-system", "coredns", {"k8s-app": "kube-dns"}, "10.244.1.53", "node1"),
]


def compiled(pod: str) -> EndpointRules | None:
    compiler = compile_snapshot(
        ClusterSnapshot(policies=SEED, pods=PODS, services=SERVICES),
        CompileOptions(node_name="node1"),
    )
    return compiler.compile(pod)


def test_the_backend_may_reach_payments_on_443_and_the_fqdn_rule_decides() -> None:
    result = explain(compiled("shop/backend"), "payments.example.test", 443)
    assert result.allowed
    assert result.dns_allowed
    assert result.decided_by == "CiliumNetworkPolicy shop/backend-egress spec.egress[2]"
    assert result.dns_rule == "CiliumNetworkPolicy shop/backend-egress spec.egress[1]"


def test_another_port_falls_to_default_deny() -> None:
    result = explain(compiled("shop/backend"), "payments.example.test", 80)
    assert not result.allowed
    assert "default deny" in result.reason


def test_a_name_outside_the_dns_rules_is_refused() -> None:
    result = explain(compiled("shop/backend"), "payments.example.org", 443)
    assert not result.allowed
    assert result.dns_allowed is False
    assert "refuses" in result.reason


def test_a_pod_no_policy_selects_is_not_filtered() -> None:
    result = explain(compiled("shop/idle"), "anything.example", 443)
    assert result.allowed
    assert result.dns_allowed is None


def test_the_command_explains_offline_from_policy_files(tmp_path: Path) -> None:
    (tmp_path / "backend.yaml").write_text(
        """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-egress, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  egress:
  - toEndpoints:
    - matchLabels: {"k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns}
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules: {dns: [{matchPattern: "*.example.test"}]}
  - toFQDNs: [{matchName: payments.example.test}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"""
    )
    runner = CliRunner()
    args = ["--pod", "shop/api", "--labels", "app=backend", "-f", str(tmp_path)]
    allowed = runner.invoke(
        explain_command, [*args, "--fqdn", "payments.example.test", "--port", "443"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert allowed.output.startswith("ALLOWED: shop/api -> payments.example.test:443")
    assert "backend-egress spec.egress[1]" in allowed.output
    denied = runner.invoke(
        explain_command, [*args, "--fqdn", "other.example.test", "--port", "443"]
    )
    assert denied.exit_code == 1
    assert denied.output.startswith("DENIED")
