"""`chase-deploy run RECIPE`: the whole job in one run directory, with report.md."""

from __future__ import annotations

import click

from chase_deploy.commands.recipe_options import out_dir, recipe_options


@click.command("run")
@recipe_options
def command(recipe: str, out: str | None, overrides: tuple[str, ...], device: str) -> None:
    """Train, slim, build (where TensorRT works), benchmark, and write report.md.

    Resumable: run the same command again after an interruption and finished stages are skipped
    (training continues from checkpoints/last.pt). The recipe's `deploy` section sets round_to
    (default 8), opset, backends (default: every usable one), batch sizes and durations.

    \b
    Examples:
      chase-deploy run recipes/quickstart.yaml
      chase-deploy run recipes/quickstart.yaml --out runs/qs2 --set deploy.batch_sizes=[1,8]
    """
    from chase_deploy.pipeline import run_pipeline
    from train.config import load_recipe

    spec = load_recipe(recipe, overrides)
    directory = out_dir(recipe, out)
    _check_same_recipe(directory, spec)
    report = run_pipeline(spec, directory, device=device)
    click.echo(str(report))


def _check_same_recipe(out_dir, spec) -> None:
    """Resuming a run dir with a different recipe would mix two experiments: refuse."""
    import yaml

    from train.errors import BadInput

    saved = out_dir / "recipe.yaml"
    if not saved.exists():
        return
    before = yaml.safe_load(saved.read_text())
    after = spec.to_dict()
    # model kwargs implied by the data (num_classes, ...) are filled in by training
    before_model = {k: v for k, v in before.get("model", {}).items() if k in after["model"]}
    if {**before, "model": before_model} != after:
        raise BadInput(
            f"{out_dir} holds a run of a different recipe; use --out for a new run directory"
        )
