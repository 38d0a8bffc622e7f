"""report.md for `chase-deploy run`: tables people read, PNG plots beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chase_deploy import plots
from train.atomic import write_bytes, write_text
from train.config import Recipe, channel_until_epoch
from train.metrics import read_metrics
from train.run_dir import RunDir


def write_report(
    out: Path,
    recipe: Recipe,
    slim_report: dict[str, Any],
    benches: dict[str, str],
    accuracy: dict[str, float],
    timings: dict[str, float],
    twin: Path | None = None,
    int8: dict[str, dict] | None = None,
) -> Path:
    """``twin``: another run directory of the same recipe (a masked twin of a shrinking run)
    whose epoch times are plotted beside this run's. ``int8``: the ``quantize`` stage's results
    (``deploy.int8``), one entry per int8 model."""
    files = RunDir(out)
    metrics = read_metrics(files.metrics)
    epochs = [m for m in metrics if m.get("event") == "epoch"]
    layers = slim_report.get("layers", [])
    write_bytes(files.training_png, plots.plot_training(epochs))
    write_bytes(
        files.widths_png,
        plots.plot_widths([(r["name"], r["out_before"], r["out_after"]) for r in layers]),
    )
    bench_results = {b: json.loads(Path(p).read_text()) for b, p in benches.items()}
    lines = [
        f"# chase-deploy report: {recipe.model.name} on {recipe.data.name}",
        "",
        _summary(recipe, epochs),
        "",
        *_budget_capped(metrics),
        *_sources(files, recipe),
        "## Dense vs slim",
        "",
        *_comparison(files, slim_report, accuracy, bench_results),
        "",
        *_int8_notes(int8 or {}),
        *_fronts(files, accuracy, bench_results),
        "## Training",
        "",
        f"![training curves]({files.training_png.name})",
        "",
        *_training_table(epochs),
        "",
        *_epoch_time(files, recipe, metrics, twin),
        "## Per-layer widths (the paper's Table 15 view)",
        "",
        f"![kept channels per layer]({files.widths_png.name})",
        "",
        *_widths_table(layers),
        "",
    ]
    for backend, result in bench_results.items():
        lines += [
            f"## Benchmark: {backend}",
            "",
            f"![{backend}]({files.bench_png(backend).name})",
            "",
            *_bench_table(result),
            "",
        ]
    env = next(iter(bench_results.values()), {}).get("environment", {})
    lines += ["## Environment", "", *_environment(env), ""]
    lines += ["## Stage times", "", *[f"- {k}: {v:.1f} s" for k, v in timings.items()], ""]
    write_text(files.report, "\n".join(lines))
    return files.report


def _epoch_time(files: RunDir, recipe: Recipe, metrics: list[dict], twin: Path | None) -> list[str]:
    """Seconds per epoch of a shrinking run beside its masked twin's: shown when the recipe
    shrinks (``chase.shrink``) or a twin is given (``run --twin``)."""
    if not recipe.chase.shrink and twin is None:
        return []
    epochs = [m for m in metrics if m.get("event") == "epoch"]
    label = "shrunk (this run)" if recipe.chase.shrink else "this run"
    series = {label: [(e["epoch"], e["seconds"]) for e in epochs]}
    twin_epochs: list[dict] = []
    if twin is not None:
        twin_epochs = [m for m in read_metrics(RunDir(twin).metrics) if m.get("event") == "epoch"]
        twin_label = "masked twin" if recipe.chase.shrink else "twin"
        series[f"{twin_label} ({twin.name})"] = [(e["epoch"], e["seconds"]) for e in twin_epochs]
    end = channel_until_epoch(recipe) if recipe.chase.channel_sparsity > 0 else None
    shrinks = [m["epoch"] for m in metrics if m.get("event") == "shrink"]
    write_bytes(files.epoch_time_png, plots.plot_epoch_time(series, end, shrinks))
    lines = ["## Epoch time", "", f"![epoch time]({files.epoch_time_png.name})", ""]
    if recipe.chase.shrink:
        lines.append(
            f"The model was rebuilt physically smaller {len(shrinks)} time(s) as channels were "
            f"removed (`chase.shrink`); training computes the same as the masked model."
        )
    after = [e["seconds"] for e in epochs if end is None or e["epoch"] > end]
    twin_after = [e["seconds"] for e in twin_epochs if end is None or e["epoch"] > end]
    when = f"after channel pruning ended (epochs > {end})" if end is not None else "per epoch"
    if after:
        text = f"Mean epoch time {when}: {_mean(after):.2f} s"
        if twin_after:
            text += (
                f", twin {_mean(twin_after):.2f} s: ratio {_mean(after) / _mean(twin_after):.2f}"
            )
        lines.append(text + ".")
    if twin is None:
        lines.append(
            "No masked twin given: train the same recipe with `--set chase.shrink=false` into "
            "another directory and pass it as `chase-deploy run RECIPE --twin DIR` to plot it here."
        )
    return [*lines, ""]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _summary(recipe: Recipe, epochs: list[dict]) -> str:
    c = recipe.chase
    last = epochs[-1] if epochs else {}
    total = sum(e.get("seconds", 0.0) for e in epochs)
    return (
        f"Chase at density {c.density:g} (parameter sparsity {1 - c.density:.0%}) and channel sparsity "
        f"{c.channel_sparsity:g}, {recipe.train.epochs} epochs, seed {recipe.seed}. Final validation accuracy "
        f"{last.get('val_acc', float('nan')):.2%}; measured density {last.get('density', float('nan')):.4f}, "
        f"channel sparsity {last.get('channel_sparsity', float('nan')):.4f}; training took {total:.0f} s."
    )


def _budget_capped(metrics: list[dict]) -> list[str]:
    """The ``budget_capped`` event, if channel pruning left less room than the budget."""
    event = next((m for m in metrics if m.get("event") == "budget_capped"), None)
    if event is None:
        return []
    return [
        f"**Budget capped** at step {event['step']}: the alive channels hold "
        f"{event['capacity']:,} weights, fewer than the budget B = {event['budget']:,}, so the "
        f"density stays below its target (every alive position is active; lower "
        f"`chase.channel_sparsity` or `chase.density` to keep B).",
        "",
    ]


def _sources(files: RunDir, recipe: Recipe) -> list[str]:
    """What the run started from (``model.weights``) and learnt from (``train.distill``)."""
    if not files.sources.exists():
        return []
    sources = json.loads(files.sources.read_text())
    lines = []
    weights = sources.get("weights")
    if weights:
        ignored = f"; left at init: {len(weights['ignored'])} keys" if weights["ignored"] else ""
        lines.append(
            f"- Started from `{weights['path']}` ({weights['format']}, sha256 "
            f"`{weights['sha256'][:12]}`{ignored})."
        )
    teacher = sources.get("teacher")
    if teacher:
        cfg = recipe.train.distill
        lines.append(
            f"- Distilled from `{teacher['path']}` (sha256 `{teacher['sha256'][:12]}`), "
            f"alpha {cfg.alpha:g}, temperature {cfg.temperature:g}."
        )
    return [*lines, ""] if lines else []


def _model_name(path: str) -> str:
    """``.../dense.int8.onnx`` or ``.../dense.int8.engine`` -> ``dense.int8``."""
    return Path(path).stem


def _comparison(files: RunDir, slim: dict, accuracy: dict, benches: dict[str, dict]) -> list[str]:
    """One row per model (dense, slim, and their int8 versions): top-1, size, speed."""
    params, flops = slim.get("params", {}), slim.get("flops", {})
    rows = []
    bench_cols = {}
    for backend, res in benches.items():
        for r in res["results"]:
            bench_cols.setdefault((backend, r["batch"]), {})[_model_name(r["model"])] = r
    batch_keys = sorted(bench_cols)
    header = "| model | top-1 (ORT) | parameters | FLOPs | file size |" + "".join(
        f" {b} b{n}: ms / items/s / speedup |" for b, n in batch_keys
    )
    sep = "|---|---|---|---|---|" + "---|" * len(batch_keys)
    names = ["dense", "slim", *(n for n in accuracy if n not in ("dense", "slim"))]
    for name in names:
        fp32 = name.split(".")[0]  # an int8 model has its fp32 model's parameters and FLOPs
        path = files.onnx(name)
        cells = [
            name,
            f"{accuracy.get(name, float('nan')):.2%}",
            f"{params.get(fp32, 0):,}",
            _gflops(flops.get(fp32, 0)) + (" (int8)" if name != fp32 else ""),
            f"{path.stat().st_size / 1e6:.3f} MB" if path.is_file() else "-",
        ]
        for key in batch_keys:
            r = bench_cols[key].get(name)
            cells.append(
                f"{r['latency_ms']['median']:.3f} / {r['throughput']:.0f} / {r['speedup']:.2f}x"
                if r
                else "-"
            )
        rows.append("| " + " | ".join(cells) + " |")
    note = (
        f"Sparse FLOPs (non-zero weights only): {_gflops(flops.get('sparse', 0))}. FLOP bound of the slim "
        f"model: {flops.get('dense', 0) / max(flops.get('slim', 1), 1):.2f}x. Slim verified lossless: "
        f"{slim.get('lossless')} (max abs diff {slim.get('max_abs_diff', float('nan')):.2e})."
    )
    notes = [f"Slim: {line}." for line in slim.get("notes", [])]
    return [header, sep, *rows, "", note, *notes]


def _int8_notes(int8: dict[str, dict]) -> list[str]:
    """What the int8 rows are: target, calibration, top-1 drop and agreement, MACs in int8."""
    lines = []
    for name, r in int8.items():
        lines.append(
            f"- {name}: `quantize --target {r['target']} --method {r['method']}` on "
            f"{r['samples']} training images; top-1 {r['top1_fp32']:.2%} -> {r['top1_int8']:.2%} "
            f"({r['drop_points']:+.2f} points drop), agreement with fp32 {r['agreement']:.2%}, "
            f"{r['int8_mac_share']:.0%} of MACs in int8."
        )
    return [*lines, ""] if lines else []


def _fronts(files: RunDir, accuracy: dict[str, float], benches: dict[str, dict]) -> list[str]:
    """Top-1 against throughput at the largest batch, one plot per backend."""
    lines = []
    for backend, result in benches.items():
        largest = max(r["batch"] for r in result["results"])
        points = [
            {
                "label": _model_name(r["model"]),
                "group": "int8" if ".int8" in _model_name(r["model"]) else "fp32",
                "throughput": r["throughput"],
                "top1": 100 * accuracy.get(_model_name(r["model"]), float("nan")),
            }
            for r in result["results"]
            if r["batch"] == largest
        ]
        title = f"top-1 against throughput, {backend}, batch {largest}"
        write_bytes(files.front_png(backend), plots.plot_front(points, title))
        lines += [f"![{title}]({files.front_png(backend).name})", ""]
    return lines


def _environment(env: dict) -> list[str]:
    """Scalars as a list; the benchmark's method in one line; its warnings verbatim."""
    lines = [f"- {k}: {v}" for k, v in env.items() if not isinstance(v, (dict, list))]
    method = env.get("method", {})
    if method:
        lines.append(
            f"- method: {method.get('interleaving', '')}; timer {method.get('timer', '')}; "
            f"warm-up {method.get('warmup_ms')} ms, {method.get('duration_s')} s per model and batch"
        )
    lines += [f"- warning: {w}" for w in env.get("warnings", [])]
    return lines


