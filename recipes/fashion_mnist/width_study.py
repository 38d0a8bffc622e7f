"""Does the gap to dense close with width? Dense against Chase S_c 0.5 at widths 8, 16 and 32.

    python recipes/fashion_mnist/width_study.py [RUNS_DIR] [--plot docs/fmnist_width_gap.png]

RUNS_DIR (default runs/fmnist) holds ``dense_w{W}/seed{S}`` and ``chase_sc05_w{W}/seed{S}``:
``dense.yaml`` and ``chase_sc05.yaml`` trained with ``--set model.width=W --set seed=S`` and
nothing else changed (5 epochs, batch 128, cosine LR; Chase at density 0.1 and S_c 0.5). Prints a
markdown table: per width, the parameters of the dense network and the weights Chase keeps, the
top-1 of both (the last epoch's validation accuracy on the 10 k test images, mean ± sample std
over the finished seeds) and the gap, dense − Chase, per seed (each seed's two runs start from the
same initial weights) and as mean ± std. ``--plot`` draws top-1 and the gap against width.
Unfinished runs (no final.pt) are left out.

Seeds whose run directory is absent come from ``RECORDED``, the per-seed top-1 of finished runs
published in ``recipes/fashion_mnist/README.md``, and are marked so in the table. Width 8 is the
recipes as they are: main's code reproduces that table bit for bit (dense_w8 seeds 0-2 and
chase_sc05_skip seed 0 were retrained and matched it exactly), so those runs were not repeated.
dense_w16, chase_sc05_w16 and dense_w32 seed 0 finished on 2026-12-07 on a development machine
that was then reset, run directories included; their last-epoch top-1 was recorded (dense_w32
seed 0, per epoch: 76.44, 85.40, 86.59, 90.01, 90.63). A run directory of the same seed, when
present, takes precedence.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

WIDTHS = (8, 16, 32)
DENSE, CHASE = "dense", "chase_sc05"
DENSITY = 0.1  # chase_sc05.yaml's chase.density
# Finished runs whose directories are gone, per seed (see the module docstring).
RECORDED = {
    (DENSE, 8): {0: 0.8807, 1: 0.8781, 2: 0.8839},
    (CHASE, 8): {0: 0.8454, 1: 0.8416, 2: 0.8462},
    (DENSE, 16): {0: 0.8961},
    (CHASE, 16): {0: 0.8725},
    (DENSE, 32): {0: 0.9063},
}


@dataclass
class Width:
    width: int
    dense: dict[int, float]  # seed -> top-1 (fraction)
    chase: dict[int, float]
    params: int  # every parameter of the dense network
    weights: int  # its Conv/Linear weights, N
    recorded: tuple[str, ...] = ()  # "dense seed 0", ...: seeds taken from RECORDED

    @property
    def kept(self) -> int:
        """Weights Chase's masks keep: the budget B = round(d·N)."""
        from train.density import budget

        return budget(DENSITY, self.weights)

    @property
    def gaps(self) -> dict[int, float]:
        return {s: self.dense[s] - self.chase[s] for s in sorted(set(self.dense) & set(self.chase))}


def last_val_acc(run: Path) -> float | None:
    if not (run / "final.pt").is_file():
        return None
    lines = (run / "metrics.jsonl").read_text().splitlines()
    epochs = [r for r in map(json.loads, filter(str.strip, lines)) if r.get("event") == "epoch"]
    return epochs[-1]["val_acc"] if epochs else None


def seeds_of(runs: Path, name: str) -> dict[int, float]:
    found = {}
    for run in sorted((runs / name).glob("seed*")):
        acc = last_val_acc(run)
        if acc is not None:
            found[int(run.name.removeprefix("seed"))] = acc
    return found


def dense_sizes(width: int) -> tuple[int, int]:
    """Every parameter, and the Conv/Linear weights, of the width-``width`` network."""
    from train.masks import maskable_modules
    from train.models import create_model

    model = create_model("resnet_quick", width=width, in_channels=1, num_classes=10)
    weights = sum(m.weight.numel() for m in maskable_modules(model).values())
    return sum(p.numel() for p in model.parameters()), weights


