"""Every plot the tools draw, in one style: ``analyze``, ``ablate``, ``bench --plot`` and ``run``.

Each function takes plain numbers and returns PNG bytes; the caller writes them (atomically).
Figures are bare ``matplotlib.figure.Figure`` objects on the Agg canvas, so no GUI backend and
no pyplot global state are involved (safe in threads, servers and tests, nothing to close).
One style throughout: constrained layout, 100 dpi, light grids, small legends.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DPI = 100
GRID_ALPHA = 0.3
LEGEND_SIZE = 8
TICK_SIZE = 7


def figure(width: float, height: float):
    """A Figure of ``width`` x ``height`` inches on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Training: curves, schedules, amenable channels, widths, densities


def plot_training(epochs: Sequence[dict[str, Any]]) -> bytes:
    """Training loss, validation top-1 and sparsity per epoch (``metrics.jsonl`` epoch lines)."""
    from matplotlib.ticker import MaxNLocator

    fig = figure(13, 3.6)
    loss, acc, sparsity = fig.subplots(1, 3)
    xs = [e["epoch"] for e in epochs]
    loss.plot(xs, [e["train_loss"] for e in epochs], "o-", ms=3)
    loss.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    acc.plot(xs, [100 * e["val_acc"] for e in epochs], "o-", ms=3, color="tab:green")
    acc.set(xlabel="epoch", ylabel="top-1 (%)", title="Validation accuracy")
    sparsity.plot(xs, [e["density"] for e in epochs], "o-", ms=3, label="density")
    sparsity.plot(xs, [e["channel_sparsity"] for e in epochs], "o-", ms=3, label="channel sparsity")
    sparsity.set(xlabel="epoch", ylim=(0, 1.05), title="Sparsity")
    sparsity.legend(fontsize=LEGEND_SIZE)
    for ax in (loss, acc, sparsity):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=GRID_ALPHA)
    return png(fig)


def plot_epoch_time(
    series: dict[str, Sequence[tuple[int, float]]],
    pruning_end: int | None = None,
    shrinks: Sequence[int] = (),
) -> bytes:
    """Seconds per epoch of one or more runs ({label: [(epoch, seconds)]}): a shrinking run beside
    its masked twin. ``pruning_end``: the epoch channel pruning ends with; ``shrinks``: epochs in
    which the model was rebuilt smaller."""
    from matplotlib.ticker import MaxNLocator

    fig = figure(7, 3.8)
    ax = fig.subplots()
    for label, points in series.items():
        ax.plot([e for e, _ in points], [s for _, s in points], "o-", ms=3, label=label)
    for i, epoch in enumerate(sorted(set(shrinks))):
        ax.axvline(
            epoch, color="tab:green", lw=0.8, ls=":", label="model rebuilt" if i == 0 else None
        )
    if pruning_end:
        ax.axvline(pruning_end + 0.5, color="gray", lw=1, ls="--", label="channel pruning ends")
    ax.set(xlabel="epoch", ylabel="seconds", title="Epoch time (training + validation)")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=GRID_ALPHA)
    ax.legend(fontsize=LEGEND_SIZE)
    return png(fig)


