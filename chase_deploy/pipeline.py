"""`chase-deploy run`: train -> slim -> build -> bench -> report, each stage skipped when done.

A stage counts as done when its output files exist; re-running the same command after a crash picks
up where it stopped (training itself resumes from checkpoints/last.pt).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from train.atomic import write_json
from train.config import Recipe
from train.progress import log


def run_pipeline(recipe: Recipe, out: Path, *, device: str = "auto") -> Path:
    """Run every stage into ``out``; returns the path of report.md."""
    out.mkdir(parents=True, exist_ok=True)
    timings = _load_timings(out)
    final = _stage(out, "train", timings, lambda: _train(recipe, out, device))
    slim_report = _stage(out, "slim", timings, lambda: _slim(recipe, out, final))
    engines = _stage(out, "build", timings, lambda: _build(recipe, out))
    benches = _stage(out, "bench", timings, lambda: _bench(recipe, out, engines))
    accuracy = _stage(out, "accuracy", timings, lambda: _accuracy(recipe, out))
    from chase_deploy.report import write_report

    report = write_report(out, recipe, slim_report, benches, accuracy, timings)
    log(f"report: {report}")
    return report


def _stage(out: Path, name: str, timings: dict[str, float], fn) -> Any:
    """Run ``fn`` unless its result is recorded in stages.json; record result and time."""
    state_path = out / "stages.json"
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
    write_json(out / "timings.json", timings)
    return result


def _load_timings(out: Path) -> dict[str, float]:
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _train(recipe: Recipe, out: Path, device: str) -> str:
    from train.loop import train

    final = out / "final.pt"
    if not final.exists():
        train(recipe, out, resume="auto", device=device)
    return str(final)


def _slim(recipe: Recipe, out: Path, final: str) -> dict:
    from chase_deploy.slim import slim_checkpoint

    return slim_checkpoint(
        Path(final), out, round_to=recipe.deploy.round_to, opset=recipe.deploy.opset
    )


def _backends(recipe: Recipe) -> list[str]:
    from chase_deploy.backends import usable_backends

    usable = usable_backends()
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


def _build(recipe: Recipe, out: Path) -> dict[str, str]:
    """TensorRT engines for dense and slim where TensorRT works; nothing otherwise."""
    if "tensorrt" not in _backends(recipe):
        log("[build] TensorRT is not usable here; no engines built")
        return {}
    from chase_deploy.engine import build_engine

    batches = sorted(recipe.deploy.batch_sizes)
    profile = (batches[0], batches[len(batches) // 2], batches[-1])
    engines = {}
    for name in ("dense", "slim"):
        engines[name] = str(
            build_engine(
                out / f"{name}.onnx",
                out / f"{name}.engine",
                precision=recipe.deploy.precision,
                batch=profile,
                timing_cache=out / "timing.cache",
            )
        )
    return engines


def _bench(recipe: Recipe, out: Path, engines: dict[str, str]) -> dict[str, str]:
    """Dense vs slim on every usable backend; returns backend -> bench JSON path."""
    from chase_deploy.bench import benchmark, write_plot

    results = {}
    d = recipe.deploy
    for backend in _backends(recipe):
        if backend == "tensorrt":
            models = [engines["dense"], engines["slim"]]
        else:
            models = [str(out / "dense.onnx"), str(out / "slim.onnx")]
        result = benchmark(
            models,
            backend=backend,
            batches=d.batch_sizes,
            warmup_ms=d.warmup_ms,
            duration_s=d.duration_s,
            threads=d.threads,
        )
        path = out / f"bench_{backend}.json"
        write_json(path, result)
        write_plot(result, out / f"bench_{backend}.png")
        results[backend] = str(path)
    return results


def _accuracy(recipe: Recipe, out: Path) -> dict[str, float]:
    """Top-1 of dense.onnx and slim.onnx on the validation set, run by ONNX Runtime on the CPU."""
    import numpy as np
    import onnxruntime as ort

    from train.data import build_data

    data = build_data(recipe.data, recipe.seed)
    sessions = {
        name: ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for name in ("dense", "slim")
    }
    correct = dict.fromkeys(sessions, 0)
    total = 0
    for x, y in data.val.batches(0):
        feed = x.numpy().astype(np.float32)
        for name, sess in sessions.items():
            logits = sess.run(None, {sess.get_inputs()[0].name: feed})[0]
            correct[name] += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return {name: correct[name] / total for name in sessions}
