"""Status, Events, restarts, leader election and TLS, against the real API server.

Policies here are mostly stored *without* the webhook (as when it is not installed,
or ``failurePolicy: Ignore`` lets them through): the operator must still mark blocked
ones ``Valid=False`` with a Warning Event, exactly once, across restarts. Every
operator runs as the real ``acns operator`` command under the chart's RBAC.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from cryptography import x509

from acns_operator.local.controlplane import ControlPlane, free_port
from acns_operator.local.kube import ApiClient, Kubectl, create_namespace
from acns_operator.operator.certs import renew
from acns_operator.operator.process import OperatorProcess
from acns_operator.operator.status import to_condition_message
from acns_operator.operator.validation import make_judge
from acns_operator.settings import PolicySettings
from tests.integration.operator_support import (
    FIXTURES,
    INDEX,
    SERVICE_ACCOUNT,
    TLS_SECRET,
    VWC,
    OperatorEnv,
    documents,
    events_about,
    get_or_none,
    make_operator_env,
    policy_path,
    relocate,
    valid_condition,
    wait_condition,
    wait_for,
    wait_synced,
)

pytestmark = [pytest.mark.integration, pytest.mark.controlplane]

JUDGE = make_judge(PolicySettings())
STORABLE = [
    doc
    for entry in INDEX
    if entry.get("crd") == "accepted"
    for doc in documents(FIXTURES / entry["file"])
]
GOOD = documents(FIXTURES / "admitted" / "fqdn-match-name.yaml")[0]
BAD = documents(FIXTURES / "blocked" / "to-services.yaml")[0]
WORSE = documents(FIXTURES / "blocked" / "l7-kafka.yaml")[0]
FAST_LEASE = {
    "ACNS_OPERATOR_LEASE_DURATION": "3",
    "ACNS_OPERATOR_LEASE_RENEW_DEADLINE": "2",
    "ACNS_OPERATOR_LEASE_RETRY_PERIOD": "0.5",
}


@pytest.fixture(scope="module")
def operator_env(
    control_plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> OperatorEnv:
    return make_operator_env(control_plane, kubectl, tmp_path_factory.mktemp("operator"))


def stop_cleanly(process: OperatorProcess) -> None:
    """Stop, then fail on anything the operator logged that a user would worry about."""
    process.stop()
    log = process.log()
    assert "Traceback" not in log, process.log_tail()
    assert "Forbidden" not in log, process.log_tail()
    assert " 403" not in log, process.log_tail()


@contextmanager
def running(process: OperatorProcess) -> Iterator[OperatorProcess]:
    """Start the operator, wait until it is ready, and stop it cleanly afterwards."""
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        stop_cleanly(process)


@pytest.fixture
def operator(operator_env: OperatorEnv) -> Iterator[OperatorProcess]:
    """A status-writing operator without webhook (policies go straight in)."""
    process = operator_env.process(name="status")
    with running(process):
        yield process


def apply(kubectl: Kubectl, doc: dict[str, Any]) -> None:
    kubectl.apply(yaml.safe_dump(doc))


def test_blocked_policies_stored_without_the_webhook_get_valid_false_and_one_warning_event(
    operator: OperatorProcess, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    moved = [relocate(doc, k8s_namespace) for doc in STORABLE]
    for doc in moved:
        apply(kubectl, doc)
    for doc in moved:
        judgement = JUDGE(doc)
        status = "True" if judgement.admitted else "False"
        condition = wait_condition(k8s_api, doc, status, to_condition_message(judgement))
        assert "reason" not in condition
        if judgement.admitted:
            assert events_about(k8s_api, doc) == []
            continue
        [event] = wait_for("the Warning Event", functools.partial(events_about, k8s_api, doc))
        assert event["type"] == "Warning"
        assert event["reason"] == "PolicyNotEnforced"
        for issue in judgement.errors:
            assert issue.path in event["message"]
    namespaced = [doc for doc in moved if doc["kind"] == "CiliumNetworkPolicy"]
    blocked = sum(1 for doc in namespaced if not JUDGE(doc).admitted)
    assert blocked >= 20
    assert operator.metric("acns_policies", namespace=k8s_namespace, verdict="blocked") == blocked


def test_a_restarted_operator_writes_nothing_and_posts_no_duplicate_events(
    operator_env: OperatorEnv, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    moved = [relocate(doc, k8s_namespace) for doc in (GOOD, BAD, WORSE)]
    first = operator_env.process(name="before-restart")
    with running(first):
        for doc in moved:
            apply(kubectl, doc)
        for doc in moved:
            wait_condition(k8s_api, doc, "True" if JUDGE(doc).admitted else "False")
        wait_for("both Events", lambda: all(events_about(k8s_api, d) for d in moved[1:]))
        wait_synced(first, k8s_api)
    versions = {
        policy_path(d): k8s_api.get(policy_path(d))["metadata"]["resourceVersion"] for d in moved
    }
    events = {policy_path(d): len(events_about(k8s_api, d)) for d in moved}
    second = operator_env.process(name="after-restart")
    with running(second):
        wait_synced(second, k8s_api)
        time.sleep(2)  # anything it would (wrongly) write would show by now
        assert second.metric("acns_status_writes_total") == 0
        assert second.metric("acns_events_posted_total") == 0
        for doc in moved:
            assert (
                k8s_api.get(policy_path(doc))["metadata"]["resourceVersion"]
                == versions[policy_path(doc)]
            )
            assert len(events_about(k8s_api, doc)) == events[policy_path(doc)]
    assert events == {policy_path(moved[0]): 0, policy_path(moved[1]): 1, policy_path(moved[2]): 1}


def test_valid_to_invalid_to_valid_moves_the_transition_time_only_on_flips(
    operator: OperatorProcess, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    good = relocate(GOOD, k8s_namespace)
    bad = dict(good, spec=BAD["spec"])
    worse = dict(good, spec=WORSE["spec"])
    stamps = []
    for doc, status in ((good, "True"), (bad, "False"), (worse, "False"), (good, "True")):
        time.sleep(1.1)  # lastTransitionTime has second resolution
        apply(kubectl, doc)
        condition = wait_condition(k8s_api, doc, status, to_condition_message(JUDGE(doc)))
        stamps.append(condition["lastTransitionTime"])
    assert stamps[0] < stamps[1]
    assert stamps[1] == stamps[2], "a new message without a flip must keep the time"
    assert stamps[2] < stamps[3]
    messages = [event["message"] for event in events_about(k8s_api, good)]
    assert len(messages) == 2  # one per distinct invalid state
    assert any("toServices" in m for m in messages)
    assert any("kafka" in m for m in messages)


def test_a_deleted_policy_leaves_the_gauge_and_a_recreated_one_is_judged_again(
    operator: OperatorProcess, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    bad = relocate(BAD, k8s_namespace)
    apply(kubectl, bad)
    wait_condition(k8s_api, bad, "False")
    kubectl.run("delete", "-f", "-", stdin=yaml.safe_dump(bad)).check()
    wait_for(
        "the gauge to drop the policy",
        lambda: operator.metric("acns_policies", namespace=k8s_namespace) == 0,
    )
    apply(kubectl, bad)
    wait_condition(k8s_api, bad, "False")
    assert len(events_about(k8s_api, bad)) == 1  # a new object, a new Event
    assert operator.metric("acns_reconcile_errors_total") == 0


def _served_certificate(port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _secret(api: ApiClient, env: OperatorEnv) -> dict[str, bytes]:
    data = api.get(f"/api/v1/namespaces/{env.namespace}/secrets/{TLS_SECRET}")["data"]
    return {key: base64.b64decode(value) for key, value in data.items()}


def _review(port: int, ca: bytes, obj: dict[str, Any]) -> dict[str, Any]:
    """POST one AdmissionReview straight to a replica; the review's response part."""
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "direct",
            "kind": {"group": "cilium.io", "version": "v2", "kind": obj["kind"]},
            "resource": {
                "group": "cilium.io",
                "version": "v2",
                "resource": "ciliumnetworkpolicies",
            },
            "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": {"username": "direct-test"},
            "object": obj,
        },
    }
    context = ssl.create_default_context(cadata=ca.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/validate-cnp", json.dumps(review), headers)
        answer: dict[str, Any] = json.loads(connection.getresponse().read())["response"]
    finally:
        connection.close()
    return answer


def _denied(kubectl: Kubectl, namespace: str) -> bool:
    probe = yaml.safe_dump(relocate(BAD, namespace))
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=probe)
    return "denied the request" in result.stderr


