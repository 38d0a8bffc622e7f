"""``chase-deploy inspect``: per-layer widths, sparsity and FLOPs of a checkpoint or ONNX model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def command(path: Path, as_json: bool) -> None:
    """Show each Conv/Linear layer: shape before/after slimming, kept channels, parameter and
    channel sparsity, FLOPs (the paper's Table 15 view).

    \b
      chase-deploy inspect runs/quickstart/final.pt
      chase-deploy inspect slim.onnx --json > layers.json

    A checkpoint is exported and cut with its channel plan; an ONNX file shows what its zero
    rows and columns would allow.
    """
    import json

    from chase_deploy.inspect import inspect_path
    from chase_deploy.layer_table import format_table
    from train.errors import BadInput

    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    report = inspect_path(path)
    click.echo(json.dumps(report, indent=2) if as_json else format_table(report))
