"""Benchmark plots: latency and throughput against batch size, speedup bars per batch size.

Drawn on a bare matplotlib Figure with the Agg canvas, so no GUI backend and no pyplot global
state are involved (safe in threads, servers and tests).
"""

from __future__ import annotations

from pathlib import Path


def write_plot(result: dict, path: str | Path) -> Path:
    """Render the ``bench`` result dict to a PNG at ``path`` (written atomically)."""
    from train.atomic import atomic_path

    with atomic_path(path) as tmp:
        render_plot(result, tmp)
    return Path(path)


def render_plot(result: dict, path: str | Path) -> None:
    """Draw the three panels and save them as PNG to ``path`` (not atomic: see write_plot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = _series(result)
    batches = sorted({b for rows in series.values() for b in rows})
    fig = Figure(figsize=(15, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    latency, throughput, speedup = fig.subplots(1, 3)
    for name, rows in series.items():
        xs = sorted(rows)
        median = [rows[b]["latency_ms"]["median"] for b in xs]
        p90 = [rows[b]["latency_ms"]["p90"] for b in xs]
        low = [m - rows[b]["latency_ms"]["min"] for m, b in zip(median, xs, strict=True)]
        high = [p - m for p, m in zip(p90, median, strict=True)]
        latency.errorbar(xs, median, yerr=[low, high], marker="o", capsize=3, label=name)
        throughput.plot(xs, [rows[b]["throughput"] for b in xs], marker="o", label=name)
    for ax, title, unit in (
        (latency, "latency (median, bars: min to p90)", "ms per batch"),
        (throughput, "throughput", "items / s"),
    ):
        ax.set_title(title)
        ax.set_xlabel("batch size")
        ax.set_ylabel(unit)
        if len(batches) > 1 and batches[-1] / batches[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _speedup_bars(speedup, series, batches)
    backend = result.get("environment", {}).get("backend", {}).get("backend", "")
    fig.suptitle(f"chase-deploy bench ({backend})" if backend else "chase-deploy bench")
    fig.tight_layout()
    fig.savefig(str(path), format="png")


def _speedup_bars(ax, series: dict[str, dict[int, dict]], batches: list[int]) -> None:
    names = list(series)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(batches))]
        ys = [series[name][b]["speedup"] if b in series[name] else 0.0 for b in batches]
        bars = ax.bar(xs, ys, width=width, label=name)
        ax.bar_label(bars, labels=[f"{y:.2f}x" for y in ys], fontsize="x-small")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_title(f"speedup vs {names[0]}" if names else "speedup")
    ax.set_xlabel("batch size")
    ax.set_ylabel("median latency ratio")
    ax.legend(fontsize="small")


def _series(result: dict) -> dict[str, dict[int, dict]]:
    """Results grouped as {model label: {batch: row}}; the i-th row of each batch is model i.

    Labels are file names where unambiguous, else paths; a model listed twice (an A/A run)
    gets its position appended so that both series stay visible.
    """
    by_batch: dict[int, list[dict]] = {}
    for row in result["results"]:
        by_batch.setdefault(row["batch"], []).append(row)
    models = [row["model"] for row in next(iter(by_batch.values()), [])]
    labels = [Path(m).name for m in models]
    if len(set(labels)) < len(labels):
        labels = list(models)
    labels = [f"{x} ({i + 1})" if labels.count(x) > 1 else x for i, x in enumerate(labels)]
    series: dict[str, dict[int, dict]] = {label: {} for label in labels}
    for batch, rows in by_batch.items():
        for label, row in zip(labels, rows, strict=False):
            series[label][batch] = row
    return series
