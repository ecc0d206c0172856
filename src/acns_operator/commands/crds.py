"""``acns crds``: write the CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy CRDs."""

from __future__ import annotations

from pathlib import Path

import click

from acns_operator.api.crd import crd_files


@click.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one file per CRD into this folder (created if missing). "
    "Without it, both CRDs go to stdout as one multi-document stream.",
)
def crds(output_dir: Path | None) -> None:
    """Generate the CRDs from the policy models (what `make crds` commits under crds/)."""
    files = crd_files()
    if output_dir is None:
        click.echo("".join(files[name] for name in sorted(files)), nl=False)
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(files.items()):
            (output_dir / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write CRDs to {output_dir}: {exc}") from None
    for name in sorted(files):
        click.echo(str(output_dir / name))
