"""The real control plane works end to end: CRDs, kubectl apply, watches, Pod status, RBAC.

These prove the harness the operator and agent tests stand on; each runs in its own
namespace of the session's control plane.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from acns_operator.local.controlplane import ControlPlane
from acns_operator.local.kube import ApiClient, Kubectl, create_node, create_pod, create_service

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

REPO_ROOT = Path(__file__).resolve().parents[2]
CILIUM_CRDS = (
    "ciliumnetworkpolicies.cilium.io",
    "ciliumclusterwidenetworkpolicies.cilium.io",
)
BOOT_LIMIT_SECONDS = 30.0
SEED_POLICY_NAME = "allow-bing-fqdn"


def _seed_policy() -> dict[str, Any]:
    """The allow-bing-fqdn policy of seed 003: the policy fixtures' copy, else ours."""
    candidates = sorted((REPO_ROOT / "tests" / "fixtures" / "policies" / "seeds").glob("*.y*ml"))
    candidates.append(Path(__file__).parent / "manifests" / "allow-bing-fqdn.yaml")
    for path in candidates:
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document["metadata"]["name"] == SEED_POLICY_NAME:
                return document
    raise AssertionError(f"no {SEED_POLICY_NAME} policy in {candidates}")


def _contains(stored: Any, sent: Any) -> bool:
    """True if every field ``sent`` has is in ``stored`` with the same value.

    Stored objects may gain defaults, but a field the CRD schema pruned shows up here.
    """
    if isinstance(sent, Mapping):
        return isinstance(stored, Mapping) and all(
            key in stored and _contains(stored[key], value) for key, value in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(sent)
            and all(_contains(a, b) for a, b in zip(stored, sent, strict=True))
        )
    return bool(stored == sent)


def test_the_control_plane_boots_well_under_the_time_limit(control_plane: ControlPlane) -> None:
    steps = ", ".join(f"{step} {seconds:.2f} s" for step, seconds in control_plane.timings.items())
    print(f"\ncontrol plane boot: {control_plane.boot_seconds:.2f} s ({steps})")
    assert control_plane.boot_seconds is not None
    assert control_plane.boot_seconds < BOOT_LIMIT_SECONDS


def test_the_projects_crds_are_installed_and_established(
    control_plane: ControlPlane, k8s_api: ApiClient
) -> None:
    in_repo = {
        document["metadata"]["name"]
        for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition"
    }
    assert set(CILIUM_CRDS) <= in_repo, f"crds/ must define {CILIUM_CRDS}, has {sorted(in_repo)}"
    assert set(control_plane.crd_names) == in_repo
    for name in in_repo:
        crd = k8s_api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, conditions)


def test_kubectl_applies_the_seed_bing_policy_and_reads_it_back_unchanged(
    kubectl: Kubectl, k8s_namespace: str
) -> None:
    policy = _seed_policy()
    applied = kubectl.apply(json.dumps(policy), namespace=k8s_namespace)
    assert f"ciliumnetworkpolicy.cilium.io/{SEED_POLICY_NAME} created" in applied.stdout
    stored = kubectl.get(
        "ciliumnetworkpolicies.cilium.io", SEED_POLICY_NAME, namespace=k8s_namespace
    )
    assert stored["metadata"]["namespace"] == k8s_namespace
    assert _contains(stored["spec"], policy["spec"]), stored["spec"]


def test_a_watch_opened_before_an_update_sees_the_updated_policy(
    kubectl: Kubectl, k8s_api: ApiClient, k8s_namespace: str
) -> None:
    policy = _seed_policy()
    kubectl.apply(json.dumps(policy), namespace=k8s_namespace)
    collection = f"/apis/cilium.io/v2/namespaces/{k8s_namespace}/ciliumnetworkpolicies"
    version = k8s_api.get(f"{collection}/{SEED_POLICY_NAME}")["metadata"]["resourceVersion"]
    updated = copy.deepcopy(policy)
    updated["spec"]["egress"][1]["toFQDNs"].append({"matchName": "www.microsoft.com"})

    seen: list[str] = []
    with k8s_api.watch(
        collection,
        resource_version=version,
        field_selector=f"metadata.name={SEED_POLICY_NAME}",
        timeout_seconds=20,
    ) as events:
        applied = kubectl.apply(json.dumps(updated), namespace=k8s_namespace)
        assert "configured" in applied.stdout
        for event in events:
            seen.append(event.type)
            if event.type == "MODIFIED":
                assert event.object["spec"]["egress"][1]["toFQDNs"] == [
                    {"matchPattern": "*.bing.com"},
                    {"matchName": "www.microsoft.com"},
                ]
                assert int(event.object["metadata"]["resourceVersion"]) > int(version)
                break
    assert seen == ["MODIFIED"]


