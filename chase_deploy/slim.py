"""The ``slim`` pipelines: checkpoint -> dense.onnx + slim.onnx + dense.pt2 (+ slim.pt2) +
slim_report.json, and ONNX + plan -> slim ONNX. Files are written only once every model has been
verified, each one atomically, so a failure leaves nothing behind.

``slim.pt2`` comes from ``torch_export.physically_slim`` (the channel groups training saved in
the checkpoint, cut by ``train.slicing``); where the PyTorch slicer cannot cut a layer the ONNX surgery removed, the
report says why it is missing and the rest is written as before.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import onnx

from chase_deploy.graph.layer_table import layer_table, summary
from chase_deploy.graph.reading import load_onnx, with_input_dims
from chase_deploy.graph.surgery import SlimResult, slim_model
from chase_deploy.verify import Verification, compare
from train.atomic import write_bytes, write_json
from train.errors import BadInput
from train.groups import ModelGroups
from train.plan import ChannelPlan, empty_plan, load_plan, parse_plan
from train.run_dir import RunDir

EXPORT_BATCH = 2


def checkpoint_input_shape(
    ckpt: dict, override: tuple[int, ...] | None, source: str
) -> tuple[int, ...]:
    if override is not None:
        return override
    shape = ckpt.get("input_shape")
    if (
        not isinstance(shape, (list, tuple))
        or not shape
        or not all(isinstance(d, int) and d > 0 for d in shape)
    ):
        raise BadInput(
            f"checkpoint {source} has no valid input_shape [C, H, W]; pass --input-shape N,C,H,W"
        )
    return (EXPORT_BATCH, *shape)


def checkpoint_plan(ckpt: dict, source: str) -> ChannelPlan:
    plan = ckpt.get("channel_plan")
    if plan is None or plan == {}:
        return empty_plan()
    return parse_plan(plan, source=f"checkpoint {source} channel_plan")


def checkpoint_models(
    path: str | Path,
    *,
    exporter: str = "dynamo",
    opset: int = 18,
    input_shape: tuple[int, ...] | None = None,
    round_to: int = 1,
) -> tuple[onnx.ModelProto, onnx.ModelProto, ChannelPlan, dict[str, Any]]:
    """Export a checkpoint's masked model and slim it with its plan (nothing verified or written)."""
    dense, result, plan, info, _, _, _ = _export_and_slim(
        path, exporter, opset, input_shape, round_to
    )
    return dense, result.model, result.plan, info


def _export_and_slim(path, exporter, opset, input_shape, round_to):
    from chase_deploy.export import export_onnx
    from train.checkpoint import build_model_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(path)
    shape = checkpoint_input_shape(ckpt, input_shape, str(path))
    plan = checkpoint_plan(ckpt, str(path))
    model = build_model_from_checkpoint(ckpt)
    exported = export_onnx(model, shape, opset=opset, exporter=exporter)
    result = slim_model(exported.model, plan, round_to=round_to)
    info = {
        "model": ckpt["model"],
        "input_shape": list(shape),
        "exporter": exported.exporter,
        "opset": exported.opset,
        "export_vs_torch_max_abs_diff": exported.max_abs_diff_torch,
    }
    return exported.model, result, plan, info, exported, model, ckpt


