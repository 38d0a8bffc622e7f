"""INT8 post-training quantization of one ONNX file, checked on the recipe's data.

Order of work: every refusal that needs no computation first (options, output paths, the model,
the calibration source and whether it fits the model), then ONNX Runtime's pre-processing
(``quant_pre_process``: shape inference and graph optimization), calibration and Q/DQ insertion
(``quantize_static``) into a temporary directory, then top-1 of the fp32 and the int8 model on
the whole validation set. A top-1 drop beyond ``max_drop`` points refuses (unless
``allow_drop``); only then are the model and its JSON report moved into place, atomically.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from chase_deploy.backends.base import InputSpec
from chase_deploy.backends.modelfile import onnx_inputs
from chase_deploy.int8.calibration import (
    DEFAULT_SAMPLES,
    CalibrationReader,
    CalibrationSource,
    calibration_batches,
    load_data,
    resolve_source,
    usable_samples,
)
from chase_deploy.int8.inspect_qdq import int8_macs, ort_cpu_plan, qdq_format, quantized_nodes
from chase_deploy.int8.targets import METHODS, TARGETS, quantize_static_kwargs
from chase_deploy.writable import check_writable_file
from train.errors import BadInput, one_line

REPORT_FORMAT = "chase-deploy-int8"
REPORT_VERSION = 1
DEFAULT_MAX_DROP = 1.0  # top-1 points


def default_out(model_path: Path) -> Path:
    """``<stem>.int8.onnx`` beside the input."""
    return model_path.with_name(f"{model_path.stem}.int8.onnx")


def report_path_for(out: Path) -> Path:
    """The JSON report: the output path with ``.json`` for ``.onnx``."""
    return out.with_suffix(".json")


@dataclass(frozen=True)
class Settings:
    target: str = "cpu"
    method: str = "minmax"
    samples: int | None = DEFAULT_SAMPLES  # None: DEFAULT_SAMPLES, or all the data has if fewer
    max_drop: float = DEFAULT_MAX_DROP
    allow_drop: bool = False


def quantize_file(
    model_path: str | Path,
    calib: str | Path | CalibrationSource,
    out: str | Path | None = None,
    settings: Settings = Settings(),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantize ``model_path`` into ``out`` (default ``<stem>.int8.onnx``); returns the report."""
    say = log or (lambda _msg: None)
    model_path = Path(model_path)
    out = Path(out) if out is not None else default_out(model_path)
    _check_settings(settings)
    report_path = report_path_for(out)
    _check_paths(model_path, out, report_path)
    model = _load(model_path)
    graph_input = _image_input(model_path, model)
    source = calib if isinstance(calib, CalibrationSource) else resolve_source(calib)
    batch = graph_input.shape[0]
    data = load_data(source.recipe, settings.samples or DEFAULT_SAMPLES, batch)
    samples = _sample_count(model_path, settings.samples, data, batch)
    _check_fits(model_path, model, graph_input, data, source)
    batches = calibration_batches(data, samples)
    with tempfile.TemporaryDirectory(prefix="chase-int8-") as tmp:
        pre, qdq_path = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        say(f"pre-processing {model_path} (onnxruntime.quantization.quant_pre_process)")
        _pre_process(model_path, pre)
        say(
            f"calibrating on {samples} training images of {source.path} "
            f"({settings.method}), target {settings.target}"
        )
        reader = CalibrationReader(batches, graph_input.name)
        _quantize_static(pre, qdq_path, reader, settings)
        say(f"top-1 of fp32 and int8 on the validation set ({data.val.num_samples} images)")
        from chase_deploy.onnx_accuracy import evaluate

        evaluation = evaluate([model_path, qdq_path], data.val.batches(0))
        report = _report(
            model_path, out, source, settings, reader.samples, evaluation, pre, qdq_path
        )
        _refuse_drop(report, settings)
        _write(qdq_path, out, report, report_path)
    return report


def _check_settings(s: Settings) -> None:
    if s.target not in TARGETS:
        raise BadInput(f"--target {s.target!r} is not one of {', '.join(TARGETS)}")
    if s.method not in METHODS:
        raise BadInput(f"--method {s.method!r} is not one of {', '.join(METHODS)}")
    if s.samples is not None and s.samples < 1:
        raise BadInput(f"--calib-samples {s.samples}: give a positive number of images")
    if not s.max_drop >= 0:
        raise BadInput(f"--max-drop {s.max_drop}: give a number of top-1 points >= 0")


def _check_paths(model_path: Path, out: Path, report_path: Path) -> None:
    if not model_path.is_file():
        raise BadInput(f"{model_path}: no such ONNX model")
    if out.suffix.lower() != ".onnx":
        raise BadInput(f"--out {out}: give a path ending in .onnx (the report goes beside it)")
    if out.resolve() == model_path.resolve():
        raise BadInput(f"--out {out} is the input model: give another path")
    check_writable_file(out, "--out")
    check_writable_file(report_path, "--out")


