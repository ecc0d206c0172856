"""`acns operator`: documented options, settings checks, configuration errors, the judge."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from acns_operator.cli import cli
from acns_operator.errors import ConfigurationError
from acns_operator.operator.runner import (
    DenialLogFilter,
    build_kopf_settings,
    check_settings,
    install_log_filters,
)
from acns_operator.operator.validation import make_judge
from acns_operator.settings import OperatorSettings, PolicySettings


def test_the_help_documents_how_to_run_locally_with_a_webhook_host_and_port() -> None:
    result = CliRunner().invoke(cli, ["operator", "--help"])
    assert result.exit_code == 0
    for option in (
        "--kubeconfig",
        "--webhook-host",
        "--webhook-port",
        "--webhook-url",
        "--webhook-service",
        "--failure-policy",
        "--tls-source",
        "--namespace",
        "--leader-election",
        "--health-port",
    ):
        assert option in result.output
    assert "--webhook-host 127.0.0.1 --webhook-port 9443" in result.output


def test_an_unreadable_kubeconfig_exits_with_code_2_and_says_why(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["operator", "--kubeconfig", str(tmp_path / "nope"), "--webhook-host", "127.0.0.1"],
    )
    assert result.exit_code == 2
    assert "configuration error: cannot read the kubeconfig" in result.output


def test_an_invalid_option_value_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["operator", "--webhook-port", "70000"])
    assert result.exit_code == 2
    assert "webhook_port" in result.output


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"lease_renew_deadline": 20}, "lease_renew_deadline"),
        ({"lease_retry_period": 12}, "lease_retry_period"),
        ({"tls_renew_before": 400 * 86400.0}, "tls_renew_before"),
        ({"webhook_host": "0.0.0.0"}, "cannot call"),
    ],
)
def test_settings_that_would_misbehave_are_refused_before_start(
    changes: dict[str, Any], complaint: str
) -> None:
    settings = OperatorSettings(**({"webhook_host": "127.0.0.1"} | changes))
    with pytest.raises(ConfigurationError, match=complaint):
        check_settings(settings)


def test_kopf_runs_standalone_without_posting_its_own_events_or_managing_webhooks() -> None:
    kopf_settings = build_kopf_settings(OperatorSettings(), None)
    assert kopf_settings.peering.standalone
    assert not kopf_settings.posting.enabled
    assert kopf_settings.admission.managed is None


HTTP_POLICY: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "l7", "namespace": "default"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "frontend"}},
        "egress": [
            {
                "toEndpoints": [{"matchLabels": {"app": "backend"}}],
                "toPorts": [
                    {
                        "ports": [{"port": "8080", "protocol": "TCP"}],
                        "rules": {"http": [{"method": "GET", "path": "/api"}]},
                    }
                ],
            }
        ],
    },
}


def test_the_operator_judges_with_the_policy_engine_and_names_the_field() -> None:
    judgement = make_judge(PolicySettings())(HTTP_POLICY)
    assert judgement.verdict == "blocked"
    assert any(issue.path.endswith("rules.http") for issue in judgement.errors)


def test_an_object_that_does_not_parse_is_blocked_with_the_parse_error() -> None:
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "spec": {"egress": 7}}
    judgement = make_judge(PolicySettings())(body)
    assert judgement.verdict == "blocked"
    assert any("egress" in issue.describe() for issue in judgement.errors)


def test_kopfs_error_line_for_each_denial_is_filtered_but_real_errors_are_kept() -> None:
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.ERROR, "x", 1, message, None, None)

    keep = DenialLogFilter()
    assert not keep.filter(record("Webhook 'validate-cnp' failed permanently: blocked"))
    assert keep.filter(record("Handler 'observe-ciliumnetworkpolicies' failed with an exception"))
    install_log_filters()
    install_log_filters()
    filters = logging.getLogger("kopf.objects").filters
    assert sum(isinstance(f, DenialLogFilter) for f in filters) == 1
