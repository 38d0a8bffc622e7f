"""``chase-deploy ablate RUN_DIR``: one-shot channel pruning by each criterion (the paper's Table 2)."""

from __future__ import annotations

from pathlib import Path

import click

from chase_deploy.commands.params import FractionList, NameList
from train.config import CRITERIA


@click.command("ablate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--criteria",
    type=NameList(CRITERIA, "criterion"),
    default=",".join(CRITERIA),
    show_default=True,
    metavar="NAME,NAME,...",
    help="Channel scores to compare: umm, ws, mmm, random and the *_reverse orders.",
)
@click.option(
    "--channel-sparsity",
    "sparsities",
    type=FractionList("the fraction of channels removed", "0.1,0.2,0.3,0.5"),
    default="0.1,0.2,0.3,0.5",
    show_default=True,
    metavar="S,S,...",
    help="Fractions of the prunable layers' channels to remove, each in [0, 1).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory [RUN_DIR/ablate].",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
def command(
    run_dir: Path, criteria: list[str], sparsities: list[float], out: Path | None, device: str
) -> None:
    """Compare channel criteria by pruning an unstructured run once and measuring accuracy.

    RUN_DIR must come from `chase-deploy train` with chase.channel_sparsity 0 (no channels
    removed). For every criterion and sparsity the channels are chosen by the Chase
    controller's own scoring and selection (the recipe's beta floor and chase.align width
    rounding), removed from final.pt without retraining, and the model is evaluated on the
    validation set of the run's recipe. Writes ablate.md (criteria x sparsities table),
    ablate.json and ablate.png.

    \b
    Examples:
      chase-deploy ablate runs/fmnist/chase_unstructured
      chase-deploy ablate runs/fmnist/chase_unstructured --criteria umm,ws,random --channel-sparsity 0.3,0.5
    """
    from chase_deploy.ablate import ablate_run

    def report(cut) -> None:
        click.echo(
            f"{cut.criterion:>12} S_c {cut.sparsity:<4g} removed {cut.removed:>4} channels: "
            f"top-1 {100 * cut.val_acc:.2f} %"
        )

    path = ablate_run(run_dir, criteria, sparsities, out, device=device, on_result=report)
    click.echo(f"wrote {path}, ablate.json and ablate.png")
