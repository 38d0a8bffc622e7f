"""The accuracy-speed front on Fashion-MNIST: Chase against a thinner dense network and against
the dense network in INT8, every model also in INT8, measured on ONNX Runtime CPU.

    python recipes/fashion_mnist/front.py RUNS [--width 16] [--duration-s 4] \
        [--plot docs/fmnist_front.png]

RUNS holds the training runs, named ``<recipe stem>[_sc<S_c>]_w<W>/seed<s>`` as the queue writes
them: ``dense_w12/seed0`` (dense.yaml at model.width 12), ``chase_sc05_w16/seed1`` (S_c 0.5),
``chase_sc05_w16_sc0.3/seed2``, ``chase_sc05_skip_w16_sc0.6/seed0``. Every finished run is
  1. slimmed (``slim --round-to 8`` into RUN/front/), skipped when done;
  2. its deployed model (dense.onnx of a dense run, slim.onnx of a Chase run) quantized with
     ``quantize --target cpu`` calibrated on the run's own data (512 training images), top-1 of
     fp32 and int8 on the 10 k test images recorded in the report; skipped when done;
  3. recorded in ``--records`` (default ``recipes/fashion_mnist/front_records.json``,
     committed): per configuration and seed, top-1 fp32 and int8, the share of MACs in int8,
     the deployed model's parameters and MFLOPs, and a Chase run's channel plan.
The records are what the table is made of, so seeds trained in different sessions (or on
machines whose run directories are gone) add up. Then the fp32 and int8 models of each
configuration's first seed run in ONE interleaved ``bench`` (batch 32, one thread;
RUNS/front_bench.json, kept while it covers the same models). A configuration whose runs are
not on disk is benched as its *speed twin*: an untrained network of the same width, slimmed
with the recorded plan (``--round-to 8``, so the same layer widths) and quantized the same way;
speed needs no training, and its parameters and MFLOPs are checked against the record. The
script writes RUNS/front.md (table, and where Chase falls below the thin-dense and the
dense-int8 fronts), RUNS/front.json and the plot. Top-1 is mean ± sample std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "front_records.json"
TWINS = "front_twins"  # RUNS/front_twins/<config>/: speed twins of configurations not on disk
NAME = re.compile(r"^(dense|chase_sc05|chase_sc05_skip)_w(\d+)(?:_sc([0-9.]+))?$")
BENCH = "front_bench.json"
DEPLOY = "front"  # RUN/front/: this study's slim (round_to 8) and int8 models
BATCH = 32


@dataclass
class Config:
    """One point of the front: a recipe at one width and S_c, over its seeds."""

    name: str
    kind: str  # "dense" or "chase"
    width: int
    sc: float
    skip: bool
    runs: list[Path] = field(default_factory=list)  # finished runs on disk
    seeds: dict[int, dict] = field(default_factory=dict)  # seed -> record (runs included)

    @property
    def deployed(self) -> str:
        return "dense" if self.kind == "dense" else "slim"

    def label(self) -> str:
        if self.kind == "dense":
            return f"w{self.width}"
        return f"{self.sc:g}{' skip' if self.skip else ''}"

    def model(self, run: Path, int8: bool = False) -> Path:
        return run / DEPLOY / f"{self.deployed}{'.int8' if int8 else ''}.onnx"


def parse_name(name: str, width: int) -> Config | None:
    """The configuration a run folder (or a record) names; None for other recipes and widths."""
    m = NAME.match(name)
    if not m:
        return None
    stem, w, sc = m.group(1), int(m.group(2)), m.group(3)
    kind = "dense" if stem == "dense" else "chase"
    if kind == "chase" and w != width:
        return None
    return Config(
        name, kind, w, 0.0 if kind == "dense" else float(sc or 0.5), stem.endswith("_skip")
    )


def discover(runs: Path, width: int, records: dict | None = None) -> list[Config]:
    """Every configuration with a finished seed on disk or in ``records``; Chase only at ``width``."""
    found: dict[str, Config] = {}
    folders = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    for folder in folders:
        config = parse_name(folder.name, width)
        if config is None:
            continue
        config.runs = sorted(p for p in folder.glob("seed*") if (p / "final.pt").is_file())
        if config.runs:
            found[config.name] = config
    for name, seeds in (records or {}).items():
        config = found.get(name) or parse_name(name, width)
        if config is not None and seeds:
            config.seeds.update({int(s): r for s, r in seeds.items()})
            found[name] = config
    return sorted(found.values(), key=lambda c: (c.kind, c.skip, c.width, c.sc))


def seed_of(run: Path) -> int:
    return int(run.name.removeprefix("seed"))


def load_records(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def record(config: Config, run: Path) -> dict:
    """What the table needs of one finished run, and what its speed twin is built from."""
    report = json.loads(config.model(run, True).with_suffix(".json").read_text())
    slim = json.loads((run / DEPLOY / "slim_report.json").read_text())
    plan = run / "channel_plan.json"
    return {
        "top1_fp32": report["top1_fp32"],
        "top1_int8": report["top1_int8"],
        "int8_mac_share": report["int8_macs"]["share"],
        "params": slim["params"][config.deployed],
        "mflops": slim["flops"][config.deployed] / 1e6,
        "plan": json.loads(plan.read_text()) if config.kind == "chase" else None,
    }


def records_json(records: dict) -> str:
    """Sorted, one line per seed: a new seed is a one-line diff."""
    blocks = []
    for name, seeds in sorted(records.items()):
        lines = [f"  {json.dumps(s)}: {json.dumps(e)}" for s, e in sorted(seeds.items(), key=_seed)]
        blocks.append(f"  {json.dumps(name)}: {{\n" + ",\n".join("  " + x for x in lines) + "\n  }")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def _seed(item: tuple[str, dict]) -> int:
    return int(item[0])


def update_records(configs: list[Config], path: Path) -> None:
    """Record every finished run on disk (a run replaces its seed's record); write atomically."""
    from train.atomic import write_bytes

    records = load_records(path)
    for c in configs:
        for run in c.runs:
            entry = record(c, run)
            c.seeds[seed_of(run)] = entry
            records.setdefault(c.name, {})[str(seed_of(run))] = entry
    write_bytes(path, records_json(records).encode())


def prepare(config: Config, run: Path) -> None:
    """slim (round_to 8), then quantize the deployed model; each skipped when done."""
    from chase_deploy.int8.quantize import Settings, quantize_file, report_path_for
    from chase_deploy.slim import slim_checkpoint

    slim_dir = run / DEPLOY
    if not (slim_dir / "slim_report.json").is_file():
        print(f"slim {run}", flush=True)
        slim_checkpoint(run / "final.pt", slim_dir, round_to=8)
    int8 = config.model(run, int8=True)
    if not report_path_for(int8).is_file():
        print(f"quantize {config.model(run)}", flush=True)
        settings = Settings(target="cpu", samples=None, allow_drop=True)  # 512 (or all there are)
        quantize_file(config.model(run), run, int8, settings)


def twin(config: Config, runs: Path) -> Path:
    """The fp32 model of a configuration with no run on disk: an untrained network of its width,
    slimmed with its first recorded seed's plan, quantized like the runs; built once."""
    import onnx

    from chase_deploy.export import export_onnx
    from chase_deploy.graph.flops import layer_costs, total_params
    from chase_deploy.graph.surgery import slim_model
    from chase_deploy.int8.quantize import Settings, quantize_file
    from train.atomic import write_bytes
    from train.models import create_model
    from train.plan import parse_plan

    seed = min(config.seeds)
    entry, folder = config.seeds[seed], runs / TWINS / config.name
    fp32 = folder / f"{config.deployed}.onnx"
    int8 = folder / f"{config.deployed}.int8.onnx"
    if int8.is_file():
        return fp32
    print(f"speed twin of {config.name} (seed {seed}'s record)", flush=True)
    model = create_model("resnet_quick", width=config.width, in_channels=1, num_classes=10)
    proto = export_onnx(distinct_norms(model), (2, 1, 28, 28)).model
    if entry["plan"] is not None:
        plan = parse_plan(entry["plan"], source=f"{config.name} seed {seed} record")
        proto = slim_model(proto, plan, round_to=8).model
    params, mflops = total_params(proto), sum(c.flops for c in layer_costs(proto)) / 1e6
    if params != entry["params"] or abs(mflops - entry["mflops"]) > 1e-6 * entry["mflops"]:
        raise SystemExit(
            f"speed twin of {config.name}: {params:,} params, {mflops:.3f} MFLOPs, but the "
            f"record says {entry['params']:,} and {entry['mflops']:.3f}; retrain a seed instead"
        )
    write_bytes(fp32, proto.SerializeToString())
    settings = Settings(target="cpu", samples=None, allow_drop=True)
    quantize_file(fp32, twin_calibration(config.width), int8, settings)
    onnx.checker.check_model(str(int8))
    return fp32


def distinct_norms(model):
    """Random BatchNorm statistics and affine terms: an untrained network's ones and zeros repeat
    across layers, and the exporter shares repeated constants, which a trained network has none of
    (it would count fewer parameters than the run it stands for)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))
    return model


def twin_calibration(width: int):
    """The runs' calibration data: 512 Fashion-MNIST training images (any recipe's, same data)."""
    from chase_deploy.int8.calibration import CalibrationSource
    from train.config import load_recipe

    path = HERE / "dense.yaml"
    return CalibrationSource(path, "recipe", load_recipe(path, [f"model.width={width}"]))


def bench_model(config: Config, runs: Path, int8: bool) -> Path:
    """The first seed's model on disk, else the speed twin's."""
    if config.runs:
        return config.model(config.runs[0], int8)
    fp32 = twin(config, runs)
    return fp32.with_suffix(".int8.onnx") if int8 else fp32


def bench(configs: list[Config], runs: Path, duration_s: float) -> dict:
    """fp32 and int8 of every configuration's first seed, one interleaved run; kept while it
    covers the same models (a configuration finished since then re-runs all of them)."""
    from chase_deploy.bench import benchmark

    path = runs / BENCH
    models = [str(bench_model(c, runs, int8)) for c in configs for int8 in (False, True)]
    if path.is_file():
        kept = json.loads(path.read_text())
        if sorted({r["model"] for r in kept["results"]}) == sorted(models):
            return kept
    print(
        f"bench {len(models)} models, batch {BATCH}, one thread, {duration_s:g} s each", flush=True
    )
    result = benchmark(models, "ort-cpu", [BATCH], warmup_ms=500, duration_s=duration_s, threads=1)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(configs: list[Config], result: dict, runs: Path) -> list[dict]:
    speed = {r["model"]: r["throughput"] for r in result["results"] if r["batch"] == BATCH}
    rows = []
    for c in configs:
        entries = [c.seeds[s] for s in sorted(c.seeds)]
        first = entries[0]
        fp32, int8 = (mean_std([100 * e[k] for e in entries]) for k in ("top1_fp32", "top1_int8"))
        rows.append(
            {
                "config": c.name,
                "kind": c.kind,
                "label": c.label(),
                "width": c.width,
                "sc": c.sc,
                "skip": c.skip,
                "seeds": len(entries),
                "seed_list": sorted(c.seeds),
                "benched": "run" if c.runs else "speed twin",
                "mflops": first["mflops"],
                "params": first["params"],
                "top1_fp32": fp32,
                "top1_int8": int8,
                "int8_mac_share": statistics.fmean(e["int8_mac_share"] for e in entries),
                "throughput_fp32": speed.get(str(bench_model(c, runs, False))),
                "throughput_int8": speed.get(str(bench_model(c, runs, True))),
            }
        )
    return rows


def front_at(points: list[tuple[float, float]], x: float) -> float | None:
    """The front's top-1 at throughput ``x``: linear between its points, None outside them."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else max(y0, y1)
    return None