def measured(runs: Path, name: str, width: int) -> tuple[dict[int, float], list[int]]:
    """Top-1 per seed: the run directories, else the recorded number; and the recorded seeds."""
    found = seeds_of(runs, f"{name}_w{width}")
    recorded = {s: a for s, a in RECORDED.get((name, width), {}).items() if s not in found}
    return dict(sorted({**found, **recorded}.items())), sorted(recorded)


def collect(runs: Path) -> list[Width]:
    rows = []
    for w in WIDTHS:
        (dense, d_rec), (chase, c_rec) = measured(runs, DENSE, w), measured(runs, CHASE, w)
        recorded = tuple(
            f"{label} seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
            for label, seeds in (("dense", d_rec), ("Chase", c_rec))
            if seeds
        )
        rows.append(Width(w, dense, chase, *dense_sizes(w), recorded))
    return rows


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def table(rows: list[Width]) -> str:
    lines = [
        "| width | params | Conv/Linear weights | Chase keeps | dense top-1 % "
        "| Chase S_c 0.5 top-1 % | gap (points) | gap per seed | seeds (dense / Chase) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        gaps = r.gaps
        per_seed = ", ".join(f"{100 * g:.2f}" for g in gaps.values()) or "—"
        seeds = f"{sorted(r.dense)} / {sorted(r.chase)}"
        if r.recorded:
            seeds += f" (recorded: {'; '.join(r.recorded)})"
        kept = f"{r.kept:,}"
        lines.append(
            f"| {r.width} | {r.params:,} | {r.weights:,} | {kept} | "
            f"{mean_std(list(r.dense.values()))} | "
            f"{mean_std(list(r.chase.values()))} | {mean_std(list(gaps.values()))} | {per_seed} "
            f"| {seeds} |"
        )
    return "\n".join(lines)


def plot(rows: list[Width], out: Path) -> None:
    from chase_deploy.plots import figure, png
    from train.atomic import write_bytes

    fig = figure(9, 3.4)
    acc, gap = fig.subplots(1, 2)
    for name, label, color in ((DENSE, "dense", "black"), (CHASE, "Chase S_c 0.5", "tab:blue")):
        xs, means, stds = [], [], []
        for r in rows:
            values = [100 * v for v in getattr(r, "dense" if name == DENSE else "chase").values()]
            if not values:
                continue
            acc.scatter([r.width] * len(values), values, color=color, s=10, alpha=0.4)
            xs.append(r.width)
            means.append(statistics.fmean(values))
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        if xs:
            acc.errorbar(xs, means, yerr=stds, color=color, marker="o", capsize=3, label=label)
    xs, means, stds = [], [], []
    for r in rows:
        values = [100 * g for g in r.gaps.values()]
        if not values:
            continue
        gap.scatter([r.width] * len(values), values, color="tab:red", s=10, alpha=0.4)
        xs.append(r.width)
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    if xs:
        gap.errorbar(xs, means, yerr=stds, color="tab:red", marker="o", capsize=3)
    gap.axhline(0, color="grey", lw=0.8)
    for ax, title in ((acc, "top-1 (%)"), (gap, "dense − Chase S_c 0.5 (points)")):
        ax.set_xscale("log", base=2)
        ax.set_xlim(6, 42)
        ax.set_xticks(list(WIDTHS), [f"{r.width}\n{r.weights / 1000:.0f} k weights" for r in rows])
        ax.set_xlabel("resnet_quick width w (stages w, 2w, 4w; 5 epochs)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    acc.legend(fontsize=8)
    write_bytes(out, png(fig))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", default="runs/fmnist", type=Path)
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    args = parser.parse_args()
    rows = collect(args.runs)
    print(table(rows))
    if args.plot is not None:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
