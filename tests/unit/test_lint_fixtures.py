"""Every policy fixture (the seeds' policies and the support table) gets its recorded verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from acns_operator.commands.lint import lint_paths
from acns_operator.settings import PolicySettings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "policies"
INDEX: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "index.yaml").read_text())


def test_every_fixture_file_is_listed_in_the_index() -> None:
    on_disk = {
        str(path.relative_to(FIXTURES))
        for path in FIXTURES.rglob("*.yaml")
        if path.name != "index.yaml"
    }
    assert on_disk == {entry["file"] for entry in INDEX}


@pytest.mark.parametrize("entry", INDEX, ids=[entry["file"] for entry in INDEX])
def test_a_fixture_gets_the_verdict_and_findings_recorded_in_the_index(
    entry: dict[str, Any],
) -> None:
    results = lint_paths([str(FIXTURES / entry["file"])], PolicySettings())
    assert results, "the fixture holds no object"
    assert {result.outcome for result in results} == {entry["verdict"]}
    if "findings" in entry:
        assert len(results) == 1
        found = {(f.severity, f.rule, f.path) for f in results[0].findings}
        expected = {(f["severity"], f["rule"], f["path"]) for f in entry["findings"]}
        assert found == expected


def test_the_seed_fixtures_cover_every_seed_verdict_the_spec_names() -> None:
    verdicts = {entry["file"]: entry["verdict"] for entry in INDEX}
    # The seeds' L7 HTTP example is blocked; their FQDN examples and the Alpine/musl
    # pattern list are admitted; plain NetworkPolicies are skipped.
    assert verdicts["seeds/003-frontend-l7-policy.yaml"] == "blocked"
    assert verdicts["seeds/003-allow-bing-fqdn.yaml"] == "admitted"
    assert verdicts["seeds/004-sleep-network-policy.yaml"] == "admitted"
    assert verdicts["seeds/003-backend-payments-fqdn.yaml"] == "admitted"
    assert verdicts["seeds/001-alpine-musl-dns-patterns.yaml"] == "admitted"
    assert verdicts["seeds/003-kubernetes-network-policies.yaml"] == "skipped"


def test_fixtures_in_the_admitted_folder_have_no_findings_and_warned_ones_only_warnings() -> None:
    for entry in INDEX:
        folder = entry["file"].split("/")[0]
        if folder == "admitted":
            assert entry["findings"] == [], entry["file"]
        if folder == "warned":
            severities = {finding["severity"] for finding in entry["findings"]}
            assert severities == {"warning"}, entry["file"]
        if folder == "blocked":
            assert entry["verdict"] == "blocked", entry["file"]
