"""`chase-deploy train RECIPE`: Chase sparse training from a recipe file."""

from __future__ import annotations

import click


@click.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory [runs/<recipe stem>].",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field (dotted key); repeatable.",
)
@click.option(
    "--resume",
    default=None,
    metavar="PATH|auto",
    help="Continue from a last.pt, or `auto` for OUT/checkpoints/last.pt if present.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
def command(
    recipe: str, out: str | None, overrides: tuple[str, ...], resume: str | None, device: str
) -> None:
    """Train a CNN with Chase from RECIPE (YAML) into a run directory.

    Writes recipe.yaml (fully resolved), metrics.jsonl, checkpoints/last.pt (every epoch),
    final.pt and channel_plan.json. Under torchrun it trains with DistributedDataParallel.

    \b
    Examples:
      chase-deploy train recipes/quickstart.yaml
      chase-deploy train recipes/quickstart.yaml --set chase.density=1.0 --set chase.channel_sparsity=0
      chase-deploy train recipes/quickstart.yaml --resume auto
      torchrun --nproc_per_node 2 -m chase_deploy train recipes/quickstart.yaml --device cpu
    """
    from pathlib import Path

    from train.config import load_recipe
    from train.loop import train

    spec = load_recipe(recipe, overrides)
    out_dir = Path(out) if out else Path("runs") / Path(recipe).stem
    train(spec, out_dir, resume=resume, device=device)