def _load(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise BadInput(f"cannot read ONNX model {path}: {one_line(e)}") from None
    quantized = quantized_nodes(model)
    if quantized:
        kinds = sorted({n.op_type for n in quantized})
        raise BadInput(
            f"{path} is already quantized ({len(quantized)} {', '.join(kinds)} nodes): "
            "quantize the fp32 model it came from"
        )
    return model


def _image_input(path: Path, model: onnx.ModelProto) -> InputSpec:
    inputs = onnx_inputs(model)
    if len(inputs) != 1:
        raise BadInput(
            f"{path} has {len(inputs)} graph inputs; int8 calibration feeds one image input"
        )
    (graph_input,) = inputs
    if graph_input.dtype != "float32" or len(graph_input.shape) != 4:
        raise BadInput(
            f"{path}: input {graph_input.name!r} is {graph_input.dtype} of rank "
            f"{len(graph_input.shape)}; quantize takes models with one float32 NCHW image input"
        )
    return graph_input


def _sample_count(path: Path, asked: int | None, data, batch: int | None) -> int:
    """``asked``, or up to DEFAULT_SAMPLES (whole batches of a fixed-batch model) when None."""
    if asked is None:
        samples = min(DEFAULT_SAMPLES, usable_samples(data))
        return samples - samples % batch if batch else samples
    if batch is not None and asked % batch:
        raise BadInput(
            f"--calib-samples {asked}: {path} has a fixed batch size of {batch}; give a multiple of {batch}"
        )
    return asked


def _check_fits(path: Path, model, graph_input: InputSpec, data, source) -> None:
    """The calibration images must be what the model takes; its outputs the dataset's classes."""
    want = tuple(graph_input.shape[1:])
    have = tuple(data.input_shape)
    recipe = source.recipe
    if want[0] is not None and want[0] != have[0]:
        raise BadInput(
            f"--calib {source.path}: {recipe.data.name} images have {have[0]} channel(s), "
            f"{path} takes {want[0]}; calibrate on the data the model was trained on"
        )
    if any(w is not None and w != h for w, h in zip(want[1:], have[1:], strict=True)):
        raise BadInput(
            f"--calib {source.path}: {recipe.data.name} images are {have[1]}x{have[2]}, {path} takes "
            f"{'x'.join(str(d) for d in want[1:])}; set data.image_size in the recipe or give another source"
        )
    outputs = model.graph.output
    dims = outputs[0].type.tensor_type.shape.dim if outputs else []
    classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    if classes is not None and len(dims) == 2 and classes != data.num_classes:
        raise BadInput(
            f"--calib {source.path}: {recipe.data.name} has {data.num_classes} classes, {path} "
            f"outputs {classes} scores; calibrate on the data the model was trained on"
        )


def _pre_process(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as e:
        raise BadInput(
            f"onnxruntime.quantization.quant_pre_process cannot prepare {src}: {one_line(e)}"
        ) from None


def _quantize_static(pre: Path, out: Path, reader: CalibrationReader, s: Settings) -> None:
    from onnxruntime.quantization import quantize_static

    quantize_static(str(pre), str(out), reader, **quantize_static_kwargs(s.target, s.method))


def _report(model_path, out, source, s: Settings, samples, evaluation, pre, qdq_path) -> dict:
    from chase_deploy.graph.flops import layer_costs

    top1_fp32, top1_int8 = evaluation.top1
    qdq = onnx.load(str(qdq_path))
    layer_macs = {c.node: c.flops // 2 for c in layer_costs(onnx.load(str(pre)))}
    plan = ort_cpu_plan(qdq_path)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "model": str(model_path),
        "int8_model": str(out),
        "sha256": {"fp32": _sha256(model_path), "int8": _sha256(qdq_path)},
        "bytes": {"fp32": model_path.stat().st_size, "int8": qdq_path.stat().st_size},
        "target": s.target,
        "method": s.method,
        "calibration": {
            "source": str(source.path),
            "kind": source.kind,
            "dataset": source.recipe.data.name,
            "samples": samples,
            "seed": source.recipe.seed,
            "split": "train, evaluation transforms",
        },
        "top1_fp32": top1_fp32,
        "top1_int8": top1_int8,
        "drop_points": (top1_fp32 - top1_int8) * 100.0,
        "agreement": evaluation.agreement[1],
        "val_samples": evaluation.samples,
        "max_drop": s.max_drop,
        "allow_drop": s.allow_drop,
        "int8_macs": int8_macs(layer_macs, qdq, s.target, plan),
        "qdq": qdq_format(qdq).to_json(),
        "onnxruntime_cpu": plan.to_json(),
        "onnxruntime": _ort_version(),
    }


def _refuse_drop(report: dict, s: Settings) -> None:
    drop = report["drop_points"]
    if drop > s.max_drop and not s.allow_drop:
        raise BadInput(
            f"int8 top-1 {report['top1_int8']:.2%} is {drop:.2f} points below fp32 "
            f"{report['top1_fp32']:.2%} (--max-drop {s.max_drop:g}); nothing written: try "
            f"--method entropy or percentile, more --calib-samples, or --allow-drop to keep it"
        )


def _write(qdq_path: Path, out: Path, report: dict, report_path: Path) -> None:
    import json

    from train.atomic import atomic_path

    with atomic_path(out) as tmp_model, atomic_path(report_path) as tmp_report:
        tmp_model.write_bytes(qdq_path.read_bytes())
        tmp_report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