def test_two_replicas_elect_one_writer_both_serve_and_the_other_takes_over_after_a_crash(
    control_plane: ControlPlane,
    k8s_api: ApiClient,
    kubectl: Kubectl,
    k8s_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = make_operator_env(control_plane, kubectl, tmp_path_factory.mktemp("ha"))
    port_a, port_b = free_port(), free_port()
    shared = ["--webhook-url", f"https://127.0.0.1:{port_a}", "--failure-policy", "Ignore"]
    a = env.process(*shared, name="replica-a", webhook_port=port_a, env=FAST_LEASE)
    b = env.process(*shared, name="replica-b", webhook_port=port_b, env=FAST_LEASE)
    a.start()
    try:
        a.wait_ready()
        b.start()
        b.wait_ready()
        wait_for("one leader", lambda: a.metric("acns_operator_leader") == 1)
        assert b.metric("acns_operator_leader") == 0
        # Both replicas serve the same certificate (one CA in the shared Secret) and
        # answer reviews: in a cluster the Service spreads them over both.
        assert _served_certificate(port_a) == _served_certificate(port_b)
        ca = _secret(k8s_api, env)["ca.crt"]
        for port in (port_a, port_b):
            assert _review(port, ca, relocate(BAD, k8s_namespace))["allowed"] is False
        wait_for("the webhook", lambda: _denied(kubectl, k8s_namespace))
        good = relocate(GOOD, k8s_namespace)
        apply(kubectl, good)
        wait_condition(k8s_api, good, "True")
        assert b.metric("acns_status_writes_total") == 0, "the follower wrote status"
        a.kill()
        crashed = time.monotonic()
        # failurePolicy Ignore: with the registered replica gone, writes still go in.
        bad = relocate(BAD, k8s_namespace)
        apply(kubectl, bad)
        wait_condition(k8s_api, bad, "False", timeout=20)
        takeover = time.monotonic() - crashed
        print(f"replica-b took over and wrote status {takeover:.1f} s after replica-a crashed")
        assert b.metric("acns_operator_leader") == 1
        assert len(events_about(k8s_api, bad)) == 1
        lease = k8s_api.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{env.namespace}/leases/acns-operator"
        )
        assert lease["spec"]["holderIdentity"] == "replica-b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        a.kill()
        stop_cleanly(b)
    assert get_or_none(k8s_api, VWC) is None


