"""``chase-deploy analyze RUN_DIR``: plots and a markdown summary of what a Chase run did."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("analyze")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory [RUN_DIR/analysis].",
)
def command(run_dir: Path, out: Path | None) -> None:
    """Plot a training run: amenable channels, kept widths, densities, schedules, curves.

    Reads RUN_DIR/metrics.jsonl and RUN_DIR/final.pt and writes amenable.png (fraction of
    sparse-amenable channels per layer over training by UMM, WS or either, each channel against
    its own value at initialization, at each ratio v: the paper's Figure 2), widths.png (kept channels per prunable layer, Table 15), density.png
    (non-zero fraction per layer), schedules.png (density and channel sparsity over steps, with
    exploration and channel events), curves.png (loss, accuracy and sparsity) and summary.md.

    \b
    Examples:
      chase-deploy analyze runs/quickstart
      chase-deploy analyze runs/fmnist/chase_sc05 --out docs/analysis
    """
    from chase_deploy.analyze import analyze_run

    summary = analyze_run(run_dir, out)
    click.echo(f"wrote {summary} and its plots")
