"""``acns lint``: reports, JSON, exit codes, inputs, options, and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from acns_operator.cli import cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "policies"
BING = FIXTURES / "seeds" / "003-allow-bing-fqdn.yaml"
L7 = FIXTURES / "seeds" / "003-frontend-l7-policy.yaml"
NETPOL = FIXTURES / "seeds" / "003-kubernetes-network-policies.yaml"

NODE_LOCAL_BY_ADDRESS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns-to-cache, namespace: apps}
spec:
  endpointSelector: {}
  egress:
    - toCIDR: ["10.0.0.10/32"]
      toPorts: [{ports: [{port: "53", protocol: UDP}]}]
    - toFQDNs: [{matchName: db.apps.svc.corp.example}]
"""


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["lint", *args], input=stdin)


def as_json(result: Result) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def test_an_admitted_policy_exits_zero_and_shows_its_warnings() -> None:
    result = run(str(BING))
    assert result.exit_code == 0, result.output
    assert "CiliumNetworkPolicy allow-bing-fqdn: admitted (1 warning)" in result.output
    assert "warning: spec.egress[0].toPorts[0].rules.dns:" in result.output


def test_a_blocked_policy_exits_one_and_names_the_field() -> None:
    result = run(str(L7))
    assert result.exit_code == 1
    assert "default/frontend-l7-policy: blocked (1 error)" in result.output
    assert (
        "error: spec.egress[0].toPorts[0].rules.http: L7 http rules are not supported"
        in result.output
    )


def test_non_cilium_objects_are_skipped_and_reported_as_such() -> None:
    result = run(str(NETPOL))
    assert result.exit_code == 0
    assert result.output.count("is not a Cilium network policy") == 4
    assert "4 skipped" in result.output


def test_json_output_has_one_entry_per_object_with_the_documented_fields() -> None:
    result = run("--output", "json", str(BING), str(L7), str(NETPOL))
    assert result.exit_code == 1
    entries = as_json(result)
    assert [entry["verdict"] for entry in entries] == ["admitted", "blocked"] + ["skipped"] * 4
    blocked = entries[1]
    assert {key: blocked[key] for key in ("file", "document", "kind", "namespace", "name")} == {
        "file": str(L7),
        "document": 0,
        "kind": "CiliumNetworkPolicy",
        "namespace": "default",
        "name": "frontend-l7-policy",
    }
    (finding,) = blocked["findings"]
    assert finding["path"] == "spec.egress[0].toPorts[0].rules.http"
    assert finding["severity"] == "error"
    assert finding["message"]
    assert [entry["document"] for entry in entries[2:]] == [0, 1, 2, 3]


def test_folders_are_linted_recursively(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "bing.yml").write_text(BING.read_text())
    (tmp_path / "l7.json").write_text(json.dumps({"kind": "List", "items": [_load(L7)]}))
    (tmp_path / "README.md").write_text("# not a policy")
    entries = as_json(run("-o", "json", str(tmp_path)))
    assert [(Path(e["file"]).name, e["verdict"]) for e in entries] == [
        ("l7.json", "blocked"),
        ("bing.yml", "admitted"),
    ]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_stdin_is_read_with_a_dash() -> None:
    result = run("-o", "json", "-", stdin=L7.read_text())
    assert result.exit_code == 1
    assert as_json(result)[0]["file"] == "<stdin>"


def test_invalid_yaml_exits_two_naming_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: cilium.io/v2\nkind: [CiliumNetworkPolicy\nspec: {}\n")
    result = run(str(bad), str(BING))
    assert result.exit_code == 2
    assert f"{bad}:3:" in result.output
    assert "allow-bing-fqdn: admitted" in result.output, "other inputs are still linted"


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01\x02\xff\xfe binary",
        b"just some words",
        b"- a\n- list\n",
        b"{{{{",
        b"key: value\n\tbad: tab\n",
        b"\xef\xbb\xbf" + b"a: *undefined_alias\n",
        b"a: " + b"[" * 5000,
    ],
)
def test_garbage_input_exits_two_without_a_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(content)
    result = run(str(path))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert str(path) in result.output


def test_a_missing_path_exits_two() -> None:
    result = run("/nonexistent/policies.yaml")
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_a_mapping_without_kind_is_skipped() -> None:
    result = run("-", stdin="hello: world\n")
    assert result.exit_code == 0
    assert "skipped (no kind: not a Kubernetes object)" in result.output


def test_the_settings_options_change_the_verdict(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(NODE_LOCAL_BY_ADDRESS)
    assert run(str(path)).exit_code == 0
    blocked = run(
        "-o",
        "json",
        "--node-local-dns-address",
        "169.254.20.10",
        "--node-local-dns-address",
        "10.0.0.10",
        "--cluster-domain",
        "corp.example",
        str(path),
    )
    assert blocked.exit_code == 1
    rules = {f["rule"] for f in as_json(blocked)[0]["findings"]}
    assert {"aks.node-local-dns", "aks.service-name"} <= rules


def test_the_multilevel_prefix_can_be_blocked_from_the_command_line() -> None:
    warned = FIXTURES / "warned" / "multilevel-prefix.yaml"
    assert run(str(warned)).exit_code == 0
    assert run("--no-multilevel-prefix", str(warned)).exit_code == 1


def test_an_invalid_setting_is_a_usage_error() -> None:
    result = CliRunner(env={"ACNS_NODE_LOCAL_DNS_ADDRESSES": "not json"}).invoke(
        cli, ["lint", str(BING)]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_lint_requires_a_path() -> None:
    assert run().exit_code == 2
