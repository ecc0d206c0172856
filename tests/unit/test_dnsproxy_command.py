"""``acns dnsproxy``: options, standalone mode and configuration errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from acns_operator.cli import cli
from acns_operator.dnsproxy import rules
from acns_operator.dnsproxy.decision import Verdict, decide


def test_the_help_shows_the_standalone_example_and_the_main_options() -> None:
    result = CliRunner().invoke(cli, ["dnsproxy", "--help"])
    assert result.exit_code == 0
    assert "--rules-file" in result.output
    assert "acns dnsproxy --rules-file snapshot.json --upstream 127.0.0.1:5353" in result.output


def test_the_helps_smallest_snapshot_loads_and_allows_one_label_of_its_pattern(
    tmp_path: Path,
) -> None:
    output = CliRunner().invoke(cli, ["dnsproxy", "--help"]).output
    start = output.index('{"format"')
    example = output[start : output.index("Options:", start)]
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(json.loads(example)))
    ruleset = rules.compile_snapshot(rules.load_snapshot(path))
    allowed = decide(ruleset, "10.244.1.5", "10.244.250.10", 53, 17, "api.example.test.")
    denied = decide(ruleset, "10.244.1.5", "10.244.250.10", 53, 17, "a.b.example.test.")
    assert (allowed.verdict, denied.verdict) == (Verdict.ALLOWED, Verdict.DENIED)


def test_standalone_mode_without_its_rules_file_exits_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = CliRunner().invoke(
        cli,
        [
            "dnsproxy",
            "--rules-file",
            str(missing),
            "--upstream",
            "127.0.0.1:5353",
            "--metrics-port",
            "0",
        ],
    )
    assert result.exit_code == 2
    assert f"standalone mode needs a rules file; {missing} does not exist" in result.output


def test_a_malformed_upstream_or_snapshot_exits_with_a_clear_message(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text('{"format": "acns-dnsproxy-snapshot/v1", "endpoints": [{"ips": []}]}')
    bad_upstream = CliRunner().invoke(
        cli, ["dnsproxy", "--rules-file", str(snapshot), "--upstream", "dns.example:53"]
    )
    snapshot.write_text("{not json")
    bad_snapshot = CliRunner().invoke(
        cli,
        [
            "dnsproxy",
            "--rules-file",
            str(snapshot),
            "--upstream",
            "127.0.0.1:5353",
            "--metrics-port",
            "0",
        ],
    )
    assert bad_upstream.exit_code == 2
    assert "not an IP address: 'dns.example'" in bad_upstream.output
    assert bad_snapshot.exit_code == 2
    assert "invalid snapshot" in bad_snapshot.output
