"""`chase-deploy analyze`: what a Chase run did, as PNG plots and a markdown summary.

Everything comes from the run directory alone (``metrics.jsonl``, ``final.pt``, ``recipe.yaml``),
so a run can be analysed long after training, on any machine:

- ``amenable.png``: fraction of sparse-amenable channels per layer over training, by UMM, by WS and
  by either, at each logged ratio v: each channel against its own value at mask initialization
  (the paper's Figure 2; the definition is ``train.amenable``'s);
- ``widths.png``: kept channels of every prunable layer (the paper's Table 15 as a bar chart);
- ``density.png``: parameter density of every masked layer in ``final.pt``;
- ``schedules.png``: density and channel sparsity over optimizer steps, with every exploration and
  channel event and the epoch boundaries;
- ``curves.png``: training loss and validation accuracy per epoch;
- ``summary.md``: the numbers behind the plots.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.atomic import write_bytes, write_text
from train.errors import BadInput

PLOTS = ("amenable.png", "widths.png", "density.png", "schedules.png", "curves.png")


@dataclass
class Run:
    """A finished training run, read back from its directory."""

    path: Path
    ckpt: dict[str, Any]  # final.pt
    metrics: list[dict[str, Any]]

    @property
    def recipe(self) -> dict[str, Any]:
        return self.ckpt["recipe"]

    @property
    def plan_layers(self) -> dict[str, dict]:
        return (self.ckpt.get("channel_plan") or {}).get("layers", {})

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.metrics if m.get("event") == kind]


@dataclass(frozen=True)
class LayerWidth:
    name: str  # the channel group (a producer's module name for ordinary groups)
    width: int
    kept: int


@dataclass(frozen=True)
class LayerDensity:
    name: str  # parameter name
    shape: tuple[int, ...]
    active: int
    masked: bool  # density from the Chase mask (else from the non-zero values)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def density(self) -> float:
        return self.active / self.size if self.size else 1.0


def open_run(run_dir: str | Path) -> Run:
    """Read ``final.pt`` and ``metrics.jsonl`` of a run made by ``chase-deploy train``."""
    from train.checkpoint import load_checkpoint

    path = Path(run_dir)
    if not path.is_dir():
        raise BadInput(
            f"run directory {path}: no such directory; pass the --out of `chase-deploy train`"
        )
    missing = [n for n in ("final.pt", "metrics.jsonl") if not (path / n).is_file()]
    if missing:
        raise BadInput(
            f"{path} is not a finished run directory (no {' or '.join(missing)}); pass the --out of a "
            f"completed `chase-deploy train`"
        )
    ckpt = load_checkpoint(path / "final.pt")
    return Run(path, ckpt, _read_metrics(path / "metrics.jsonl"))


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise BadInput(
                f"{path}:{number}: not a JSON line; the metrics file is damaged"
            ) from None
    return records


def analyze_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the plots and ``summary.md`` into ``out`` (default RUN_DIR/analysis); returns summary.md."""
    run = open_run(run_dir)
    out = Path(out) if out is not None else run.path / "analysis"
    widths = layer_widths(run)
    densities = layer_densities(run)
    amenable = run.events("amenable")
    plots = {
        "amenable.png": plot_amenable(amenable) if amenable else None,
        "widths.png": plot_widths(widths) if widths else None,
        "density.png": plot_density(densities),
        "schedules.png": plot_schedules(run, sum(d.size for d in densities if d.masked)),
        "curves.png": plot_curves(run.events("epoch")),
    }
    for name, png in plots.items():
        if png is not None:
            write_bytes(out / name, png)
    summary = out / "summary.md"
    write_text(summary, summary_markdown(run, widths, densities, amenable, plots))
    return summary


# ----------------------------------------------------------------------------------------------
# Per-layer numbers


