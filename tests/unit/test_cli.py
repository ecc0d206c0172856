"""The `acns` entry point itself."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from acns_operator.cli import cli, main


def test_help_lists_the_available_subcommands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_usage_lines_say_kubectl_acns_when_run_as_a_kubectl_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/kubectl-acns", "--help"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    assert "Usage: kubectl acns" in capsys.readouterr().out