def verdicts(rows: list[dict]) -> list[str]:
    """Each Chase model (fp32 and int8) against the thin-dense (fp32) and the dense-int8 front.

    Below a front means dominated: some dense model of that front is at least as fast and more
    accurate (the best such one is named). The front's interpolated top-1 at the Chase model's
    throughput is given too where the front spans it. "within noise": the gap is smaller than
    the larger of the two standard deviations over seeds.
    """
    dense = [r for r in rows if r["kind"] == "dense" and r["throughput_fp32"]]
    lines = []
    for r in (r for r in rows if r["kind"] == "chase" and r["throughput_fp32"]):
        name = f"Chase S_c {r['sc']:g}{', prune skip' if r['skip'] else ''}"
        for form in ("fp32", "int8"):
            x, (y, sd) = r[f"throughput_{form}"], r[f"top1_{form}"]
            for front, dform in (("thin-dense", "fp32"), ("dense-int8", "int8")):
                rivals = [d for d in dense if d[f"throughput_{dform}"] >= x]
                best = max(rivals, key=lambda d: d[f"top1_{dform}"][0], default=None)
                head = f"- {name} {form} ({x:,.0f} items/s, {y:.2f} %) vs the {front} front: "
                if best is not None and best[f"top1_{dform}"][0] > y:
                    gap = best[f"top1_{dform}"][0] - y
                    noise = max(sd, best[f"top1_{dform}"][1])
                    text = (
                        f"**below** it: dense width {best['width']} {dform} is faster "
                        f"({best[f'throughput_{dform}']:,.0f} items/s) and {gap:.2f} points more "
                        f"accurate{' (within noise)' if gap < noise else ''}"
                    )
                elif best is None:
                    text = "on it: faster than every model of that front"
                else:
                    text = "on it: no model of that front is both as fast and more accurate"
                at = front_at([(d[f"throughput_{dform}"], d[f"top1_{dform}"][0]) for d in dense], x)
                if at is not None:
                    text += f"; the front interpolated at this speed: {at:.2f} % ({y - at:+.2f})"
                lines.append(head + text)
    return lines