def test_a_pod_gets_its_ip_and_phase_through_the_status_subresource(
    k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    create_pod(
        k8s_api,
        k8s_namespace,
        "client",
        node_name="node-a",
        labels={"app": "demo-container"},
        pod_ip="10.244.1.10",
        host_ip="10.244.1.1",
    )
    pod = kubectl.get("pod", "client", namespace=k8s_namespace)
    assert pod["spec"]["nodeName"] == "node-a"
    assert pod["metadata"]["labels"] == {"app": "demo-container"}
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"] == "10.244.1.10"
    assert pod["status"]["podIPs"] == [{"ip": "10.244.1.10"}]
    assert pod["status"]["hostIP"] == "10.244.1.1"
    listed = kubectl.run(
        "get", "pods", "-n", k8s_namespace, "-l", "app=demo-container", "-o", "name"
    ).check()
    assert listed.stdout.split() == ["pod/client"]


def test_a_service_keeps_the_cluster_ip_it_was_given_inside_the_service_range(
    k8s_api: ApiClient, k8s_namespace: str
) -> None:
    # ClusterIPs are cluster-wide: .10 is the cluster DNS of the network tests; use
    # an address no other test of the session takes.
    service = create_service(
        k8s_api,
        k8s_namespace,
        "smoke-dns",
        cluster_ip="10.244.250.249",
        selector={"k8s-app": "kube-dns"},
    )
    assert service["spec"]["clusterIP"] == "10.244.250.249"
    assert [(p["port"], p["protocol"]) for p in service["spec"]["ports"]] == [
        (53, "UDP"),
        (53, "TCP"),
    ]


def test_a_node_object_is_created_with_its_internal_address(k8s_api: ApiClient) -> None:
    node = create_node(
        k8s_api,
        "smoke-node",
        labels={"acns.test/role": "smoke"},
        internal_ip="10.244.9.1",
        exist_ok=True,
    )
    assert node["metadata"]["labels"]["acns.test/role"] == "smoke"
    assert {"type": "InternalIP", "address": "10.244.9.1"} in node["status"]["addresses"]


def test_a_minted_service_account_identity_gets_exactly_what_its_cluster_role_grants(
    control_plane: ControlPlane, k8s_api: ApiClient, k8s_namespace: str
) -> None:
    identity = control_plane.service_account_access(k8s_namespace, "acns-operator")
    as_operator = ApiClient(identity)
    policies = f"/apis/cilium.io/v2/namespaces/{k8s_namespace}/ciliumnetworkpolicies"
    assert as_operator.request("GET", policies).status == 403

    role = f"{k8s_namespace}-policy-reader"
    k8s_api.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "metadata": {"name": role},
            "rules": [
                {
                    "apiGroups": ["cilium.io"],
                    "resources": ["ciliumnetworkpolicies"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
    )
    k8s_api.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "acns-operator", "namespace": k8s_namespace}
            ],
        },
    )
    # The RBAC authorizer reads bindings from an informer: allow it to catch up.
    deadline = time.monotonic() + 10
    while as_operator.request("GET", policies).status != 200:
        assert time.monotonic() < deadline, "the ClusterRoleBinding never took effect"
        time.sleep(0.1)

    as_kubectl = Kubectl(control_plane.binaries.kubectl, identity.kubeconfig)
    can = as_kubectl.run("auth", "can-i", "list", "ciliumnetworkpolicies.cilium.io", "-A")
    cannot = as_kubectl.run("auth", "can-i", "create", "ciliumnetworkpolicies.cilium.io", "-A")
    assert (can.returncode, can.stdout.strip()) == (0, "yes")
    assert (cannot.returncode, cannot.stdout.strip()) == (1, "no")
    whoami = as_kubectl.run("auth", "whoami", "-o", "json").check()
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{k8s_namespace}:acns-operator"
    assert f"system:serviceaccounts:{k8s_namespace}" in user["groups"]


class _Webhook(http.server.BaseHTTPRequestHandler):
    """Denies ConfigMaps that carry a ``forbidden`` key; warns on every other one."""

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        denied = "forbidden" in (request["object"].get("data") or {})
        response: dict[str, Any] = {"uid": request["uid"], "allowed": not denied}
        if denied:
            response["status"] = {"code": 403, "message": "data.forbidden: not on my watch"}
        else:
            response["warnings"] = ["checked by the loopback webhook"]
        body = json.dumps({**review, "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest captures stderr, and the test asserts on kubectl's output."""


def test_an_admission_webhook_on_loopback_is_called_and_kubectl_shows_its_answer(
    control_plane: ControlPlane, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    ca = control_plane.certificate_authority
    cert_file, key_file = ca.issue_server("webhook").write(control_plane.work_dir, "webhook")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    name = f"{k8s_namespace}-webhook"
    k8s_api.patch(
        f"/api/v1/namespaces/{k8s_namespace}", {"metadata": {"labels": {"webhook-test": name}}}
    )
    try:
        k8s_api.create(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            {
                "metadata": {"name": name},
                "webhooks": [
                    {
                        "name": "configmaps.acns.test",
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{server.server_address[1]}/validate",
                            "caBundle": base64.b64encode(ca.cert_pem).decode(),
                        },
                        "rules": [
                            {
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE", "UPDATE"],
                                "resources": ["configmaps"],
                            }
                        ],
                        # Only this test's namespace: the control plane is shared.
                        "namespaceSelector": {"matchLabels": {"webhook-test": name}},
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 5,
                    }
                ],
            },
        )
        manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {%s: x}\n"
        # The webhook is live once the API server has loaded the configuration.
        deadline = time.monotonic() + 10
        while True:
            allowed = kubectl.apply(manifest % ("ok", "fine"), namespace=k8s_namespace)
            if "Warning: checked by the loopback webhook" in allowed.stderr:
                break
            assert time.monotonic() < deadline, f"the webhook was never called: {allowed}"
            time.sleep(0.2)
        denied = kubectl.apply(
            manifest % ("bad", "forbidden"), namespace=k8s_namespace, check=False
        )
        assert denied.returncode == 1
        assert "denied the request: data.forbidden: not on my watch" in denied.stderr
        assert (
            k8s_api.request("GET", f"/api/v1/namespaces/{k8s_namespace}/configmaps/bad").status
            == 404
        )
    finally:
        k8s_api.request(
            "DELETE",
            f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}",
        )
        server.shutdown()
        server.server_close()
