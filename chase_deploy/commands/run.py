"""`chase-deploy run RECIPE`: the whole job in one run directory, with report.md."""

from __future__ import annotations

from pathlib import Path

import click

from chase_deploy.commands.recipe_options import out_dir, recipe_options


@click.command("run")
@recipe_options
@click.option(
    "--twin",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory of the same recipe trained the other way (the masked twin of a "
    "chase.shrink run): report.md plots its epoch times beside this run's.",
)
def command(
    recipe: str, out: str | None, overrides: tuple[str, ...], device: str, twin: Path | None
) -> None:
    """Train, slim, build (where TensorRT works), benchmark, and write report.md.

    Resumable: run the same command again after an interruption and finished stages are skipped
    (training continues from checkpoints/last.pt). The recipe's `deploy` section sets round_to
    (default 8), opset, backends (default: every usable one), batch sizes and durations.

    \b
    Examples:
      chase-deploy run recipes/quickstart.yaml
      chase-deploy run recipes/quickstart.yaml --out runs/qs2 --set deploy.batch_sizes=[1,8]
      chase-deploy train recipes/quickstart.yaml --set chase.shrink=false --out runs/qs_masked
      chase-deploy run recipes/quickstart.yaml --set chase.shrink=true --twin runs/qs_masked
    """
    from chase_deploy.pipeline import run_pipeline
    from train.config import load_recipe

    spec = load_recipe(recipe, overrides)
    directory = out_dir(recipe, out)
    _check_same_recipe(directory, spec)
    if twin is not None:
        _check_twin(twin, spec)
    report = run_pipeline(spec, directory, device=device, twin=twin)
    click.echo(str(report))


def _comparable(saved: dict, spec) -> tuple[dict, dict]:
    """A saved recipe.yaml and a recipe as dicts that compare equal when they are the same
    recipe (model kwargs implied by the data are filled in by training). The saved recipe is
    read through today's defaults, so a key added since it was written does not count as a
    difference."""
    from train.config import recipe_from_dict
    from train.errors import BadInput

    try:
        saved = recipe_from_dict(saved).to_dict()
    except BadInput:
        pass  # a key that no longer exists: compared as written, so it differs
    after = spec.to_dict()
    before_model = {k: v for k, v in saved.get("model", {}).items() if k in after["model"]}
    return {**saved, "model": before_model}, after


def _check_twin(twin: Path, spec) -> None:
    """The twin is a finished-or-running run of the same recipe, up to ``chase.shrink``."""
    import yaml

    from train.errors import BadInput

    saved = twin / "recipe.yaml"
    if not saved.is_file() or not (twin / "metrics.jsonl").is_file():
        raise BadInput(f"--twin {twin}: not a run directory (no recipe.yaml and metrics.jsonl)")
    before, after = _comparable(yaml.safe_load(saved.read_text()), spec)
    for d in (before, after):
        d["chase"] = {k: v for k, v in d.get("chase", {}).items() if k != "shrink"}
    if before != after:
        raise BadInput(
            f"--twin {twin}: its recipe differs from this one at {_difference(before, after)}; "
            f"a twin is the same recipe with only chase.shrink changed"
        )


def _difference(a, b, prefix: str = "") -> str:
    """The first dotted key where two recipe dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "the top level"


def _check_same_recipe(out_dir, spec) -> None:
    """Resuming a run dir with a different recipe would mix two experiments: refuse."""
    import yaml

    from train.errors import BadInput

    saved = out_dir / "recipe.yaml"
    if not saved.exists():
        return
    before, after = _comparable(yaml.safe_load(saved.read_text()), spec)
    if before != after:
        raise BadInput(
            f"{out_dir} holds a run of a different recipe; use --out for a new run directory"
        )