def top1(row: dict, form: str) -> str:
    """Mean ± sample std over the seeds; one seed has no spread to show."""
    mean, std = row[f"top1_{form}"]
    return f"{mean:.2f} ± {std:.2f}" if row["seeds"] > 1 else f"{mean:.2f}"


def table(rows: list[dict]) -> list[str]:
    out = [
        "| model | seeds | params | MFLOPs | top-1 fp32 % | top-1 int8 % | MACs in int8 "
        f"| b{BATCH} items/s fp32 | b{BATCH} items/s int8 | int8 speedup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = (
            f"dense width {r['width']}"
            if r["kind"] == "dense"
            else f"Chase S_c {r['sc']:g}{', prune skip' if r['skip'] else ''}"
        )
        f, i = r["throughput_fp32"], r["throughput_int8"]
        seeds = ", ".join(map(str, r["seed_list"])) + ("*" if r["benched"] != "run" else "")
        out.append(
            f"| {name} | {seeds} | {r['params']:,} | {r['mflops']:.2f} | "
            f"{top1(r, 'fp32')} | {top1(r, 'int8')} | {r['int8_mac_share']:.0%} | "
            f"{f:,.0f} | {i:,.0f} | {i / f:.2f}x |"
            if f and i
            else f"| {name} | {seeds} | | | | | | | | |"
        )
    return out