def test_the_serving_certificate_is_renewed_and_admission_keeps_working(
    control_plane: ControlPlane,
    k8s_api: ApiClient,
    kubectl: Kubectl,
    k8s_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = make_operator_env(control_plane, kubectl, tmp_path_factory.mktemp("rotation"))
    port = free_port()
    short = {
        "ACNS_OPERATOR_TLS_CERTIFICATE_VALIDITY": "30",
        "ACNS_OPERATOR_TLS_RENEW_BEFORE": "24",
        "ACNS_OPERATOR_TLS_CHECK_INTERVAL": "1",
    }
    process = env.process(name="rotating", webhook_port=port, env=short)
    with running(process):
        wait_for("the webhook", lambda: _denied(kubectl, k8s_namespace))
        first = _secret(k8s_api, env)
        bundle = k8s_api.get(VWC)["webhooks"][0]["clientConfig"]["caBundle"]

        def renewed_secret() -> dict[str, bytes] | None:
            data = _secret(k8s_api, env)
            return data if data["tls.crt"] != first["tls.crt"] else None

        def served_is_stored() -> x509.Certificate | None:
            served = _served_certificate(port)
            stored = x509.load_pem_x509_certificate(_secret(k8s_api, env)["tls.crt"])
            return served if served == stored else None

        renewed = wait_for("a renewed certificate", renewed_secret, timeout=30)
        assert renewed["ca.crt"] == first["ca.crt"]
        served = wait_for("the new certificate to be served", served_is_stored)
        assert served != x509.load_pem_x509_certificate(first["tls.crt"])
        assert k8s_api.get(VWC)["webhooks"][0]["clientConfig"]["caBundle"] == bundle
        assert _denied(kubectl, k8s_namespace)
        assert process.metric("acns_webhook_certificate_expiry_timestamp_seconds") > time.time()


def test_a_certificate_from_a_secret_is_served_registered_and_reloaded_when_renewed(
    control_plane: ControlPlane,
    k8s_api: ApiClient,
    kubectl: Kubectl,
    k8s_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = make_operator_env(control_plane, kubectl, tmp_path_factory.mktemp("certmanager"))
    path = f"/api/v1/namespaces/{env.namespace}/secrets"

    def issue(now: datetime) -> dict[str, str]:
        # What cert-manager writes: certificate, key and the issuing CA, no CA key.
        material = renew(
            None,
            ["127.0.0.1"],
            now,
            certificate_validity=timedelta(days=90),
            ca_validity=timedelta(days=365),
            renew_before=timedelta(days=30),
        )
        assert material is not None
        data = material.to_secret_data()
        del data["ca.key"]
        return {key: base64.b64encode(value).decode() for key, value in data.items()}

    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": TLS_SECRET, "namespace": env.namespace},
        "data": issue(datetime.now(UTC)),
    }
    k8s_api.create(path, secret)
    process = env.process(
        "--tls-source",
        "secret",
        name="cert-manager",
        webhook_port=free_port(),
        env={"ACNS_OPERATOR_TLS_CHECK_INTERVAL": "1"},
    )
    with running(process):
        wait_for("the webhook", lambda: _denied(kubectl, k8s_namespace))
        registered = k8s_api.get(VWC)["webhooks"][0]["clientConfig"]["caBundle"]
        assert registered == secret["data"]["ca.crt"]
        # cert-manager renews with a new CA: the operator reloads and re-registers.
        stored = k8s_api.get(f"{path}/{TLS_SECRET}")
        stored["data"] = issue(datetime.now(UTC))
        k8s_api.replace(f"{path}/{TLS_SECRET}", stored)
        wait_for(
            "the new CA to be registered",
            lambda: (
                k8s_api.get(VWC)["webhooks"][0]["clientConfig"]["caBundle"]
                == stored["data"]["ca.crt"]
            ),
        )
        wait_for("admission with the new certificate", lambda: _denied(kubectl, k8s_namespace))
        assert _secret(k8s_api, env).keys() == {"tls.crt", "tls.key", "ca.crt"}  # never written


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "ciliumnetworkpolicies.cilium.io --subresource=status", True),
        ("patch", "ciliumclusterwidenetworkpolicies.cilium.io --subresource=status", True),
        ("watch", "ciliumclusterwidenetworkpolicies.cilium.io", True),
        ("create", "events", True),
        ("update", "ciliumnetworkpolicies.cilium.io", False),
        ("patch", "ciliumnetworkpolicies.cilium.io", False),
        ("delete", "ciliumnetworkpolicies.cilium.io", False),
        ("list", "secrets", False),
        ("create", "pods", False),
        ("update", "validatingwebhookconfigurations.admissionregistration.k8s.io/other", False),
    ],
)
def test_the_operator_identity_has_only_what_the_chart_grants(
    operator_env: OperatorEnv, kubectl: Kubectl, verb: str, resource: str, allowed: bool
) -> None:
    who = f"system:serviceaccount:{operator_env.namespace}:{SERVICE_ACCOUNT}"
    result = kubectl.run(
        "auth", "can-i", verb, *resource.split(), "--all-namespaces", f"--as={who}"
    )
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr


