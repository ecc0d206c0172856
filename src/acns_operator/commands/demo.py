"""``acns demo``: the end-to-end demonstration (not yet available)."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Run the end-to-end demo on a local control plane and network namespaces."""
    click.echo(
        "acns demo is not yet available: it lands with the operator, proxy and agent issues."
    )