def plot(rows: list[dict], path: Path, width: int) -> None:
    from chase_deploy.plots import plot_front

    points = []
    for r in rows:
        if not r["throughput_fp32"]:
            continue
        group = (
            "dense, widths"
            if r["kind"] == "dense"
            else f"Chase w{width}{', prune skip' if r['skip'] else ''} (S_c)"
        )
        for form in ("fp32", "int8"):
            points.append(
                {
                    "label": r["label"],
                    "group": group + (" int8" if form == "int8" else ""),
                    "throughput": r[f"throughput_{form}"],
                    "top1": r[f"top1_{form}"][0],
                    "top1_std": r[f"top1_{form}"][1],
                }
            )
    title = f"Fashion-MNIST: top-1 against ONNX Runtime CPU throughput (batch {BATCH}, 1 thread)"
    path.write_bytes(plot_front(points, title))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--width", type=int, default=16, help="the Chase runs' model.width")
    parser.add_argument("--duration-s", type=float, default=4.0)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--records", type=Path, default=RECORDS, help="the committed records")
    parser.add_argument(
        "--prepare-only", action="store_true", help="slim, quantize and record only"
    )
    args = parser.parse_args()
    configs = discover(args.runs, args.width, load_records(args.records))
    for config in configs:
        for run in config.runs:
            prepare(config, run)
    update_records(configs, args.records)
    if args.prepare_only:
        return
    args.runs.mkdir(parents=True, exist_ok=True)
    rows = summarize(configs, bench(configs, args.runs, args.duration_s), args.runs)
    text = [
        f"# Fashion-MNIST accuracy-speed front (Chase at width {args.width})",
        "",
        *table(rows),
        "",
        "Seeds: top-1 is their mean ± sample std (records of finished runs, `--records`). "
        "\\*: no run on disk, benched as its speed twin (an untrained network with the recorded "
        "layer widths).",
        "",
        "## Against the fronts",
        "",
        *verdicts(rows),
        "",
    ]
    (args.runs / "front.md").write_text("\n".join(text))
    (args.runs / "front.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(text))
    if args.plot:
        plot(rows, args.plot, args.width)


if __name__ == "__main__":
    main()
