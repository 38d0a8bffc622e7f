"""``chase-deploy inspect``: per-layer widths, sparsity and FLOPs of a checkpoint or ONNX model;
the channel groups of a recipe or checkpoint."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def command(path: Path, as_json: bool) -> None:
    """Show each Conv/Linear layer: shape before/after slimming, kept channels, parameter and
    channel sparsity, FLOPs (the paper's Table 15 view); for a recipe or a checkpoint, also the
    channel groups Chase prunes and every layer kept whole, with the reason.

    \b
      chase-deploy inspect recipes/quickstart.yaml          # the groups the trainer would prune
      chase-deploy inspect runs/quickstart/final.pt
      chase-deploy inspect slim.onnx --json > layers.json

    A checkpoint is exported and cut with its channel plan; an ONNX file shows what its zero
    rows and columns would allow; a recipe's model is traced on the input shape its data
    section implies (the dataset need not be on disk); a checkpoint shows the groups training
    saved with it.
    """
    import json

    from chase_deploy.graph.layer_table import format_table
    from chase_deploy.inspect import format_groups, inspect_path
    from train.errors import BadInput

    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    report = inspect_path(path)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    parts = [format_table(report)] if "layers" in report else []
    if "groups" in report:
        parts.append(format_groups(report))
    click.echo("\n\n".join(parts))