def slim_checkpoint(
    path: str | Path,
    out_dir: str | Path | None = None,
    *,
    round_to: int = 1,
    opset: int = 18,
    input_shape: tuple[int, ...] | None = None,
    exporter: str = "dynamo",
    allow_lossy: bool = False,
) -> dict[str, Any]:
    """Checkpoint -> ``dense.onnx``, ``slim.onnx``, ``dense.pt2`` (+ ``slim.pt2``) and
    ``slim_report.json`` in ``out_dir``."""
    from chase_deploy import torch_export

    start = time.perf_counter()
    path = Path(path)
    out_dir = Path(out_dir) if out_dir is not None else path.parent
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"--out {out_dir}: is a file; a checkpoint is slimmed into a directory")
    dense, result, plan, info, exported, masked, ckpt = _export_and_slim(
        path, exporter, opset, input_shape, round_to
    )
    verification = compare(dense, result.model, reference_session=exported.session)
    _refuse_lossy(verification, allow_lossy)
    shape = info["input_shape"]
    pt2_start = time.perf_counter()
    programs = {"dense": torch_export.dense_program(masked, shape)}
    slim_program, slim_missing = torch_export.slim_from_plan(
        masked, result.plan, shape, _pt2_groups(ckpt, masked, result.plan)
    )
    if slim_program is not None:
        programs["slim"] = slim_program
    pt2_seconds = time.perf_counter() - pt2_start
    files = RunDir(out_dir)
    paths = {"dense": str(files.onnx("dense")), "slim": str(files.onnx("slim"))}
    pt2_paths = {name: str(files.pt2(name)) for name in programs}
    report = _report(dense, result, verification, plan, round_to)
    report.update(info)
    report["source"] = str(path)
    report["onnx"] = paths
    report["pt2"] = {
        "dense": pt2_paths["dense"],
        "slim": pt2_paths.get("slim"),
        "verification": {n: p.report(pt2_paths[n]) for n, p in programs.items()},
        "missing": slim_missing or None,
        "format": "torch.export.save archive (ATen graph + raw weights; nothing pickled)",
    }
    report["timings"] = {
        "export_s": round(exported.seconds, 3),
        "surgery_s": round(result.seconds, 3),
        "verify_s": round(verification.seconds, 3),
        "pt2_s": round(pt2_seconds, 3),
    }
    report["sha256"] = {
        "dense": _write_model(paths["dense"], dense),
        "slim": _write_model(paths["slim"], result.model),
    }
    for name, program in programs.items():
        write_bytes(pt2_paths[name], program.data)
        report["sha256"][f"{name}_pt2"] = program.sha256
    report["timings"]["total_s"] = round(time.perf_counter() - start, 3)
    write_json(files.slim_report, report)
    return report


def _pt2_groups(ckpt: dict, masked, plan: ChannelPlan) -> ModelGroups:
    """The groups ``slim.pt2`` is cut by: training's (saved in the checkpoint, else traced with
    the recipe's ``prune_skip``); none needed when the plan prunes nothing."""
    from chase_deploy.saved_groups import checkpoint_groups

    if not any(entry.pruned for entry in plan.layers.values()):
        return ModelGroups(())
    return checkpoint_groups(ckpt, model=masked)


