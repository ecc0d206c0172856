"""The real control plane works end to end: CRDs, kubectl apply, watches, Pod status, RBAC.

These prove the harness the operator and agent tests stand on; each runs in its own
namespace of the session's control plane.
"""

from __future__ import annotations

import copy
import json
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
