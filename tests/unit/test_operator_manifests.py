"""The ValidatingWebhookConfiguration and where it points."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from acns_operator.errors import ConfigurationError
from acns_operator.operator.manifests import (
    CCNP,
    CNP,
    build_validating_webhook_configuration,
    certificate_hosts,
    webhook_base_url,
    webhooks_differ,
)
from acns_operator.settings import OperatorSettings

CA = b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"


def _local(**changes: Any) -> OperatorSettings:
    return OperatorSettings(webhook_host="127.0.0.1", webhook_port=19443, **changes)


def test_a_local_run_registers_the_listening_address_as_url() -> None:
    config = build_validating_webhook_configuration(_local(), CA)
    urls = [w["clientConfig"]["url"] for w in config["webhooks"]]
    assert urls == ["https://127.0.0.1:19443/validate-cnp", "https://127.0.0.1:19443/validate-ccnp"]
    assert base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]) == CA


def test_an_explicit_url_wins_over_the_listening_address() -> None:
    settings = _local(webhook_url="https://webhook.example:8443/")
    assert webhook_base_url(settings) == "https://webhook.example:8443"
    assert certificate_hosts(settings)[0] == "webhook.example"


def test_in_a_cluster_the_service_is_registered_and_covered_by_the_certificate() -> None:
    settings = OperatorSettings(webhook_service_name="acns-webhook", operator_namespace="acns")
    config = build_validating_webhook_configuration(settings, CA)
    assert config["webhooks"][1]["clientConfig"]["service"] == {
        "name": "acns-webhook",
        "namespace": "acns",
        "port": 443,
        "path": "/validate-ccnp",
    }
    assert "acns-webhook.acns.svc" in certificate_hosts(settings)
    assert "acns-webhook.acns.svc.cluster.local" in certificate_hosts(settings)


def test_listening_on_all_interfaces_without_a_url_or_service_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cannot call"):
        webhook_base_url(OperatorSettings())


def test_both_kinds_are_admitted_on_create_and_update_with_the_configured_failure_policy() -> None:
    config = build_validating_webhook_configuration(_local(failure_policy="Ignore"), CA)
    assert [w["name"] for w in config["webhooks"]] == [CNP.webhook_name, CCNP.webhook_name]
    for webhook, scope in zip(config["webhooks"], ["Namespaced", "Cluster"], strict=True):
        assert webhook["failurePolicy"] == "Ignore"
        assert webhook["sideEffects"] == "None"
        assert webhook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert webhook["rules"][0]["scope"] == scope
    assert config["webhooks"][0]["rules"][0]["resources"] == ["ciliumnetworkpolicies"]


def test_the_default_failure_policy_is_fail() -> None:
    config = build_validating_webhook_configuration(_local(), CA)
    assert {w["failurePolicy"] for w in config["webhooks"]} == {"Fail"}


def test_configured_namespaces_select_only_the_namespaced_kind() -> None:
    config = build_validating_webhook_configuration(_local(namespaces=["b", "a"]), CA)
    selector = config["webhooks"][0]["namespaceSelector"]
    assert selector["matchExpressions"][0]["values"] == ["a", "b"]
    assert "namespaceSelector" not in config["webhooks"][1]


def test_defaults_filled_in_by_the_api_server_do_not_count_as_a_difference() -> None:
    desired = build_validating_webhook_configuration(_local(), CA)
    stored = copy.deepcopy(desired)
    stored["metadata"]["resourceVersion"] = "5"
    for webhook in stored["webhooks"]:
        webhook.update(namespaceSelector={}, objectSelector={}, reinvocationPolicy="Never")
    assert not webhooks_differ(stored, desired)


def test_a_new_ca_or_failure_policy_is_a_difference() -> None:
    desired = build_validating_webhook_configuration(_local(), CA)
    assert webhooks_differ(desired, build_validating_webhook_configuration(_local(), CA + b"x"))
    ignore = build_validating_webhook_configuration(_local(failure_policy="Ignore"), CA)
    assert webhooks_differ(desired, ignore)


def test_a_stale_namespace_selector_is_a_difference() -> None:
    desired = build_validating_webhook_configuration(_local(), CA)
    stored = build_validating_webhook_configuration(_local(namespaces=["a"]), CA)
    assert webhooks_differ(stored, desired)


def test_object_paths_follow_the_scope_of_each_kind() -> None:
    assert CNP.path("p", "ns", "status") == (
        "/apis/cilium.io/v2/namespaces/ns/ciliumnetworkpolicies/p/status"
    )
    assert CCNP.path("p") == "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies/p"
    with pytest.raises(ValueError, match="namespace"):
        CNP.path("p")
