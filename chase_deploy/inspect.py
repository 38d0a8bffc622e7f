"""`chase-deploy inspect`: the per-layer table of a checkpoint or an ONNX model.

For a checkpoint the "after" side is the real slimmed graph: exported (with the TorchScript
exporter, several times faster than dynamo and giving the same weights and FLOPs) and cut with its
channel plan. For an ONNX file with no plan it is what its zero rows and columns would allow. The
table itself is ``layer_table``'s, the same one ``slim_report.json`` holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chase_deploy.layer_table import layer_table, summary


def inspect_path(path: str | Path) -> dict[str, Any]:
    """The table for a checkpoint (exported and slimmed with its plan) or an ONNX file."""
    from chase_deploy.channel_graph import load_onnx

    path = Path(path)
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(path):
        model = _sized(load_onnx(path))
        rows = layer_table(model)
        return {"path": str(path), "kind": "onnx", "layers": rows, **summary(model, None, rows)}
    return _inspect_checkpoint(path)


def _inspect_checkpoint(path: Path) -> dict[str, Any]:
    from chase_deploy.slim import checkpoint_models

    dense, slim, plan, info = checkpoint_models(path, exporter="torchscript")
    rows = layer_table(dense, slim, plan)
    return {
        "path": str(path),
        "kind": "checkpoint",
        **info,
        "layers": rows,
        **summary(dense, slim, rows),
    }


def _sized(model):
    """Give dynamic height/width the size slim would verify at, so FLOPs count; as is if none."""
    from chase_deploy.channel_graph import with_input_dims
    from chase_deploy.verify import feed_shapes, graph_inputs, session
    from train.errors import BadInput

    if not any(d is None for i in graph_inputs(model) for d in i.dims[1:]):
        return model
    try:
        _, rounds = feed_shapes(model, session(model))
    except (BadInput, RuntimeError):
        return model
    return with_input_dims(model, {k: list(v) for k, v in rounds[0].items()})


def _looks_like_onnx(path: Path) -> bool:
    """Torch checkpoints are zip files; anything else we try as ONNX."""
    try:
        with open(path, "rb") as f:
            return f.read(2) != b"PK"
    except OSError:
        return False