def layer_widths(run: Run) -> list[LayerWidth]:
    """Width and kept channels of every channel group the model declares (Table 15)."""
    from train.checkpoint import build_model_from_checkpoint

    model = build_model_from_checkpoint(run.ckpt, apply_masks=False)
    prune_skip = bool(run.recipe.get("chase", {}).get("prune_skip", False))
    plan = run.plan_layers
    rows = []
    for group in model.channel_groups(prune_skip=prune_skip):
        entry = plan.get(group.producers[0])
        kept = len(entry["kept"]) if entry else group.width
        rows.append(LayerWidth(group.name, group.width, kept))
    return rows


def layer_densities(run: Run) -> list[LayerDensity]:
    """Non-zero fraction of every Conv/Linear weight: from its mask, else from its values."""
    masks = run.ckpt.get("masks") or {}
    rows = []
    for name, tensor in run.ckpt["state_dict"].items():
        if not name.endswith(".weight") or tensor.dim() not in (2, 4):
            continue
        mask = masks.get(name)
        active = int(mask.sum()) if mask is not None else int((tensor != 0).sum())
        rows.append(LayerDensity(name, tuple(tensor.shape), active, masked=mask is not None))
    return rows


# ----------------------------------------------------------------------------------------------
# Plots (each returns PNG bytes; matplotlib's object API, no global pyplot state)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


AMENABLE_ROWS = (("umm", "UMM"), ("ws", "WS"), ("either", "UMM or WS"))


def _amenable_rows(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key, label) for key, label in AMENABLE_ROWS if key in event]


