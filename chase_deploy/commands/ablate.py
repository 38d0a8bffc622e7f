"""``chase-deploy ablate RUN_DIR``: one-shot channel pruning by each criterion (the paper's Table 2)."""

from __future__ import annotations

from pathlib import Path

import click

from chase_deploy.commands.params import FloatRange, FractionList, IntRange, NameList, Seeds
from train.config import ABLATE_BN_BATCHES, ABLATE_CRITERIA


@click.command("ablate")
@click.argument("run_dirs", metavar="RUN_DIR [RUN_DIR ...]", nargs=-1, required=True)
@click.option(
    "--criteria",
    type=NameList(ABLATE_CRITERIA, "criterion"),
    default=",".join(ABLATE_CRITERIA),
    show_default=True,
    metavar="NAME,NAME,...",
    help="Channel scores to compare: umm, ws, mmm, random, slimming (norm |gamma|) and the "
    "*_reverse orders.",
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
    "--seeds",
    type=Seeds(),
    default=None,
    metavar="N,N,...",
    help="Study one run per seed: RUN_DIR contains {seed}, e.g. 'runs/x/seed{seed}'.",
)
@click.option(
    "--bn-batches",
    type=IntRange(min=0, hint="0 evaluates each cut without re-estimating"),
    default=ABLATE_BN_BATCHES,
    show_default=True,
    help="Training batches that re-estimate BatchNorm statistics after each cut (0: none).",
)
@click.option(
    "--beta",
    type=FloatRange(min=0.0, max=1.0, hint="a number in [0, 1]"),
    default=None,
    help="Per-layer floor of the cut, ⌊(1 − S_c)·beta·width⌋ channels [the source recipe's "
    "chase.beta]; 0 removes the floor.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
def command(
    run_dirs: tuple[str, ...],
    criteria: list[str],
    sparsities: list[float],
    out: Path | None,
    seeds: list[int] | None,
    bn_batches: int,
    beta: float | None,
    device: str,
) -> None:
    """Compare channel criteria by pruning an unstructured run once and measuring accuracy.

    RUN_DIR must come from `chase-deploy train` with chase.channel_sparsity 0 (no channels
    removed). For every criterion and sparsity the channels are chosen by the Chase
    controller's own scoring and selection (the recipe's beta floor, or --beta, and chase.align
    width rounding), removed from final.pt without retraining, BatchNorm statistics are
    re-estimated on training batches (as the released code does after merging; the unpruned
    baseline too), and the model is evaluated on the validation set of the run's recipe. Several runs (seeds of one recipe) are reported
    as mean ± std. Writes ablate.md (criteria x sparsities table), ablate.json and ablate.png.

    \b
    Examples:
      chase-deploy ablate runs/fmnist/chase_unstructured
      chase-deploy ablate runs/fmnist/chase_unstructured --criteria umm,ws,random --channel-sparsity 0.3,0.5
      chase-deploy ablate 'runs/fmnist/unstructured/seed{seed}' --seeds 0,1,2 --bn-batches 50
    """
    from chase_deploy.ablate import ablate_run

    def report(cut) -> None:
        click.echo(
            f"{cut.criterion:>12} S_c {cut.sparsity:<4g} removed {cut.removed:>4} channels: "
            f"top-1 {100 * cut.val_acc:.2f} %"
        )

    runs = _expand_seeds(run_dirs, seeds)
    path = ablate_run(
        runs,
        criteria,
        sparsities,
        out,
        bn_batches=bn_batches,
        beta=beta,
        device=device,
        on_result=report,
    )
    click.echo(f"wrote {path}, ablate.json and ablate.png")


def _expand_seeds(run_dirs: tuple[str, ...], seeds: list[int] | None) -> list[Path]:
    """RUN_DIR as given, or one directory per seed where RUN_DIR holds ``{seed}``."""
    if seeds is None:
        return [Path(d) for d in run_dirs]
    from train.errors import BadInput

    if not all("{seed}" in d for d in run_dirs):
        raise BadInput(
            "--seeds needs RUN_DIR with {seed} where the seed goes, e.g. 'runs/x/seed{seed}'"
        )
    return [Path(d.replace("{seed}", str(seed))) for d in run_dirs for seed in seeds]