def slim_onnx_file(
    model_path: str | Path,
    plan_path: str | Path | None,
    out_path: str | Path,
    *,
    round_to: int = 1,
    allow_lossy: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """ONNX model + plan -> slim ONNX at ``out_path`` and its report beside it. Without a plan,
    the plan is the model's exactly-zero channels (``graph.zeros``).

    ``input_shape`` sizes the model's dynamic non-batch axes for verification (see ``verify``).
    """
    start = time.perf_counter()
    out_path = Path(out_path)
    if out_path.is_dir():
        raise BadInput(f"--out {out_path}: is a directory; name the slim .onnx file to write")
    model = load_onnx(model_path)
    plan = load_plan(plan_path) if plan_path is not None else zero_plan(model, model_path)
    result = slim_model(model, plan, round_to=round_to)
    verification = compare(model, result.model, input_shape=input_shape)
    _refuse_lossy(verification, allow_lossy)
    report_path = report_path_for(out_path)
    report = _report(model, result, verification, plan, round_to)
    report["source"] = str(model_path)
    report["plan_path"] = str(plan_path) if plan_path is not None else None
    report["plan_source"] = "plan file" if plan_path is not None else "the model's zero channels"
    report["exporter"] = f"{model.producer_name} {model.producer_version}".strip() or "unknown"
    report["opset"] = next(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None
    )
    report["onnx"] = {"dense": str(model_path), "slim": str(out_path)}
    report["timings"] = {
        "surgery_s": round(result.seconds, 3),
        "verify_s": round(verification.seconds, 3),
    }
    report["sha256"] = {"slim": _write_model(out_path, result.model)}
    report["timings"]["total_s"] = round(time.perf_counter() - start, 3)
    write_json(report_path, report)
    return report


def zero_plan(model: onnx.ModelProto, source: str | Path) -> ChannelPlan:
    """The plan of a model pruned by any tool: its channels that are exactly zero in the rows
    that write them and in every column that reads them."""
    from chase_deploy.graph.graph_groups import graph_groups
    from chase_deploy.graph.reading import import_graph, with_shapes
    from chase_deploy.graph.zeros import plan_from_zeros

    plan = plan_from_zeros(graph_groups(import_graph(with_shapes(model))))
    if not plan.layers:
        raise BadInput(
            f"{source}: no channel is exactly zero (in the rows that write it and every column "
            f"that reads it), so there is nothing to remove without a plan; pass --plan PLAN.json"
        )
    return plan


def _write_model(path: str | Path, model: onnx.ModelProto) -> str:
    """Write atomically; the SHA-256 ties the report to the exact files it describes."""
    data = model.SerializeToString()
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def report_path_for(out_path: Path) -> Path:
    """``slim.onnx`` -> ``slim.report.json``."""
    return out_path.with_name(out_path.stem + ".report.json")


def _refuse_lossy(verification: Verification, allow_lossy: bool) -> None:
    if not verification.lossless and not allow_lossy:
        raise BadInput(
            f"the slim model is not lossless (max_abs_diff {verification.max_abs_diff:.3g} > "
            f"{verification.rtol:g} x max(1, {verification.max_abs_reference:.3g}), "
            f"{verification.dtype} outputs): {verification.cause}; nothing written "
            f"(pass --allow-lossy to write it anyway)"
        )


def completion_notes(result: SlimResult, limit: int = 4) -> list[str]:
    """What ``slim`` added to the plan: a line per layer, or one line for many."""
    added = result.added
    if len(added) <= limit:
        return [f"added to the plan: {a.describe()}" for a in added]
    names = ", ".join(a.key for a in added[:limit])
    return [
        f"added {len(added)} coupled layers to the plan ({names}, ...: slim_report.json "
        f"'completed' lists them)"
    ]


def _report(
    dense: onnx.ModelProto,
    result: SlimResult,
    verification: Verification,
    requested: ChannelPlan,
    round_to: int,
) -> dict[str, Any]:
    shapes = verification.input_shapes
    dense, slim = with_input_dims(dense, shapes), with_input_dims(result.model, shapes)
    rows = layer_table(dense, slim, result.plan)
    totals = summary(dense, slim, rows)
    flops = totals["flops"]
    return {
        "lossless": verification.lossless,
        "max_abs_diff": verification.max_abs_diff,
        "max_abs_reference": verification.max_abs_reference,
        "tolerance": verification.tolerance,
        "verified_batch_sizes": verification.batch_sizes,
        "verified_input_shapes": verification.input_shapes,
        "output_dtype": verification.dtype,
        "float32_max_abs_diff": verification.float32_max_abs_diff,
        "round_to": round_to,
        "layers": rows,
        **totals,
        "flop_ratio": round(flops["dense"] / flops["slim"], 4) if flops["slim"] else None,
        "plan": {
            "layers": len(requested.layers),
            "pruned": sum(1 for v in requested.layers.values() if v.pruned),
            "pruned_after_rounding": sum(1 for v in result.plan.layers.values() if v.pruned),
        },
        "coupled": result.coupled,
        "completed": [
            {
                "layer": a.key,
                "out_channels": a.entry.out_channels,
                "kept": list(a.entry.kept),
                "coupled_with": a.partner,
                "node": a.node,
            }
            for a in result.added
        ],
        "notes": completion_notes(result) + result.notes,
        "bn_fused": not any(n.op_type == "BatchNormalization" for n in dense.graph.node),
        "ir_version": result.model.ir_version,
    }
