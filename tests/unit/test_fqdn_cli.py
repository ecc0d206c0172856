"""`acns fqdn match`: what a selector covers, from the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from acns_operator.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["fqdn", *args])
    return result.exit_code, result.stdout, result.stderr


def test_match_prints_one_tab_separated_verdict_per_query() -> None:
    code, out, _ = run("match", "--pattern", "*.cilium.io", "app.cilium.io", "cilium.io")
    assert code == 0
    assert out.splitlines() == ["app.cilium.io\tmatch", "cilium.io\tno-match"]


def test_match_with_a_name_is_case_insensitive_and_ignores_the_trailing_dot() -> None:
    code, out, _ = run("match", "--name", "Cilium.IO", "cilium.io.", "www.cilium.io")
    assert code == 0
    assert out.splitlines() == ["cilium.io.\tmatch", "www.cilium.io\tno-match"]


def test_match_json_output_is_a_list_with_the_normalised_name() -> None:
    code, out, _ = run("match", "--pattern", "**.cilium.io", "--output", "json", "A.B.Cilium.io")
    assert code == 0
    assert json.loads(out) == [{"query": "A.B.Cilium.io", "fqdn": "a.b.cilium.io.", "match": True}]


def test_match_can_use_the_rules_before_cilium_1_19() -> None:
    code, out, _ = run("match", "--pre-1.19", "--pattern", "**.cilium.io", "a.b.cilium.io")
    assert code == 0
    assert out.splitlines() == ["a.b.cilium.io\tno-match"]


def test_a_multilevel_prefix_gets_a_note_on_stderr_only() -> None:
    code, out, err = run("match", "--pattern", "**.cilium.io", "a.cilium.io")
    assert code == 0
    assert "1.19" in err
    assert out.splitlines() == ["a.cilium.io\tmatch"]


def test_a_match_all_pattern_is_flagged_as_blocked_on_aks() -> None:
    code, _, err = run("match", "--pattern", "**", "a.io")
    assert code == 0
    assert "AKS blocks" in err


def test_an_invalid_pattern_is_a_usage_error_naming_the_character() -> None:
    code, _, err = run("match", "--pattern", "*.cilium.io/x", "a")
    assert code == 2
    assert "'/' at position 12" in err
    assert "Traceback" not in err


def test_an_invalid_name_is_a_usage_error_pointing_at_match_pattern_for_wildcards() -> None:
    code, _, err = run("match", "--name", "*.cilium.io", "a")
    assert code == 2
    assert "--name" in err
    assert "use matchPattern" in err


def test_name_and_pattern_together_are_a_usage_error() -> None:
    code, _, err = run("match", "--name", "a.io", "--pattern", "*.io", "a.io")
    assert code == 2
    assert "exactly one of --name or --pattern" in err


def test_neither_name_nor_pattern_is_a_usage_error() -> None:
    code, _, err = run("match", "a.io")
    assert code == 2
    assert "exactly one of --name or --pattern" in err


def test_at_least_one_query_is_required() -> None:
    code, _, err = run("match", "--pattern", "*.io")
    assert code == 2
    assert "QUERY" in err