def plot_schedules(
    epochs: Sequence[dict[str, Any]],
    explorations: Sequence[dict[str, Any]],
    channel_events: Sequence[dict[str, Any]],
    maskable: int,
) -> bytes:
    """Density (with the soft-memory sawtooth) and channel sparsity against optimizer steps."""
    fig = figure(9, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    if explorations and maskable:
        steps = [e["step"] for e in explorations]
        before = [(e["nnz"] - e["grown"]) / maskable for e in explorations]
        after = [e["nnz"] / maskable for e in explorations]
        top.vlines(steps, before, after, color="tab:gray", lw=0.8)
        top.plot(steps, after, ".", ms=5, color="tab:orange", label="after grow (exploration)")
        top.plot(steps, before, ".", ms=5, color="tab:blue", label="before grow (exploration)")
        top.axhline(
            explorations[0]["budget"] / maskable, color="gray", ls="--", lw=1, label="budget"
        )
    top.plot(
        [e["step"] for e in epochs],
        [e["density"] for e in epochs],
        "o",
        color="black",
        ms=4,
        label="epoch end",
    )
    top.set(ylabel="density (masked weights)", title="Density and channel sparsity over training")
    top.legend(fontsize=LEGEND_SIZE)
    if channel_events:
        end = max([e["step"] for e in epochs] + [e["step"] for e in channel_events])
        steps = [0] + [e["step"] for e in channel_events] + [end]
        sparsity = [0.0] + [e["channel_sparsity"] for e in channel_events]
        bottom.step(steps, [*sparsity, sparsity[-1]], where="post", color="tab:red",
                    label="channel sparsity")  # fmt: skip
        bottom.plot(steps[1:-1], [e["target_sparsity"] for e in channel_events], ".", ms=5, color="gray",
                    label="schedule target at each event")  # fmt: skip
    bottom.plot(
        [e["step"] for e in epochs], [e["channel_sparsity"] for e in epochs], "o", color="black", ms=4,
        label="epoch end",
    )  # fmt: skip
    bottom.set(xlabel="optimizer step", ylabel="channel sparsity", ylim=(-0.02, 1.0))
    bottom.legend(fontsize=LEGEND_SIZE)
    for ax in (top, bottom):
        for e in epochs:
            ax.axvline(e["step"], color="lightgray", lw=0.7, zorder=0)
        ax.grid(axis="y", alpha=GRID_ALPHA)
    return png(fig)


AMENABLE_ROWS = (("umm", "UMM"), ("ws", "WS"), ("either", "UMM or WS"))


def amenable_rows(event: dict[str, Any]) -> list[tuple[str, str]]:
    """The scores an ``amenable`` metrics event holds, with their labels."""
    return [(key, label) for key, label in AMENABLE_ROWS if key in event]


def plot_amenable(events: Sequence[dict[str, Any]]) -> bytes:
    """A row per score (UMM, WS, either) x a column per ratio v: a thin line per layer, the pooled
    total bold."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    thresholds = events[-1]["thresholds"]
    layers = list(events[-1]["umm"])
    epochs = [e["epoch"] for e in events]
    cmap = colormaps["viridis"]
    rows = amenable_rows(events[-1])
    fig = figure(3.2 * len(thresholds) + 1.5, 3 * len(rows))
    axes = fig.subplots(len(rows), len(thresholds), sharex=True, sharey=True, squeeze=False)
    # Zoom to the data (shared by all panels, so they still compare), at least 0..0.1.
    peak = max(
        (max(fracs) for e in events for key, _ in rows for fracs in e[key].values() if fracs),
        default=0.0,
    )
    top = min(1.02, max(0.1, 1.15 * peak))
    for row, (key, label) in enumerate(rows):
        for col, v in enumerate(thresholds):
            ax = axes[row][col]
            for i, layer in enumerate(layers):
                ys = [e[key][layer][col] if layer in e[key] else float("nan") for e in events]
                color = cmap(i / max(1, len(layers) - 1))
                ax.plot(epochs, ys, lw=0.8, alpha=0.6, color=color)
            total = [e[f"{key}_total"][col] for e in events]
            ax.plot(epochs, total, lw=2.2, color="black", label="all layers")
            ax.set_title(f"{label}, v = {v:g}", fontsize=10)
            ax.set_ylim(-0.01 * top, top)
            ax.grid(alpha=GRID_ALPHA)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row == len(rows) - 1:
                ax.set_xlabel("epoch")
            if col == 0:
                ax.set_ylabel("amenable fraction")
    axes[0][0].legend(loc="upper left", fontsize=LEGEND_SIZE)
    fig.suptitle(
        "Sparse-amenable channels: WS rose / UMM fell by more than v relative to the channel's own "
        "value at initialization\n(thin: layers, shallow to deep = dark to light; bold: all layers)",
        fontsize=11,
    )
    return png(fig)


def plot_widths(rows: Sequence[tuple[str, int, int]]) -> bytes:
    """Kept channels against the dense width, one bar per layer: (name, width, kept) rows."""
    fig = figure(max(6.0, 0.45 * len(rows) + 2), 4)
    ax = fig.subplots()
    idx = list(range(len(rows)))
    ax.bar(idx, [width for _, width, _ in rows], color="lightgray", label="dense width")
    ax.bar(idx, [kept for _, _, kept in rows], color="tab:blue", label="kept channels")
    for i, (_, _, kept) in enumerate(rows):
        ax.text(i, kept, str(kept), ha="center", va="bottom", fontsize=TICK_SIZE)
    ax.set_xticks(idx, [name for name, _, _ in rows], rotation=70, ha="right", fontsize=TICK_SIZE)
    ax.set(ylabel="channels", title="Kept channels per layer")
    ax.grid(axis="y", alpha=GRID_ALPHA)
    ax.legend(fontsize=LEGEND_SIZE)
    return png(fig)


def plot_density(rows: Sequence[tuple[str, float, bool]]) -> bytes:
    """Non-zero fraction per parameter: (name, density, masked) rows; masked ones in colour."""
    fig = figure(max(6.0, 0.4 * len(rows) + 2), 4)
    ax = fig.subplots()
    idx = list(range(len(rows)))
    colors = ["tab:orange" if masked else "lightgray" for _, _, masked in rows]
    ax.bar(idx, [density for _, density, _ in rows], color=colors)
    names = [name.removesuffix(".weight") for name, _, _ in rows]
    ax.set_xticks(idx, names, rotation=70, ha="right", fontsize=TICK_SIZE)
    ax.set(
        ylabel="non-zero fraction", ylim=(0, 1.05), title="Parameter density per layer (final.pt)"
    )
    ax.grid(axis="y", alpha=GRID_ALPHA)
    return png(fig)


# ----------------------------------------------------------------------------------------------
# ablate: accuracy against channel sparsity per criterion


def plot_ablation(result: dict[str, Any]) -> bytes:
    """Accuracy against channel sparsity, one line per criterion; reversed ones dashed."""
    from matplotlib import colormaps

    fig = figure(7, 4.5)
    ax = fig.subplots()
    colors = colormaps["tab10"]
    bases = list(dict.fromkeys(c.removesuffix("_reverse") for c in result["criteria"]))
    table: dict[str, dict[float, tuple[float, float]]] = {}
    for r in result["results"]:
        cell = (r["val_acc"], r.get("val_acc_std", 0.0))
        table.setdefault(r["criterion"], {})[r["channel_sparsity"]] = cell
    for criterion, row in table.items():
        xs = sorted(row)
        ys = [100 * row[s][0] for s in xs]
        errs = [100 * row[s][1] for s in xs]
        if xs[0] > 0:  # every line starts at the unpruned model
            xs, ys = [0.0, *xs], [100 * result["baseline_acc"], *ys]
            errs = [100 * result.get("baseline_std", 0.0), *errs]
        ax.errorbar(  # error bars: std over the source runs (none for one run)
            xs,
            ys,
            yerr=errs if any(errs) else None,
            capsize=2,
            marker="o",
            ms=4,
            ls="--" if criterion.endswith("_reverse") else "-",
            color=colors(bases.index(criterion.removesuffix("_reverse"))),
            label=criterion,
        )
    ax.axhline(100 * result["baseline_acc"], color="gray", lw=1, ls=":", label="unpruned")
    ax.set(
        xlabel="channel sparsity (one-shot, no retraining)",
        ylabel="validation top-1 (%)",
        title=f"Channel criteria: {result['model']} on {result['data']}",
    )
    ax.grid(alpha=GRID_ALPHA)
    ax.legend(fontsize=LEGEND_SIZE, ncol=2)
    return png(fig)


# ----------------------------------------------------------------------------------------------
# bench: latency and throughput against batch size, speedup bars per batch size


def plot_bench(result: dict[str, Any]) -> bytes:
    """The three panels of a ``bench`` result: latency, throughput, speedup."""
    series = _series(result)
    batches = sorted({b for rows in series.values() for b in rows})
    fig = figure(15, 4.5)
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
        ax.set(title=title, xlabel="batch size", ylabel=unit)
        if len(batches) > 1 and batches[-1] / batches[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.grid(alpha=GRID_ALPHA)
        ax.legend(fontsize=LEGEND_SIZE)
    _speedup_bars(speedup, series, batches)
    backend = result.get("environment", {}).get("backend", {}).get("backend", "")
    fig.suptitle(f"chase-deploy bench ({backend})" if backend else "chase-deploy bench")
    return png(fig)


def _speedup_bars(ax, series: dict[str, dict[int, dict]], batches: list[int]) -> None:
    names = list(series)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(batches))]
        ys = [series[name][b]["speedup"] if b in series[name] else 0.0 for b in batches]
        bars = ax.bar(xs, ys, width=width, label=name)
        ax.bar_label(bars, labels=[f"{y:.2f}x" for y in ys], fontsize=TICK_SIZE)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set(
        title=f"speedup vs {names[0]}" if names else "speedup",
        xlabel="batch size",
        ylabel="median latency ratio",
    )
    ax.grid(axis="y", alpha=GRID_ALPHA)
    ax.legend(fontsize=LEGEND_SIZE)


def _series(result: dict[str, Any]) -> dict[str, dict[int, dict]]:
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


# ----------------------------------------------------------------------------------------------
# The accuracy-speed front: top-1 against measured throughput, fp32 and int8


def plot_front(
    points: Sequence[dict[str, Any]], title: str, xlabel: str = "throughput (items / s)"
) -> bytes:
    """Top-1 against throughput; ``points``: {"label", "group", "throughput", "top1" (%),
    optional "top1_std"}. Points of one group are joined in throughput order (a front); int8
    groups (a name containing "int8") are drawn dashed with hollow markers, in the colour of
    the same name without "int8"."""
    fig = figure(8, 5.5)
    ax = fig.subplots()
    groups: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        groups.setdefault(point["group"], []).append(point)
    families = list(dict.fromkeys(g.replace("int8", "").strip() for g in groups))
    for group, members in groups.items():
        members = sorted(members, key=lambda p: p["throughput"])
        int8 = "int8" in group
        color = f"C{families.index(group.replace('int8', '').strip()) % 10}"  # fp32 and int8 alike
        xs = [p["throughput"] for p in members]
        ys = [p["top1"] for p in members]
        errs = [p.get("top1_std") or 0.0 for p in members]
        ax.errorbar(
            xs,
            ys,
            yerr=errs if any(errs) else None,
            color=color,
            linestyle="--" if int8 else "-",
            marker="s" if int8 else "o",
            markerfacecolor="none" if int8 else color,
            capsize=3,
            label=group,
        )
        for p in members:
            ax.annotate(
                p["label"],
                (p["throughput"], p["top1"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=TICK_SIZE,
                color=color,
            )
    ax.set(xlabel=xlabel, ylabel="top-1 (%)", title=title)
    ax.grid(alpha=GRID_ALPHA)
    ax.legend(fontsize=LEGEND_SIZE)
    return png(fig)