def plot_amenable(events: list[dict[str, Any]]) -> bytes:
    """A row per score (UMM, WS, either) x a column per ratio v: a thin line per layer, the pooled
    total bold."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    thresholds = events[-1]["thresholds"]
    layers = list(events[-1]["umm"])
    epochs = [e["epoch"] for e in events]
    cmap = colormaps["viridis"]
    rows = _amenable_rows(events[-1])
    fig = _figure(3.2 * len(thresholds) + 1.5, 3 * len(rows))
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
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if row == len(rows) - 1:
                ax.set_xlabel("epoch")
            if col == 0:
                ax.set_ylabel("amenable fraction")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.suptitle(
        "Sparse-amenable channels: WS rose / UMM fell by more than v relative to the channel's own "
        "value at initialization\n(thin: layers, shallow to deep = dark to light; bold: all layers)",
        fontsize=11,
    )
    return _png(fig)


def plot_widths(rows: list[LayerWidth]) -> bytes:
    fig = _figure(max(6.0, 0.45 * len(rows) + 2), 4)
    ax = fig.subplots()
    idx = list(range(len(rows)))
    ax.bar(idx, [r.width for r in rows], color="lightgray", label="dense width")
    ax.bar(idx, [r.kept for r in rows], color="tab:blue", label="kept channels")
    for i, r in enumerate(rows):
        ax.text(i, r.kept, str(r.kept), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(idx, [r.name for r in rows], rotation=70, ha="right", fontsize=7)
    ax.set(ylabel="channels", title="Kept channels per prunable layer")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_density(rows: list[LayerDensity]) -> bytes:
    fig = _figure(max(6.0, 0.4 * len(rows) + 2), 4)
    ax = fig.subplots()
    idx = list(range(len(rows)))
    colors = ["tab:orange" if r.masked else "lightgray" for r in rows]
    ax.bar(idx, [r.density for r in rows], color=colors)
    ax.set_xticks(
        idx, [r.name.removesuffix(".weight") for r in rows], rotation=70, ha="right", fontsize=7
    )
    ax.set(
        ylabel="non-zero fraction", ylim=(0, 1.05), title="Parameter density per layer (final.pt)"
    )
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_schedules(run: Run, maskable: int) -> bytes:
    """Density (with the soft-memory sawtooth) and channel sparsity against optimizer steps."""
    epochs = run.events("epoch")
    explorations = run.events("exploration")
    channel_events = run.events("channels")
    fig = _figure(9, 6)
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
    top.legend(fontsize=8)
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
    bottom.legend(fontsize=8)
    for ax in (top, bottom):
        for e in epochs:
            ax.axvline(e["step"], color="lightgray", lw=0.7, zorder=0)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_curves(epochs: list[dict[str, Any]]) -> bytes:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(9, 3.5)
    left, right = fig.subplots(1, 2)
    xs = [e["epoch"] for e in epochs]
    left.plot(xs, [e["train_loss"] for e in epochs], "o-", ms=3)
    left.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    right.plot(xs, [100 * e["val_acc"] for e in epochs], "o-", ms=3, color="tab:green")
    right.set(xlabel="epoch", ylabel="top-1 (%)", title="Validation accuracy")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _png(fig)


# ----------------------------------------------------------------------------------------------
# Summary


def summary_markdown(
    run: Run,
    widths: list[LayerWidth],
    densities: list[LayerDensity],
    amenable: list[dict[str, Any]],
    plots: dict[str, bytes | None],
) -> str:
    recipe, epochs = run.recipe, run.events("epoch")
    chase = recipe.get("chase", {})
    last = epochs[-1] if epochs else {}
    seconds = sum(e.get("seconds", 0.0) for e in epochs)
    lines = [
        f"# Analysis of {run.path}",
        "",
        f"Model `{recipe['model']['name']}` on `{recipe['data']['name']}`, {len(epochs)} epochs, "
        f"recipe density {chase.get('density')}, channel sparsity {chase.get('channel_sparsity')}, "
        f"criterion {chase.get('criterion')}, beta {chase.get('beta')}.",
        "",
        f"- final validation top-1: {_pct(last.get('val_acc'))}",
        f"- measured density: {_num(last.get('density'))}; channel sparsity: {_num(last.get('channel_sparsity'))}",
        f"- explorations: {len(run.events('exploration'))}; channel events: {len(run.events('channels'))}",
        f"- training time: {seconds:.0f} s",
        "",
    ]
    for name, png in plots.items():
        title = name.removesuffix(".png")
        lines += (
            [f"![{title}]({name})", ""] if png is not None else [f"_{title}: nothing to plot._", ""]
        )
    lines += _amenable_table(amenable)
    lines += [
        "## Kept channels per prunable layer",
        "",
        "| layer | width | kept | removed |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {w.name} | {w.width} | {w.kept} | {1 - w.kept / w.width:.0%} |" for w in widths]
    total_w, total_k = sum(w.width for w in widths), sum(w.kept for w in widths)
    if widths:
        lines.append(f"| **all** | {total_w} | {total_k} | {1 - total_k / total_w:.1%} |")
    lines += ["", "## Parameter density per layer", "", "| parameter | shape | weights | non-zero | density |",
              "|---|---|---:|---:|---:|"]  # fmt: skip
    lines += [
        f"| {d.name}{'' if d.masked else ' (unmasked)'} | {'x'.join(map(str, d.shape))} | {d.size} | "
        f"{d.active} | {d.density:.3f} |"
        for d in densities
    ]
    size, active = sum(d.size for d in densities), sum(d.active for d in densities)
    lines += [f"| **all** | | {size} | {active} | {active / max(size, 1):.4f} |", ""]
    return "\n".join(lines)


def _amenable_table(events: list[dict[str, Any]]) -> list[str]:
    if not events:
        return [
            "_No amenable statistics were logged (the Chase controller was off: a dense run)._",
            "",
        ]
    first, last = events[0], events[-1]
    head = " | ".join(f"v = {v:g}" for v in last["thresholds"])
    lines = [
        "## Sparse-amenable channels, all layers pooled",
        "",
        "Amenable at v: WS rose by more than v, or UMM fell by more than v, relative to the "
        "channel's own value at mask initialization.",
        "",
        f"| score | epoch | {head} |",
        "|---|---:|" + "---:|" * len(last["thresholds"]),
    ]
    for key, label in _amenable_rows(last):
        for e in (first, last):
            values = " | ".join(f"{x:.1%}" for x in e[f"{key}_total"])
            lines.append(f"| {label} | {e['epoch']} | {values} |")
    return [*lines, ""]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
