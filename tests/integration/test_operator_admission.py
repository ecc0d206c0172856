"""`kubectl apply` against the real API server with the operator's webhook registered.

One operator for the module (webhook on loopback, registered with its own CA, running
under the chart's RBAC). Every seed policy and every row of the support table is
applied with kubectl: admitted ones are stored and get Valid=True, blocked ones are
refused with every error's field path and reason, warned ones print kubectl's
``Warning:`` lines.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from acns_operator.local.controlplane import ControlPlane, free_port
from acns_operator.local.kube import ApiClient, Kubectl
from acns_operator.operator.process import OperatorProcess
from acns_operator.operator.status import to_condition_message
from acns_operator.operator.validation import make_judge
from acns_operator.settings import PolicySettings
from tests.integration.operator_support import (
    FIXTURES,
    INDEX,
    TLS_SECRET,
    VWC,
    OperatorEnv,
    documents,
    get_or_none,
    make_operator_env,
    policy_path,
    relocate,
    wait_condition,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

JUDGE = make_judge(PolicySettings())
APPLIED = [entry for entry in INDEX if entry.get("crd") != "n/a"]
BLOCKED_PROBE = FIXTURES / "blocked" / "to-services.yaml"


@pytest.fixture(scope="module")
def operator_env(
    control_plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> OperatorEnv:
    return make_operator_env(control_plane, kubectl, tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="module")
def operator(
    operator_env: OperatorEnv, k8s_api: ApiClient, kubectl: Kubectl
) -> Iterator[OperatorProcess]:
    process = operator_env.process(name="webhook", webhook_port=free_port())
    process.start()
    try:
        process.wait_ready()
        wait_for("the ValidatingWebhookConfiguration", lambda: get_or_none(k8s_api, VWC))
        # The API server picks new webhook configurations up asynchronously: wait until
        # a blocked policy is really refused (server-side dry run: nothing is stored).
        probe = yaml.safe_dump(relocate(documents(BLOCKED_PROBE)[0], operator_env.namespace))
        wait_for(
            "the API server to call the webhook",
            lambda: (
                "denied the request"
                in kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=probe).stderr
            ),
        )
        yield process
    finally:
        process.stop()
        assert "Traceback" not in process.log(), process.log_tail()
    assert get_or_none(k8s_api, VWC) is None, "the webhook was not unregistered on exit"


@pytest.mark.parametrize("entry", APPLIED, ids=[entry["file"] for entry in APPLIED])
def test_every_seed_and_table_policy_gets_the_answer_its_verdict_implies(
    entry: dict[str, Any],
    operator: OperatorProcess,
    k8s_api: ApiClient,
    kubectl: Kubectl,
    k8s_namespace: str,
) -> None:
    for doc in documents(FIXTURES / entry["file"]):
        moved = relocate(doc, k8s_namespace)
        result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(moved))
        judgement = JUDGE(moved)
        if entry["crd"] == "rejected":
            # The CRD schema refuses it before admission; kubectl names the field.
            assert not result.ok, result.stdout
            assert get_or_none(k8s_api, policy_path(moved)) is None
            leaf = judgement.errors[0].path.split(".")[-1].split("[")[0]
            assert leaf in result.stderr, result.stderr
        elif not judgement.admitted:
            assert not result.ok, result.stdout
            assert "denied the request" in result.stderr
            for issue in judgement.errors:
                assert f"- {issue.path}: {issue.message}" in result.stderr, result.stderr
            assert get_or_none(k8s_api, policy_path(moved)) is None
        else:
            assert result.ok, result.stderr
            for issue in judgement.warnings:
                assert f"Warning: {issue.path}: {issue.message}" in result.stderr
            if not judgement.warnings:
                assert "Warning:" not in result.stderr
            wait_condition(k8s_api, moved, "True", to_condition_message(judgement))
    # The recorded verdict of the table and what the operator judged agree.
    verdicts = {JUDGE(doc).admitted for doc in documents(FIXTURES / entry["file"])}
    assert verdicts == {entry["verdict"] == "admitted"}


def test_updating_an_admitted_policy_into_a_blocked_one_is_refused_and_the_stored_one_stays(
    operator: OperatorProcess, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    good = relocate(documents(FIXTURES / "admitted" / "fqdn-match-name.yaml")[0], k8s_namespace)
    kubectl.apply(yaml.safe_dump(good))
    stored = wait_condition(k8s_api, good, "True")
    bad = dict(good, spec=documents(BLOCKED_PROBE)[0]["spec"])
    result = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(bad))
    assert not result.ok
    assert "spec.egress[0].toServices" in result.stderr
    after = k8s_api.get(policy_path(good))
    assert after["spec"] == good["spec"]
    assert wait_condition(k8s_api, good, "True") == stored


def test_a_blocked_clusterwide_policy_is_refused_too(
    operator: OperatorProcess, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    ccnp = relocate(documents(FIXTURES / "blocked" / "clusterwide.yaml")[0], k8s_namespace)
    result = kubectl.run("create", "-f", "-", stdin=yaml.safe_dump(ccnp))
    assert not result.ok
    assert "CiliumClusterwideNetworkPolicy" in result.stderr
    assert get_or_none(k8s_api, policy_path(ccnp)) is None


def test_the_registered_webhook_covers_both_kinds_with_failure_policy_fail_and_our_ca(
    operator: OperatorProcess, operator_env: OperatorEnv, k8s_api: ApiClient
) -> None:
    config = k8s_api.get(VWC)
    secret = k8s_api.get(f"/api/v1/namespaces/{operator_env.namespace}/secrets/{TLS_SECRET}")
    resources = [w["rules"][0]["resources"] for w in config["webhooks"]]
    assert resources == [["ciliumnetworkpolicies"], ["ciliumclusterwidenetworkpolicies"]]
    assert {w["failurePolicy"] for w in config["webhooks"]} == {"Fail"}
    assert {w["clientConfig"]["caBundle"] for w in config["webhooks"]} == {secret["data"]["ca.crt"]}


async def _review_latencies(
    url: str, ca_pem: bytes, review: dict[str, Any], count: int
) -> list[float]:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    latencies = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for index in range(count):
            review["request"]["uid"] = f"latency-{index}"
            started = time.perf_counter()
            async with session.post(url, json=review) as response:
                answer = await response.json()
            latencies.append(time.perf_counter() - started)
            assert answer["response"]["uid"] == f"latency-{index}"
            assert answer["response"]["allowed"] is False
    return latencies


def test_admission_answers_take_milliseconds_and_are_counted_in_the_metrics(
    operator: OperatorProcess, operator_env: OperatorEnv, k8s_api: ApiClient, k8s_namespace: str
) -> None:
    blocked = relocate(
        documents(FIXTURES / "seeds" / "003-frontend-l7-policy.yaml")[0], k8s_namespace
    )
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "",
            "kind": {"group": "cilium.io", "version": "v2", "kind": "CiliumNetworkPolicy"},
            "resource": {
                "group": "cilium.io",
                "version": "v2",
                "resource": "ciliumnetworkpolicies",
            },
            "namespace": k8s_namespace,
            "name": blocked["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": {"username": "latency-test"},
            "object": blocked,
        },
    }
    config = k8s_api.get(VWC)
    url = config["webhooks"][0]["clientConfig"]["url"]
    ca_pem = base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])
    before = operator.metric("acns_admission_requests_total", verdict="denied")
    latencies = sorted(asyncio.run(_review_latencies(url, ca_pem, review, 200)))
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    print(f"webhook round trip, 200 reviews: p50={p50 * 1000:.2f} ms p99={p99 * 1000:.2f} ms")
    assert p99 < 0.5
    assert operator.metric("acns_admission_requests_total", verdict="denied") - before == 200
    count = operator.metric("acns_admission_duration_seconds_count")
    total = operator.metric("acns_admission_duration_seconds_sum")
    print(f"server-side mean over {count:.0f} reviews: {total / count * 1000:.2f} ms")
    report = Path(operator_env.work_dir / "admission-latency.json")
    report.write_text(json.dumps({"p50": p50, "p99": p99, "server_mean": total / count}))


def test_health_and_readiness_are_served_with_the_metrics(operator: OperatorProcess) -> None:
    assert operator.get("/healthz")[0] == 200
    assert operator.get("/readyz")[0] == 200
    status, text = operator.get("/metrics")
    assert status == 200
    assert "acns_admission_duration_seconds_bucket" in text
    assert 'acns_policies{kind="CiliumNetworkPolicy"' in text


def test_kubectl_runs_acns_lint_as_a_plugin_from_the_virtualenv(kubectl: Kubectl) -> None:
    bin_dir = Path(sys.executable).parent
    assert os.access(bin_dir / "kubectl-acns", os.X_OK)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(kubectl.kubeconfig),
    }
    policies = [FIXTURES / "seeds" / "003-frontend-l7-policy.yaml", FIXTURES / "seeds"]
    done = subprocess.run(
        [str(kubectl.binary), "acns", "lint", "--output", "json", *map(str, policies)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert {entry["name"] for entry in report if entry["verdict"] == "blocked"} == {
        "frontend-l7-policy"
    }
    assert {"allow-bing-fqdn", "alpine-example-com"} <= {
        entry["name"] for entry in report if entry["verdict"] == "admitted"
    }