def test_the_operator_keeps_its_secret_and_lease_access_to_its_own_namespace(
    operator_env: OperatorEnv, kubectl: Kubectl, k8s_namespace: str
) -> None:
    who = f"system:serviceaccount:{operator_env.namespace}:{SERVICE_ACCOUNT}"
    own = ["-n", operator_env.namespace, f"--as={who}"]
    assert (
        kubectl.run("auth", "can-i", "get", f"secrets/{TLS_SECRET}", *own).stdout.strip() == "yes"
    )
    assert kubectl.run("auth", "can-i", "get", "secrets/other", *own).stdout.strip() == "no"
    assert (
        kubectl.run("auth", "can-i", "update", "leases/acns-operator", *own).stdout.strip() == "yes"
    )
    elsewhere = ["-n", k8s_namespace, f"--as={who}"]
    assert kubectl.run("auth", "can-i", "create", "leases", *elsewhere).stdout.strip() == "no"


def test_an_operator_limited_to_some_namespaces_admits_and_writes_only_there(
    operator_env: OperatorEnv, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    outside = create_namespace(k8s_api, prefix="not-watched")
    process = operator_env.process(
        "--namespace", k8s_namespace, name="namespaced", webhook_port=free_port()
    )
    with running(process):
        wait_for("the webhook", lambda: _denied(kubectl, k8s_namespace))
        assert _denied(kubectl, k8s_namespace)
        assert not _denied(kubectl, outside)  # the namespace selector skips it
        inside_good = relocate(GOOD, k8s_namespace)
        outside_bad = relocate(BAD, outside)
        apply(kubectl, inside_good)
        apply(kubectl, outside_bad)
        wait_condition(k8s_api, inside_good, "True")
        time.sleep(1)
        assert valid_condition(k8s_api.get(policy_path(outside_bad))) is None
        assert process.metric("acns_policies", namespace=outside) == 0
        assert process.metric("acns_policies", namespace=k8s_namespace) == 1


def test_a_deleted_webhook_configuration_is_registered_again(
    operator_env: OperatorEnv, k8s_api: ApiClient, kubectl: Kubectl, k8s_namespace: str
) -> None:
    process = operator_env.process(
        name="re-register",
        webhook_port=free_port(),
        env={"ACNS_OPERATOR_TLS_CHECK_INTERVAL": "1"},
    )
    with running(process):
        first = wait_for("the registration", lambda: get_or_none(k8s_api, VWC))
        k8s_api.delete(VWC)
        again = wait_for("the registration to come back", lambda: get_or_none(k8s_api, VWC))
        assert again["metadata"]["uid"] != first["metadata"]["uid"]
        wait_for("the webhook", lambda: _denied(kubectl, k8s_namespace))
    assert get_or_none(k8s_api, VWC) is None
