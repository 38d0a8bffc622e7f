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
- ``curves.png``: training loss, validation accuracy and sparsity per epoch;
- ``summary.md``: the numbers behind the plots, and the training FLOPs against the dense
  equivalent (``train.training_flops``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chase_deploy import plots
from train.atomic import write_bytes, write_text
from train.errors import BadInput
from train.run_dir import RunDir

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

    @property
    def files(self) -> RunDir:
        return RunDir(self.path)

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

    files = RunDir(Path(run_dir))
    path = files.path
    if not path.is_dir():
        raise BadInput(
            f"run directory {path}: no such directory; pass the --out of `chase-deploy train`"
        )
    missing = [f.name for f in (files.final, files.metrics) if not f.is_file()]
    if missing:
        raise BadInput(
            f"{path} is not a finished run directory (no {' or '.join(missing)}); pass the --out of a "
            f"completed `chase-deploy train`"
        )
    ckpt = load_checkpoint(files.final)
    return Run(path, ckpt, _read_metrics(files.metrics))


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
    out = Path(out) if out is not None else run.files.analysis
    widths = layer_widths(run)
    densities = layer_densities(run)
    amenable = run.events("amenable")
    maskable = sum(d.size for d in densities if d.masked)
    pngs = {
        "amenable.png": plots.plot_amenable(amenable) if amenable else None,
        "widths.png": plots.plot_widths([(w.name, w.width, w.kept) for w in widths])
        if widths
        else None,
        "density.png": plots.plot_density([(d.name, d.density, d.masked) for d in densities]),
        "schedules.png": plots.plot_schedules(
            run.events("epoch"), run.events("exploration"), run.events("channels"), maskable
        ),
        "curves.png": plots.plot_training(run.events("epoch")),
    }
    for name, png in pngs.items():
        if png is not None:
            write_bytes(out / name, png)
    summary = out / "summary.md"
    write_text(summary, summary_markdown(run, widths, densities, amenable, pngs))
    return summary


# ----------------------------------------------------------------------------------------------
# Per-layer numbers


def layer_widths(run: Run) -> list[LayerWidth]:
    """Width and kept channels of every prunable channel group of the model (Table 15)."""
    from chase_deploy.saved_groups import checkpoint_groups

    prune_skip = bool(run.recipe.get("chase", {}).get("prune_skip", False))
    plan = run.plan_layers
    rows = []
    for group in checkpoint_groups(run.ckpt, prune_skip):
        head = group.role("producer")[0]  # a mapped head lists outer·inner rows per channel
        entry = plan.get(head.name)
        kept = len(entry["kept"]) // (head.map.outer * head.map.inner) if entry else group.width
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
        f"- training FLOPs: {_training_flops(last)}",
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
    for key, label in plots.amenable_rows(last):
        for e in (first, last):
            values = " | ".join(f"{x:.1%}" for x in e[f"{key}_total"])
            lines.append(f"| {label} | {e['epoch']} | {values} |")
    return [*lines, ""]


def _training_flops(last: dict[str, Any]) -> str:
    """The run's cumulative training FLOPs against its dense equivalent (RigL's accounting,
    ``train.training_flops``)."""
    sparse, dense = last.get("train_flops"), last.get("train_flops_dense")
    if sparse is None or not dense:
        return "not recorded"
    return f"{sparse:.3e} of {dense:.3e} dense ({sparse / dense:.2f}x)"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
