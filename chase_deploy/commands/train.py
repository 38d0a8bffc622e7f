"""`chase-deploy train RECIPE`: Chase sparse training from a recipe file."""

from __future__ import annotations

import click

from chase_deploy.commands.recipe_options import out_dir, recipe_options


@click.command("train")
@recipe_options
@click.option(
    "--resume",
    default=None,
    metavar="PATH|auto",
    help="Continue from a last.pt, or `auto` for OUT/checkpoints/last.pt if present.",
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
    from chase_deploy.graph.analysis import derive_groups
    from train.config import load_recipe
    from train.loop import train

    spec = load_recipe(recipe, overrides)
    directory = out_dir(recipe, out)
    train(spec, directory, resume=resume, device=device, derive_groups=derive_groups)
