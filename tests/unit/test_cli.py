"""The `acns` entry point itself."""

from __future__ import annotations

from click.testing import CliRunner

from acns_operator.cli import cli


def test_help_lists_the_available_subcommands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output
