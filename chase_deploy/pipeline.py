"""`chase-deploy run`: train -> slim -> build -> bench -> report, each stage skipped when done.

A stage counts as done when its output files exist; re-running the same command after a crash picks
up where it stopped (training itself resumes from checkpoints/last.pt).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from train.atomic import write_bytes, write_json
from train.config import Recipe
from train.progress import log
from train.run_dir import RunDir

FP32_MODELS = ("dense", "slim")


def run_pipeline(
    recipe: Recipe, out: Path, *, device: str = "auto", twin: Path | None = None
) -> Path:
    """Run every stage into ``out``; returns the path of report.md. ``twin``: a run directory
    of the same recipe (the masked twin of a shrinking run) whose epoch times the report plots."""
    out.mkdir(parents=True, exist_ok=True)
    files = RunDir(out)
    timings = _load_timings(files)
    final = _stage(files, "train", timings, lambda: _train(recipe, files, device))
    slim_report = _stage(files, "slim", timings, lambda: _slim(recipe, files, final))
    int8 = {}
    if recipe.deploy.int8:
        int8 = _stage(files, "quantize", timings, lambda: _quantize(recipe, files))
    engines = _stage(files, "build", timings, lambda: _build(recipe, files))
    benches = _stage(files, "bench", timings, lambda: _bench(recipe, files, engines))
    accuracy = _stage(files, "accuracy", timings, lambda: _accuracy(recipe, files))
    from chase_deploy.report import write_report

    report = write_report(
        out, recipe, slim_report, benches, accuracy, timings, twin=twin, int8=int8
    )
    log(f"report: {report}")
    return report


def _stage(files: RunDir, name: str, timings: dict[str, float], fn) -> Any:
    """Run ``fn`` unless its result is recorded in stages.json; record result and time."""
    state_path = files.stages
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if name in state:
        log(f"[{name}] done already, skipping")
        return state[name]
    log(f"[{name}] ...")
    start = time.perf_counter()
    result = fn()
    timings[name] = time.perf_counter() - start
    state[name] = result
    write_json(state_path, state)
    write_json(files.timings, timings)
    return result


def _load_timings(files: RunDir) -> dict[str, float]:
    return json.loads(files.timings.read_text()) if files.timings.exists() else {}


def _train(recipe: Recipe, files: RunDir, device: str) -> str:
    from chase_deploy.graph.analysis import derive_groups
    from train.loop import train

    if not files.final.exists():
        train(recipe, files.path, resume="auto", device=device, derive_groups=derive_groups)
    return str(files.final)


def _slim(recipe: Recipe, files: RunDir, final: str) -> dict:
    from chase_deploy.slim import slim_checkpoint

    return slim_checkpoint(
        Path(final), files.path, round_to=recipe.deploy.round_to, opset=recipe.deploy.opset
    )


def _quantize(recipe: Recipe, files: RunDir) -> dict[str, dict]:
    """dense.int8.onnx and slim.int8.onnx (``deploy.int8_target``), calibrated on the run's data.

    A top-1 drop does not stop the run: the report shows it beside the fp32 rows.
    """
    from chase_deploy.int8.calibration import CalibrationSource
    from chase_deploy.int8.quantize import Settings, quantize_file

    source = CalibrationSource(files.path, "run", recipe)
    settings = Settings(target=recipe.deploy.int8_target, samples=None, allow_drop=True)
    results = {}
    for name in FP32_MODELS:
        report = quantize_file(
            files.onnx(name), source, files.onnx(int8_name(name)), settings, log=log
        )
        keys = ("top1_fp32", "top1_int8", "drop_points", "agreement", "target", "method")
        results[int8_name(name)] = {
            **{k: report[k] for k in keys},
            "samples": report["calibration"]["samples"],
            "int8_mac_share": report["int8_macs"]["share"],
        }
    return results


def int8_name(name: str) -> str:
    """``dense`` -> ``dense.int8``: the run directory's int8 model (``dense.int8.onnx``)."""
    return f"{name}.int8"


def _models(recipe: Recipe, backend: str) -> list[str]:
    """The models ``run`` benches on ``backend``: dense and slim, and with ``deploy.int8`` their
    int8 versions, except the cpu form on TensorRT backends (TensorRT takes symmetric int8 only)."""
    names = list(FP32_MODELS)
    tensorrt = backend in ("tensorrt", "ort-trt")
    if recipe.deploy.int8 and (recipe.deploy.int8_target == "tensorrt" or not tensorrt):
        names += [int8_name(n) for n in FP32_MODELS]
    return names


def _backends(recipe: Recipe) -> list[str]:
    """The ONNX/engine backends ``run`` benches (the torch backends run ``.pt2`` programs, and
    ``run`` compares dense.onnx with slim.onnx)."""
    from chase_deploy.backends import TORCH_BACKENDS, usable_backends

    usable = [b for b in usable_backends() if b not in TORCH_BACKENDS]
    wanted = recipe.deploy.backends
    if "auto" in wanted:
        return usable
    missing = [b for b in wanted if b not in usable]
    if missing:
        from chase_deploy.errors import MissingBackend

        raise MissingBackend(
            f"recipe key deploy.backends: {', '.join(missing)} not usable here (usable: {', '.join(usable)}); "
            f"use deploy.backends: [auto]"
        )
    return list(wanted)


def _build(recipe: Recipe, files: RunDir) -> dict[str, str]:
    """TensorRT engines for dense and slim where TensorRT works; nothing otherwise."""
    if "tensorrt" not in _backends(recipe):
        log("[build] TensorRT is not usable here; no engines built")
        return {}
    from chase_deploy.backends.trt.loader import build_engine

    batches = sorted(recipe.deploy.batch_sizes)
    profile = (batches[0], batches[len(batches) // 2], batches[-1])
    engines = {}
    for name in _models(recipe, "tensorrt"):
        engines[name] = str(
            build_engine(
                files.onnx(name),
                files.engine(name),
                precision=recipe.deploy.precision,
                batch=profile,
                timing_cache=files.timing_cache,
            )
        )
    return engines


def _bench(recipe: Recipe, files: RunDir, engines: dict[str, str]) -> dict[str, str]:
    """Dense vs slim on every usable backend; returns backend -> bench JSON path."""
    from chase_deploy.bench import benchmark
    from chase_deploy.plots import plot_bench

    results = {}
    d = recipe.deploy
    for backend in _backends(recipe):
        names = _models(recipe, backend)
        if backend == "tensorrt":
            models = [engines[name] for name in names]
        else:
            models = [str(files.onnx(name)) for name in names]
        result = benchmark(
            models,
            backend=backend,
            batches=d.batch_sizes,
            warmup_ms=d.warmup_ms,
            duration_s=d.duration_s,
            threads=d.threads,
        )
        path = files.bench_json(backend)
        write_json(path, result)
        write_bytes(files.bench_png(backend), plot_bench(result))
        results[backend] = str(path)
    return results


def _accuracy(recipe: Recipe, files: RunDir) -> dict[str, float]:
    """Top-1 of dense.onnx, slim.onnx (and their int8 versions) on the validation set, run by
    ONNX Runtime on the CPU."""
    from chase_deploy.onnx_accuracy import evaluate
    from train.data import build_data

    data = build_data(recipe.data, recipe.seed)
    names = _models(recipe, "ort-cpu")
    result = evaluate([files.onnx(name) for name in names], data.val.batches(0))
    return dict(zip(names, result.top1, strict=True))
