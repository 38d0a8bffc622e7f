"""report.md for `chase-deploy run`: tables people read, PNG plots beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from train.atomic import write_text
from train.config import Recipe
from train.metrics import read_metrics


def write_report(
    out: Path,
    recipe: Recipe,
    slim_report: dict[str, Any],
    benches: dict[str, str],
    accuracy: dict[str, float],
    timings: dict[str, float],
) -> Path:
    metrics = read_metrics(out / "metrics.jsonl")
    epochs = [m for m in metrics if m.get("event") == "epoch"]
    plot_training(epochs, out / "training.png")
    plot_widths(slim_report.get("layers", []), out / "widths.png")
    bench_results = {b: json.loads(Path(p).read_text()) for b, p in benches.items()}
    lines = [
        f"# chase-deploy report: {recipe.model.name} on {recipe.data.name}",
        "",
        _summary(recipe, epochs),
        "",
        "## Dense vs slim",
        "",
        *_comparison(slim_report, accuracy, bench_results),
        "",
        "## Training",
        "",
        "![training curves](training.png)",
        "",
        *_training_table(epochs),
        "",
        "## Per-layer widths (the paper's Table 15 view)",
        "",
        "![kept channels per layer](widths.png)",
        "",
        *_widths_table(slim_report.get("layers", [])),
        "",
    ]
    for backend, result in bench_results.items():
        lines += [
            f"## Benchmark: {backend}",
            "",
            f"![{backend}](bench_{backend}.png)",
            "",
            *_bench_table(result),
            "",
        ]
    env = next(iter(bench_results.values()), {}).get("environment", {})
    lines += ["## Environment", "", *_environment(env), ""]
    lines += ["## Stage times", "", *[f"- {k}: {v:.1f} s" for k, v in timings.items()], ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


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


def _comparison(slim: dict, accuracy: dict, benches: dict[str, dict]) -> list[str]:
    params, flops = slim.get("params", {}), slim.get("flops", {})
    rows = []
    bench_cols = {}
    for backend, res in benches.items():
        for r in res["results"]:
            bench_cols.setdefault((backend, r["batch"]), {})[
                Path(r["model"]).stem.split(".")[0]
            ] = r
    batch_keys = sorted(bench_cols)
    header = "| model | top-1 (ORT) | parameters | FLOPs |" + "".join(
        f" {b} b{n}: ms / items/s / speedup |" for b, n in batch_keys
    )
    sep = "|---|---|---|---|" + "---|" * len(batch_keys)
    for name in ("dense", "slim"):
        cells = [
            name,
            f"{accuracy.get(name, float('nan')):.2%}",
            f"{params.get(name, 0):,}",
            _gflops(flops.get(name, 0)),
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
    return [header, sep, *rows, "", note]


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


def plot_training(epochs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [e["epoch"] for e in epochs]
    axes[0].plot(x, [e["train_loss"] for e in epochs], marker=".")
    axes[0].set(title="train loss", xlabel="epoch")
    axes[1].plot(x, [100 * e["val_acc"] for e in epochs], marker=".", color="tab:green")
    axes[1].set(title="validation top-1 (%)", xlabel="epoch")
    axes[2].plot(x, [e["density"] for e in epochs], marker=".", label="density")
    axes[2].plot(x, [e["channel_sparsity"] for e in epochs], marker=".", label="channel sparsity")
    axes[2].set(title="sparsity", xlabel="epoch", ylim=(0, 1.05))
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_widths(layers: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [layer["name"] for layer in layers]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    idx = range(len(names))
    ax.bar(idx, [layer["out_before"] for layer in layers], color="lightgray", label="dense width")
    ax.bar(idx, [layer["out_after"] for layer in layers], color="tab:blue", label="kept channels")
    ax.set_xticks(list(idx), names, rotation=70, ha="right", fontsize=7)
    ax.set(ylabel="channels", title="channels kept per layer")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    from train.atomic import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
