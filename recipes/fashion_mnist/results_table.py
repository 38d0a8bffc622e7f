"""The Fashion-MNIST results (markdown) and the Figure 1 plot, from the run directories of run_all.sh.

    python recipes/fashion_mnist/results_table.py [RUNS_DIR] [--plot FIG1.png]   # default runs/fmnist15

Tables: (1) top-1 of every recipe as mean ± sample std over its seeds (the last epoch's
validation accuracy on the 10 k test images), with the measured channel sparsity and seconds per
epoch; (2) the Figure 1 sweep: per S_c with and without prune_skip, top-1, parameters and FLOPs
of ``slim/slim.onnx`` (``--round-to 8``) and of ``slim16/slim.onnx`` (``--round-to 16``), with their
ONNX Runtime CPU throughput from the one interleaved benchmark ``fig1_bench.json``; (3) where the
criterion study's source runs are; (4) the distillation study (``--distill`` alone, ``--suffix _w8``
for runs named NAME_w8/seedN), each row against dense over the same seeds. Unfinished runs are
left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROWS = (
    ("dense", "dense"),
    ("static", "static sparse"),
    ("set", "SET"),
    ("rigl", "RigL"),
    ("chase_unstructured", "Chase S_c 0"),
    ("chase_sc05", "Chase S_c 0.5"),
    ("chase_sc05_skip", "Chase S_c 0.5, prune skip"),
)
# The distillation study: Chase S_c 0.5 against dense, without and with the dense run of the same
# seed as teacher (train.distill) and as starting weights (model.weights).
DISTILL_ROWS = (
    ("dense", "dense (the teacher and the starting weights)"),
    ("chase_sc05", "Chase S_c 0.5"),
    ("chase_sc05_kd", "Chase S_c 0.5, distilled"),
    ("chase_sc05_skip", "Chase S_c 0.5, prune skip"),
    ("chase_sc05_skip_kd", "Chase S_c 0.5, prune skip, distilled"),
    ("chase_sc05_fromdense", "Chase S_c 0.5 from the dense weights"),
    ("chase_sc05_fromdense_kd", "Chase S_c 0.5 from the dense weights, distilled"),
    ("chase_sc05_d1_fromdense", "channel pruning only (density 1), S_c 0.5, from dense"),
    (
        "chase_sc05_d1_fromdense_kd",
        "channel pruning only (density 1), S_c 0.5, from dense, distilled",
    ),
)
SWEEP = (0.2, 0.3, 0.4, 0.5, 0.6)
SOURCE = "chase_unstructured_d03"
BENCH = "fig1_bench.json"


def epochs(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if r.get("event") == "epoch"]


def finished(run: Path) -> bool:
    return (run / "final.pt").is_file()


def seeds(runs: Path, name: str) -> list[Path]:
    return sorted(p for p in (runs / name).glob("seed*") if finished(p))


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def sweep_run(runs: Path, sc: float, skip: bool) -> Path:
    if sc == 0.5:
        return runs / ("chase_sc05_skip" if skip else "chase_sc05") / "seed0"
    return runs / "sweep" / f"sc{sc}{'_skip' if skip else ''}"


def throughput(runs: Path) -> dict[tuple[str, int], dict]:
    """(model path relative to RUNS, batch) → bench result."""
    path = runs / BENCH
    if not path.is_file():
        return {}
    out = {}
    for r in json.loads(path.read_text())["results"]:
        model = Path(r["model"]).resolve()
        try:
            key = str(model.relative_to(runs.resolve()))
        except ValueError:
            key = str(model)
        out[(key, r["batch"])] = r
    return out


def main_table(runs: Path) -> tuple[list[str], dict[str, tuple[float, float, int]]]:
    lines = [
        "| recipe | seeds | top-1 % (mean ± std) | per seed | S_c measured | s / epoch (mean) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    summary = {}
    for name, label in ROWS:
        done = seeds(runs, name)
        if not done:
            continue
        records = [epochs(p) for p in done]
        accs = [100 * r[-1]["val_acc"] for r in records]
        mean, std = mean_std(accs)
        summary[name] = (mean, std, len(accs))
        secs = statistics.fmean(e["seconds"] for r in records for e in r)
        per_seed = ", ".join(f"{a:.2f}" for a in accs)
        lines.append(
            f"| {label} (`{name}`) | {len(accs)} | {mean:.2f} ± {std:.2f} | {per_seed} | "
            f"{records[0][-1]['channel_sparsity']:.2f} | {secs:.0f} |"
        )
    return lines, summary


def final_accs(runs: Path, name: str) -> dict[int, float]:
    """Seed → last-epoch top-1 (%) of the finished runs of ``name``."""
    return {int(p.name.removeprefix("seed")): 100 * epochs(p)[-1]["val_acc"] for p in seeds(runs, name)}  # fmt: skip


def distill_table(runs: Path, suffix: str = "") -> list[str]:
    """Each row against dense over the same seeds: mean of the per-seed differences."""
    dense = final_accs(runs, f"dense{suffix}")
    lines = [
        "| run | seeds | top-1 % (mean ± std) | per seed | vs dense, same seeds | within 1 point | S_c measured | s / epoch |",  # fmt: skip
        "|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for name, label in DISTILL_ROWS:
        accs = final_accs(runs, f"{name}{suffix}")
        if not accs:
            continue
        mean, std = mean_std(list(accs.values()))
        shared = [s for s in accs if s in dense]
        gap = statistics.fmean(accs[s] - dense[s] for s in shared) if shared else None
        records = [epochs(runs / f"{name}{suffix}" / f"seed{s}") for s in accs]
        secs = statistics.fmean(e["seconds"] for r in records for e in r)
        per_seed = ", ".join(f"{s}: {a:.2f}" for s, a in sorted(accs.items()))
        vs = f"{gap:+.2f} ({len(shared)} seeds)" if gap is not None else "n/a"
        within = "n/a" if gap is None else ("yes" if gap >= -1.0 else "no")
        lines.append(
            f"| {label} (`{name}{suffix}`) | {len(accs)} | {mean:.2f} ± {std:.2f} | {per_seed} | "
            f"{vs} | {within} | {records[0][-1]['channel_sparsity']:.2f} | {secs:.0f} |"
        )
    return lines


def sweep_table(runs: Path, slim: str) -> tuple[list[str], list[dict]]:
    bench = throughput(runs)
    batches = sorted({b for _, b in bench})
    dense_key = "dense/seed0/slim/dense.onnx"
    head = "".join(f" items/s b{b} (speedup) |" for b in batches)
    lines = [
        f"| S_c | prune skip | top-1 % | S_c measured | params | MFLOPs (non-zero) |{head}",
        "|---:|---|---:|---:|---:|---:|" + "---:|" * len(batches),
    ]
    dense_row = ["full width (every unstructured run)", "", "", "", "", ""]
    report = runs / "dense" / "seed0" / "slim" / "slim_report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        dense_row[4] = f"{r['params']['dense']:,}"
        dense_row[5] = f"{r['flops']['dense'] / 1e6:.2f}"
    cells = [
        f"{bench[(dense_key, b)]['throughput']:.0f} (1.00x)" if (dense_key, b) in bench else "n/a"
        for b in batches
    ]
    lines.append("| " + " | ".join(dense_row + cells) + " |")
    points = []
    for skip in (False, True):
        for sc in SWEEP:
            run = sweep_run(runs, sc, skip)
            if not finished(run):
                continue
            acc = 100 * epochs(run)[-1]["val_acc"]
            measured = epochs(run)[-1]["channel_sparsity"]
            point = {"sc": sc, "skip": skip, "acc": acc, "throughput": {}}
            params = flops = "n/a"
            report = run / slim / "slim_report.json"
            if report.is_file():
                r = json.loads(report.read_text())
                params = f"{r['params']['slim']:,}"
                flops = f"{r['flops']['slim'] / 1e6:.2f} ({r['flops']['sparse'] / 1e6:.2f})"
            key = str((run / slim / "slim.onnx").relative_to(runs))
            cells = []
            for b in batches:
                res = bench.get((key, b))
                if res is None:
                    cells.append("n/a")
                    continue
                point["throughput"][b] = res["throughput"]
                cells.append(f"{res['throughput']:.0f} ({res['speedup']:.2f}x)")
            points.append(point)
            lines.append(
                f"| {sc} | {'yes' if skip else 'no'} | {acc:.2f} | {measured:.2f} | {params} | "
                f"{flops} |" + "".join(f" {c} |" for c in cells)
            )
    dense_tp = {b: bench[(dense_key, b)]["throughput"] for b in batches if (dense_key, b) in bench}
    points.append({"dense_throughput": dense_tp})
    return lines, points


def plot(series: dict[int, list[dict]], summary: dict, out: Path, batch: int) -> None:
    """Chase and Chase (prune skip) per rounding (solid: --round-to 8, dashed: 16); the
    unstructured rows at the full-width network's throughput (from the --round-to 8 benchmark)."""
    from matplotlib.figure import Figure

    dense_tp = series[8][-1]["dense_throughput"].get(batch)
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    lines = [
        (rnd, skip, color, style)
        for rnd, style in ((8, "o-"), (16, "o--"))
        if rnd in series
        for skip, color in ((False, "tab:blue"), (True, "tab:red"))
    ]
    for rnd, skip, color, style in lines:
        pts = sorted(
            (p for p in series[rnd][:-1] if p["skip"] == skip and batch in p["throughput"]),
            key=lambda p: p["sc"],
        )
        if not pts:
            continue
        xs = [p["throughput"][batch] for p in pts]
        label = f"Chase{' (prune skip)' if skip else ''}, --round-to {rnd}"
        alpha = 1.0 if rnd == 8 else 0.55
        ax.plot(xs, [p["acc"] for p in pts], style, color=color, label=label, alpha=alpha)
        for p, x in zip(pts, xs, strict=True):
            ax.annotate(f"{p['sc']:g}", (x, p["acc"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8, color=color)  # fmt: skip
    if dense_tp is not None:
        # Every unstructured run deploys at full width: one throughput, spread a little so the
        # markers do not hide each other.
        markers = {"dense": "s", "static": "v", "set": "^", "rigl": "D", "chase_unstructured": "*"}
        for i, (name, label) in enumerate((n, lab) for n, lab in ROWS if n in markers):
            if name in summary:
                mean, std, n = summary[name]
                x = dense_tp * (1 + 0.006 * (i - 2))
                ax.errorbar([x], [mean], yerr=[std], fmt=markers[name], ms=7, capsize=3,
                            label=f"{label} (mean ± std, {n} seeds)")  # fmt: skip
    ax.set(
        xlabel=f"ONNX Runtime CPU throughput, batch {batch}, 1 thread (images/s)",
        ylabel="top-1 (%)",
    )
    ax.set_title(
        "Fashion-MNIST, resnet_quick width 8, 90 % sparsity\n"
        "Chase: seed 0, points labelled with S_c; the others deploy at full width",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="runs/fmnist15", type=Path)
    parser.add_argument("--plot", type=Path, help="write the Figure 1 plot here")
    parser.add_argument("--plot-batch", type=int, default=32)
    parser.add_argument(
        "--distill",
        action="store_true",
        help="print the distillation study's table alone (runs NAME<suffix>/seedN)",
    )
    parser.add_argument("--suffix", default="", help="of the run names, e.g. _w8")
    args = parser.parse_args()
    runs = args.runs
    if args.distill:
        print("## Distillation and starting from dense weights\n")
        print("\n".join(distill_table(runs, args.suffix)))
        return
    table, summary = main_table(runs)
    print("## Top-1 over seeds\n")
    print("\n".join(table))
    series = {}
    for rnd, slim in ((8, "slim"), (16, "slim16")):
        if rnd == 16 and not any(runs.glob(f"*/*/{slim}/slim.onnx")):
            continue
        sweep, series[rnd] = sweep_table(runs, slim)
        print(f"\n## Figure 1 sweep (seed 0), `--round-to {rnd}`\n")
        print("\n".join(sweep))
    sources = seeds(runs, SOURCE)
    print(f"\n## Criterion-study source runs (`{SOURCE}`)\n")
    for p in sources:
        print(f"- `{p.relative_to(runs)}`: top-1 {100 * epochs(p)[-1]['val_acc']:.2f} %")
    if not sources:
        print("- none finished yet")
    print("\n## Distillation and starting from dense weights\n")
    print("\n".join(distill_table(runs)))
    if args.plot:
        plot(series, summary, args.plot, args.plot_batch)


if __name__ == "__main__":
    main()