def _gflops(value: float) -> str:
    return f"{value / 1e9:.3f} G" if value >= 1e8 else f"{value / 1e6:.2f} M"


def _training_table(epochs: list[dict]) -> list[str]:
    rows = [
        "| epoch | train loss | val acc | density | channel sparsity | lr | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    step = max(1, len(epochs) // 10)
    for e in epochs[::step] + ([epochs[-1]] if epochs and (len(epochs) - 1) % step else []):
        rows.append(
            f"| {e['epoch']} | {e['train_loss']:.4f} | {e['val_acc']:.2%} | {e['density']:.4f} | "
            f"{e['channel_sparsity']:.4f} | {e['lr']:.4g} | {e['seconds']:.1f} |"
        )
    return rows


def _widths_table(layers: list[dict]) -> list[str]:
    rows = ["| layer | dense width | kept | kept % |", "|---|---|---|---|"]
    for layer in layers:
        before, after = layer["out_before"], layer["out_after"]
        rows.append(f"| {layer['name']} | {before} | {after} | {after / before:.0%} |")
    return rows


def _bench_table(result: dict) -> list[str]:
    rows = [
        "| model | batch | median ms | p90 ms | p99 ms | items/s | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lat = r["latency_ms"]
        rows.append(
            f"| {Path(r['model']).name} | {r['batch']} | {lat['median']:.3f} | {lat['p90']:.3f} | "
            f"{lat['p99']:.3f} | {r['throughput']:.0f} | {r['speedup']:.2f}x |"
        )
    return rows
