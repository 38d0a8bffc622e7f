"""`chase-deploy inspect`: the per-layer table of a checkpoint or an ONNX model, and the channel
groups of a recipe's or a checkpoint's model.

For a checkpoint the "after" side is the real slimmed graph: exported (with the TorchScript
exporter, several times faster than dynamo and giving the same weights and FLOPs) and cut with its
channel plan. For an ONNX file with no plan it is what its zero rows and columns would allow. The
table itself is ``layer_table``'s, the same one ``slim_report.json`` holds.

For a recipe or a checkpoint it also lists what the channel analysis found (``graph.analysis``):
every prunable group with its producers, carriers and consumers, and every layer kept whole with
the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chase_deploy.graph.layer_table import layer_table, summary


def inspect_path(path: str | Path) -> dict[str, Any]:
    """The table for a checkpoint (exported and slimmed with its plan) or an ONNX file."""
    from chase_deploy.graph.reading import load_onnx

    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _inspect_recipe(path)
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(path):
        model = _sized(load_onnx(path))
        rows = layer_table(model)
        return {"path": str(path), "kind": "onnx", "layers": rows, **summary(model, None, rows)}
    return _inspect_checkpoint(path)


def _inspect_checkpoint(path: Path) -> dict[str, Any]:
    from chase_deploy.saved_groups import KEY, checkpoint_groups
    from chase_deploy.slim import checkpoint_models
    from train.checkpoint import load_checkpoint

    dense, slim, plan, info = checkpoint_models(path, exporter="torchscript")
    rows = layer_table(dense, slim, plan)
    ckpt = load_checkpoint(path)
    found = checkpoint_groups(ckpt)
    return {
        "path": str(path),
        "kind": "checkpoint",
        **info,
        "layers": rows,
        **summary(dense, slim, rows),
        **groups_report(found),
        "groups_source": "saved by training" if ckpt.get(KEY) is not None else "traced",
    }


def _sized(model):
    """Give dynamic height/width the size slim would verify at, so FLOPs count; as is if none."""
    from chase_deploy.backends.modelfile import onnx_inputs
    from chase_deploy.graph.reading import with_input_dims
    from chase_deploy.verify import feed_shapes, session
    from train.errors import BadInput

    if not any(d is None for i in onnx_inputs(model) for d in i.shape[1:]):
        return model
    try:
        _, rounds = feed_shapes(model, session(model))
    except (BadInput, RuntimeError):
        return model
    return with_input_dims(model, {k: list(v) for k, v in rounds[0].items()})


def _inspect_recipe(path: Path) -> dict[str, Any]:
    """The groups the trainer would prune: the recipe's model, traced on its data's shape,
    which the recipe gives for every built-in dataset (the data is read only where it alone
    can tell: an ImageFolder tree without ``model.num_classes``)."""
    from chase_deploy.graph.analysis import derive_groups
    from train.config import load_recipe
    from train.data import build_data
    from train.data.shapes import known_shape
    from train.group_fit import fitted
    from train.loop import resolve_model_kwargs
    from train.models import create_model

    recipe = load_recipe(path)
    data = known_shape(recipe.data, recipe.model.kwargs.get("num_classes")) or build_data(
        recipe.data, recipe.seed
    )
    resolve_model_kwargs(recipe, data)
    model = create_model(recipe.model.name, **recipe.model.kwargs)
    found = fitted(
        model, derive_groups(model, data.input_shape, recipe.chase.prune_skip),
        recipe.chase.prune_skip, data.input_shape,
    )  # fmt: skip
    return {
        "path": str(path),
        "kind": "recipe",
        "model": {"name": recipe.model.name, "kwargs": recipe.model.kwargs},
        "input_shape": list(data.input_shape),
        **groups_report(found),
    }


def groups_report(found) -> dict[str, Any]:
    """The JSON form of a ``ModelGroups``: groups (with members) and excluded layers."""
    return {
        "prune_skip": found.prune_skip,
        "channels": sum(g.width for g in found.groups),
        "groups": [g.to_dict() for g in found.groups],
        "excluded": dict(found.excluded),
    }


def format_groups(report: dict[str, Any]) -> str:
    """The groups and exclusions as text for the terminal."""
    groups = report["groups"]
    skip = "on" if report["prune_skip"] else "off"
    lines = [
        f"channel groups (prune_skip {skip}): {len(groups)} prunable, "
        f"{report['channels']} channels; {len(report['excluded'])} layers kept whole"
    ]
    for g in groups:
        slices = f", {g['segments']} equal slices" if g["segments"] > 1 else ""
        lines.append(
            f"  {g['name']} ({g['kind']}, {g['width']} channels{slices}): "
            f"producers {', '.join(g['producers'])}; carriers {', '.join(g['carriers']) or '-'}; "
            f"consumers {', '.join(g['consumers'])}"
        )
    if report["excluded"]:
        lines.append("kept whole:")
        lines.extend(f"  {name}: {why}" for name, why in report["excluded"].items())
    return "\n".join(lines)


def _looks_like_onnx(path: Path) -> bool:
    """Torch checkpoints are zip files; anything else we try as ONNX."""
    try:
        with open(path, "rb") as f:
            return f.read(2) != b"PK"
    except OSError:
        return False
