"""The ``acns`` command (also installed as ``kubectl-acns`` for ``kubectl acns``).

Subcommands live in :mod:`acns_operator.commands`, one module each, loaded only when
invoked so that ``acns lint`` never pays for importing the operator or the proxy.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from acns_operator import __version__

# subcommand name -> "module:attribute" of a click command under acns_operator.commands
SUBCOMMANDS: dict[str, str] = {
    "lint": "lint:lint",
    "fqdn": "fqdn:fqdn",
    "crds": "crds:crds",
    "explain": "explain:explain",
    "operator": "operator:operator",
    "agent": "agent:agent",
    "dnsproxy": "dnsproxy:dnsproxy",
    "demo": "demo:demo",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(f"acns_operator.commands.{module_name}")
        except ModuleNotFoundError as exc:
            # Only a subcommand that is not written yet may be missing; a missing
            # third-party module is a real error and must surface.
            if exc.name == f"acns_operator.commands.{module_name}":
                return None
            raise
        command: Any = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="acns")
def cli() -> None:
    """FQDN egress filtering for Kubernetes, the ACNS way."""


def main() -> None:
    """Entry point of the console scripts.

    Invoked as ``kubectl-acns`` (kubectl's plugin lookup), usage lines read
    ``kubectl acns ...``, which is what the user typed.
    """
    invoked_as = os.path.basename(sys.argv[0]) if sys.argv else "acns"
    cli(prog_name="kubectl acns" if invoked_as == "kubectl-acns" else "acns")
