"""Benchmark several models the same way in one run: latency, throughput, speedup vs the first.

Method, per batch size: every model is warmed up for ``warmup_ms``, then the models take turns
in short slices (A B A B ...) until each has run for ``duration_s``, so slow drift of the
machine (clocks, heat, neighbours) hits all of them alike. Each iteration is timed on its own
(host clock on CPU, CUDA events on GPU backends, each backend's ``describe()`` says which), and
backends that rotate their inputs (``backends.rotation``) feed each iteration a batch that is not
in cache; the table's method line says so. Reported per model and batch: median, mean,
p90, p99 and min latency in ms; throughput = batch * 1000 / mean latency (items/s); speedup =
the first model's median latency over this model's at the same batch size.

With ``check_outputs`` every batch size starts with a correctness gate: all models run the same
random inputs and must give the first model's outputs (within the backend's tolerance for its
precision), or nothing is timed. Dense against slim, that is the slim model's promise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from chase_deploy import stats
from chase_deploy.backends.base import Backend, LoadedModel, Timer, random_inputs
from train.errors import BadInput

__all__ = [
    "benchmark",
    "check_same_outputs",
    "format_table",
    "interleave",
    "measure",
    "write_results",
]

DEFAULT_BATCHES = (1, 8, 32)
SLICE_S = 0.2  # target length of one turn of one model
MIN_SLICES = 4
MAX_SLICES = 50
MIN_ITERATIONS = 10  # fewer than this per model and batch gets a warning


def slice_count(duration_s: float) -> int:
    """How many turns each model gets: about SLICE_S each, at least MIN_SLICES."""
    return max(MIN_SLICES, min(MAX_SLICES, math.ceil(duration_s / SLICE_S)))


def interleave(
    timers: Sequence[Timer],
    warmup_ms: float,
    duration_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[list[float]]]:
    """Warm every timer up, then run them in round-robin slices; latencies[model][slice][iter].

    Each slice runs at least one iteration, so a model slower than a slice still gets measured.
    """
    for timer in timers:
        start = clock()
        timer()
        while (clock() - start) * 1000.0 < warmup_ms:
            timer()
    n_slices = slice_count(duration_s)
    slice_s = duration_s / n_slices
    latencies: list[list[list[float]]] = [[] for _ in timers]
    for _ in range(n_slices):
        for i, timer in enumerate(timers):
            samples = []
            start = clock()
            while True:
                samples.append(float(timer()))
                if clock() - start >= slice_s:
                    break
            latencies[i].append(samples)
    return latencies


def benchmark(
    models: Sequence[str | Path],
    backend: str | Backend = "ort-cpu",
    batches: Sequence[int] = DEFAULT_BATCHES,
    warmup_ms: float = 200,
    duration_s: float = 2.0,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
    options: dict | None = None,
    check_outputs: bool = False,
) -> dict:
    """Measure ``models`` on one backend; returns the ``bench --json`` contract dict.

    ``options`` configure the backend (``backends.get_backend``: precision, channels_last,
    compile, ...); ``check_outputs`` gates every batch size on equal outputs (module doc).
    Everything that can be refused (backend, options, batch sizes, model files, shapes) is
    checked before the first timed run, so a bad input fails fast and nothing is measured in vain.
    """
    _check_settings(models, batches, warmup_ms, duration_s, threads)
    runner = _resolve_backend(backend, threads, options or {})
    loaded = [runner.load(Path(m), list(batches)) for m in models]
    try:
        return measure(
            loaded, runner, batches, warmup_ms, duration_s, log, check_outputs, names=models
        )
    finally:
        for model in loaded:
            model.close()


def measure(
    loaded: Sequence[LoadedModel],
    runner: Backend,
    batches: Sequence[int],
    warmup_ms: float = 200,
    duration_s: float = 2.0,
    log: Callable[[str], None] | None = None,
    check_outputs: bool = False,
    names: Sequence[str | Path] | None = None,
) -> dict:
    """``benchmark`` on models ``runner`` has loaded already (the caller closes them): a caller
    that times one batch size at a time loads, moves and compiles each model once for all of
    them. ``names`` label the rows (default: the models' paths)."""
    names = list(names) if names is not None else [m.path for m in loaded]
    results, stability, warnings, gate = [], [], [], []
    for batch in batches:
        if check_outputs:
            gate.extend(check_same_outputs(loaded, batch, _tolerance(runner)))
        if log:
            log(f"batch {batch}: {len(loaded)} model(s), {duration_s:g} s each, interleaved")
        timers = [model.timer(batch) for model in loaded]
        latencies = interleave(timers, warmup_ms, duration_s)
        reference = None
        for path, slices in zip(names, latencies, strict=True):
            flat = [x for s in slices for x in s]
            summary = stats.summarize(flat)
            reference = reference if reference is not None else summary["median"]
            results.append(_result(path, runner.name, batch, summary, reference))
            row = _stability(path, batch, slices)
            stability.append(row)
            warnings.extend(_warnings(row))
    environment = _environment(runner, warmup_ms, duration_s, stability, warnings)
    if check_outputs:
        environment["output_check"] = gate
    return {"results": results, "environment": environment}


def check_same_outputs(loaded: Sequence[LoadedModel], batch: int, tolerance: float) -> list[dict]:
    """Run every model on the same random batch; BadInput unless each one's outputs equal the
    first model's: ``max |difference| <= tolerance * max(1, max |first model's output|)``."""
    feeds = random_inputs(loaded[0].inputs, batch, seed=1)
    reference = [np.asarray(o, np.float64) for o in loaded[0].run(feeds)]
    scale = max((float(np.max(np.abs(r), initial=0.0)) for r in reference), default=0.0)
    rows = []
    for model in loaded[1:]:
        outputs = [np.asarray(o, np.float64) for o in model.run(feeds)]
        shapes_match = [o.shape for o in outputs] == [r.shape for r in reference]
        diff = (
            max(
                (
                    float(np.max(np.abs(o - r), initial=0.0))
                    for o, r in zip(outputs, reference, strict=True)
                ),
                default=0.0,
            )
            if shapes_match
            else float("inf")
        )
        if np.isnan(diff):
            diff = float("inf")
        row = {
            "model": str(model.path),
            "reference": str(loaded[0].path),
            "batch": batch,
            "max_abs_diff": diff,
            "max_abs_reference": scale,
            "tolerance": tolerance,
            "passed": diff <= tolerance * max(1.0, scale),
        }
        rows.append(row)
        if not row["passed"]:
            raise BadInput(
                f"{model.path} at batch {batch}: its outputs differ from {loaded[0].path}'s by "
                f"{diff:.3g} (allowed {tolerance:g} x max(1, {scale:.3g})); nothing was timed"
            )
    return rows


def _tolerance(runner: Backend) -> float:
    from chase_deploy.verify import RTOL

    return float(getattr(runner, "output_tolerance", RTOL))


def _check_settings(models, batches, warmup_ms, duration_s, threads) -> None:
    if not models:
        raise BadInput("give at least one model to benchmark")
    if not batches or not all(
        isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in batches
    ):
        raise BadInput(f"batch sizes must be positive integers, got {list(batches)}")
    if not (isinstance(warmup_ms, int | float) and warmup_ms >= 0):
        raise BadInput(f"--warmup-ms {warmup_ms}: give a number of milliseconds >= 0")
    if not (isinstance(duration_s, int | float) and duration_s > 0):
        raise BadInput(f"--duration-s {duration_s}: give a number of seconds > 0")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise BadInput(f"--threads {threads}: give a positive integer")


def _resolve_backend(backend: str | Backend, threads: int | None, options: dict) -> Backend:
    if isinstance(backend, Backend):
        return backend
    from chase_deploy.backends import check_name, get_backend

    check_name(backend)
    return get_backend(backend, threads=threads, **options)


def _result(path, backend: str, batch: int, summary: dict, reference_median: float) -> dict:
    return {
        "model": str(path),
        "backend": backend,
        "batch": batch,
        "latency_ms": summary,
        "throughput": stats.throughput(batch, summary["mean"]),
        "speedup": stats.speedup(reference_median, summary["median"]),
    }


def _stability(path, batch: int, slices: list[list[float]]) -> dict:
    flat = [x for s in slices for x in s]
    return {
        "model": str(path),
        "batch": batch,
        "iterations": len(flat),
        "slices": len(slices),
        "cv_iterations": stats.coefficient_of_variation(flat),
        "cv_slices": stats.slice_variation(slices),
    }


def _warnings(row: dict) -> list[str]:
    out = []
    where = f"{row['model']} at batch {row['batch']}"
    if row["cv_slices"] > stats.UNSTABLE_CV:
        out.append(
            f"{where}: the interleaved slices disagree (CV {row['cv_slices']:.1%} > "
            f"{stats.UNSTABLE_CV:.0%}); the machine was busy or changed speed: close other "
            f"programs, pin --threads, or lengthen --duration-s"
        )
    if row["iterations"] < MIN_ITERATIONS:
        out.append(f"{where}: only {row['iterations']} iterations; lengthen --duration-s")
    return out


def _environment(runner: Backend, warmup_ms, duration_s, stability, warnings) -> dict:
    from chase_deploy.environment import describe_environment

    env = describe_environment(threads=getattr(runner, "threads", None))
    env["backend"] = runner.describe()
    env["method"] = {
        "warmup_ms": warmup_ms,
        "duration_s": duration_s,
        "slices": slice_count(duration_s),
        "interleaving": "round-robin slices (A B A B ...) per batch size",
        "timer": runner.timer_kind,
        "throughput": "batch * 1000 / mean latency_ms (items/s)",
        "speedup": "median latency of the first model / this model's, same batch",
    }
    env["stability"] = stability
    env["warnings"] = warnings
    return env


def write_results(
    result: dict, json_path: str | Path | None = None, plot_path: str | Path | None = None
) -> None:
    """Write the JSON and/or the PNG; both appear together or neither does."""
    import contextlib
    import json

    from chase_deploy import plots
    from train.atomic import atomic_path

    with contextlib.ExitStack() as stack:
        if json_path is not None:
            tmp = stack.enter_context(atomic_path(json_path))
            tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if plot_path is not None:
            tmp = stack.enter_context(atomic_path(plot_path))
            tmp.write_bytes(plots.plot_bench(result))


def format_table(result: dict) -> str:
    """The results as an aligned text table, then the method line and any warnings."""
    rows = result["results"]
    names = _display_names([r["model"] for r in rows])
    header = [
        "model",
        "batch",
        "median ms",
        "mean ms",
        "p90 ms",
        "p99 ms",
        "min ms",
        "items/s",
        "speedup",
    ]
    body = [
        [
            names[r["model"]],
            str(r["batch"]),
            *(f"{r['latency_ms'][k]:#.4g}" for k in ("median", "mean", "p90", "p99", "min")),
            f"{r['throughput']:.1f}",
            f"{r['speedup']:.2f}x",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *body]
    ]
    env = result.get("environment", {})
    lines.append(_method_line(env, names[rows[0]["model"]] if rows else ""))
    lines.extend(f"warning: {w}" for w in env.get("warnings", []))
    return "\n".join(lines)


def _method_line(env: dict, first: str) -> str:
    backend = env.get("backend", {})
    bits = [f"backend {backend.get('backend', '?')}"]
    if backend.get("intra_op_threads"):
        bits.append(f"{backend['intra_op_threads']} threads")
    bits.append(f"timer {backend.get('timer', '?')}")
    method = env.get("method", {})
    if method:
        bits.append(
            f"{method['duration_s']:g} s per model and batch in {method['slices']} interleaved slices"
        )
    line = (
        f"{', '.join(bits)}; items/s = batch / mean latency; speedup = median of {first} / median"
    )
    notes = [backend[k] for k in ("inputs", "timing") if backend.get(k)]
    return "\n".join([line, *notes])


def _display_names(paths: list[str]) -> dict[str, str]:
    """File names when they are unique, full paths otherwise."""
    unique = list(dict.fromkeys(paths))
    short = {p: Path(p).name for p in unique}
    if len(set(short.values())) == len(unique):
        return short
    return {p: p for p in unique}
