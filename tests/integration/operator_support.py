"""Helpers shared by the operator's integration tests (no tests in here).

Everything runs the real ``acns operator`` command against the session's real
kube-apiserver, under an identity bound to exactly ``deploy/rbac``'s ClusterRole and
Role, so a permission the chart does not grant fails a test.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from acns_operator.local.controlplane import ControlPlane, free_port
from acns_operator.local.kube import ApiClient, ApiError, Kubectl, create_namespace, unique_name
from acns_operator.operator.manifests import BY_KIND
from acns_operator.operator.process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "deploy" / "rbac"
FIXTURES = REPO / "tests" / "fixtures" / "policies"
INDEX: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "index.yaml").read_text())
SERVICE_ACCOUNT = "acns-operator"
VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/acns-operator"
TLS_SECRET = "acns-operator-webhook-tls"  # noqa: S105 - a Secret name, not a secret
POLICY_KINDS = set(BY_KIND)

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class OperatorEnv:
    """A namespace for the operator's Lease and Secret, and its RBAC-bound identity."""

    namespace: str
    kubeconfig: Path
    work_dir: Path

    def process(
        self,
        *args: str,
        name: str = "operator",
        webhook_port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        """An operator (not started) for this environment; ``webhook_port`` enables it."""
        argv = ["--kubeconfig", str(self.kubeconfig), "--operator-namespace", self.namespace]
        argv += ["--identity", name, "--log-level", "INFO"]
        if webhook_port is None:
            argv += ["--no-webhook"]
        else:
            argv += ["--webhook-host", "127.0.0.1", "--webhook-port", str(webhook_port)]
            argv += ["--unregister-on-exit"]
        return OperatorProcess(
            [*argv, *args],
            health_port=free_port(),
            log_path=self.work_dir / f"{name}-{unique_name('run')}.log",
            env=env,
        )


def make_operator_env(control_plane: ControlPlane, kubectl: Kubectl, work_dir: Path) -> OperatorEnv:
    """A fresh operator namespace, the chart's RBAC, and a ServiceAccount-like identity."""
    api = control_plane.api
    namespace = create_namespace(api, prefix="acns-system")
    kubectl.run("apply", "-f", str(RBAC / "operator-clusterrole.yaml")).check()
    kubectl.run("apply", "-n", namespace, "-f", str(RBAC / "operator-role.yaml")).check()
    subject = f"--serviceaccount={namespace}:{SERVICE_ACCOUNT}"
    kubectl.run(
        "create", "clusterrolebinding", f"acns-operator-{namespace}",
        "--clusterrole=acns-operator", subject,
    ).check()  # fmt: skip
    kubectl.run(
        "create", "rolebinding", "acns-operator", "-n", namespace, "--role=acns-operator", subject
    ).check()
    access = control_plane.service_account_access(namespace, SERVICE_ACCOUNT)
    return OperatorEnv(namespace=namespace, kubeconfig=access.kubeconfig, work_dir=work_dir)


def documents(path: Path) -> list[dict[str, Any]]:
    """The Cilium policy objects in a fixture file."""
    loaded = yaml.safe_load_all(path.read_text())
    return [doc for doc in loaded if isinstance(doc, dict) and doc.get("kind") in POLICY_KINDS]


def relocate(doc: Mapping[str, Any], namespace: str, suffix: str = "") -> dict[str, Any]:
    """A copy of a policy moved into the test's namespace (cluster-scoped: renamed)."""
    moved = copy.deepcopy(dict(doc))
    meta = moved.setdefault("metadata", {})
    if moved["kind"] == "CiliumNetworkPolicy":
        meta["namespace"] = namespace
    else:
        meta["name"] = f"{meta['name']}-{namespace}{suffix}"[:253]
    return moved


def policy_path(doc: Mapping[str, Any]) -> str:
    """The API path of a policy object."""
    meta = doc["metadata"]
    return BY_KIND[doc["kind"]].path(meta["name"], meta.get("namespace"))


def get_or_none(api: ApiClient, path: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        return api.get(path)
    except ApiError as exc:
        if exc.reason == "NotFound":
            return None
        raise


def valid_condition(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The stored Valid condition of a policy."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Valid":
            return dict(condition)
    return None


def wait_condition(
    api: ApiClient,
    doc: Mapping[str, Any],
    status: str,
    message: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Wait until the policy's Valid condition has ``status`` (and ``message``)."""
    path = policy_path(doc)

    def probe() -> dict[str, Any] | None:
        condition = valid_condition(get_or_none(api, path))
        if condition is None or condition["status"] != status:
            return None
        if message is not None and condition.get("message") != message:
            return None
        return condition

    return wait_for(f"Valid={status} on {path}", probe, timeout)


def events_about(api: ApiClient, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Events whose involvedObject is this policy (by uid)."""
    stored = api.get(policy_path(doc))
    namespace = stored["metadata"].get("namespace") or "default"
    items = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    uid = stored["metadata"]["uid"]
    return [event for event in items if event["involvedObject"].get("uid") == uid]


def cilium_policies(api: ApiClient) -> Iterator[dict[str, Any]]:
    """Every CNP and CCNP in the cluster."""
    for resource in BY_KIND.values():
        yield from api.get(f"/apis/cilium.io/v2/{resource.plural}")["items"]


def wait_synced(operator: OperatorProcess, api: ApiClient, timeout: float = 30.0) -> None:
    """Wait until the operator has seen every policy and has nothing left to write."""
    expected = sum(1 for _ in cilium_policies(api))

    def probe() -> bool:
        seen = operator.metric("acns_policies")
        queued = operator.metric("acns_reconcile_queue_depth")
        return seen == expected and queued == 0 and operator.metric("acns_operator_leader") == 1

    wait_for(f"the operator to see {expected} policies and go idle", probe, timeout)
