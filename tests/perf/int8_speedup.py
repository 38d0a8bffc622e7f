"""INT8 on top of slim: how much faster, and at what cost in top-1. Opt-in, not collected by pytest.

    python tests/perf/int8_speedup.py [--duration-s 6] [--batches 8] [--threads 1,2] [--round-to 8,16] [--json OUT]
    python tests/perf/int8_speedup.py --skip-speed --runs runs/quickstart runs/fmnist/dense_w16/seed0/slim

Speed (the DESIGN's numbers): slim_speedup.py's synthetic ResNet-50 with Table-15-like irregular
widths is slimmed with ``--round-to 8``; dense.onnx and slim.onnx are quantized by ``quantize
--target cpu`` (calibrated on 16 synthetic 224x224 images: the weights are random, so top-1 means
nothing here and any drop is allowed), and the four models run in ONE interleaved ``bench`` run on
ONNX Runtime CPU. Printed: each model's speedup over dense fp32 (slim int8: >= 3.5x), and slim
int8 over dense int8 as a fraction of the FLOP bound (>= 0.9).

Accuracy: each ``--runs DIR`` holds dense.onnx and slim.onnx of a trained run (its recipe.yaml in
DIR or DIR's parent); both are quantized with that run's data and top-1 fp32 -> int8 is printed
(within 0.5 point).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CALIB_RECIPE = {  # ImageNet-shaped synthetic images for ResNet-50's calibration
    "seed": 0,
    "model": {"name": "resnet50"},
    "data": {
        "name": "synthetic",
        "image_size": 224,
        "channels": 3,
        "num_classes": 1000,
        "num_train": 64,  # calibration keeps every activation in memory: 16 images at 224x224
        "num_val": 16,
        "eval_batch_size": 16,
    },
}


def speed(args: argparse.Namespace) -> dict:
    from slim_speedup import chase_checkpoint

    from chase_deploy.bench import benchmark, format_table
    from chase_deploy.int8.quantize import Settings, quantize_file
    from chase_deploy.slim import slim_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chase_checkpoint(tmp / "resnet50.pt")
        bounds, fp32 = {}, {}
        for n in args.round_to:
            slim = slim_checkpoint(tmp / "resnet50.pt", tmp / f"r{n}", round_to=n)
            bounds[f"slim-r{n}"] = slim["flop_ratio"]
            fp32[f"slim-r{n}"] = tmp / f"r{n}" / "slim.onnx"
        fp32 = {"dense": tmp / f"r{args.round_to[0]}" / "dense.onnx", **fp32}
        recipe = tmp / "calib.yaml"
        recipe.write_text(yaml.safe_dump(CALIB_RECIPE))
        settings = Settings(target="cpu", samples=16, allow_drop=True)
        models = dict(fp32)
        for name, path in fp32.items():
            out = path.with_suffix(".int8.onnx")
            report = quantize_file(path, recipe, out, settings, log=print)
            print(f"{name}-int8: {report['int8_macs']['share']:.1%} of MACs in int8 on ORT CPU")
            print(f"  ORT CPU optimized graph: {report['onnxruntime_cpu']['ops']}")
            models[f"{name}-int8"] = out
        rows = []
        for threads in args.threads:
            result = benchmark(
                [str(p) for p in models.values()],
                backend="ort-cpu",
                batches=args.batches,
                warmup_ms=500,
                duration_s=args.duration_s,
                threads=threads,
            )
            print(format_table(result))
            rows += speed_rows(result, models, bounds, threads)
    return {"rows": rows, "environment": result["environment"]}


def speed_rows(result: dict, models: dict, bounds: dict, threads: int) -> list[dict]:
    """Each slim width's speedups in one interleaved run, printed and returned."""
    by_path = {str(p): n for n, p in models.items()}
    rows = []
    for batch in sorted({r["batch"] for r in result["results"]}):
        ms = {
            by_path[r["model"]]: r["latency_ms"]["median"]
            for r in result["results"]
            if r["batch"] == batch
        }
        print(f"\nbatch {batch}, ONNX Runtime CPU, {threads} threads, one interleaved run:")
        for n, v in ms.items():
            print(f"  {n:>13}: {v:9.2f} ms  {ms['dense'] / v:5.2f}x dense fp32")
        for slim, bound in bounds.items():
            fp32_ratio = ms["dense"] / ms[slim]
            int8_ratio = ms["dense-int8"] / ms[f"{slim}-int8"]
            rows.append(
                {
                    "batch": batch,
                    "threads": threads,
                    "slim": slim,
                    "ms": ms,
                    "speedup_vs_dense_fp32": {n: ms["dense"] / v for n, v in ms.items()},
                    "flop_bound": bound,
                    "fp32_of_bound": fp32_ratio / bound,
                    "int8_of_bound": int8_ratio / bound,
                }
            )
            print(
                f"  {slim}: fp32 {fp32_ratio:.2f}x over dense fp32, int8 {int8_ratio:.2f}x over "
                f"dense int8; FLOP bound {bound:.2f}x -> {fp32_ratio / bound:.2f} (fp32) and "
                f"{int8_ratio / bound:.2f} (int8) of it"
            )
    return rows


def accuracy(runs: list[Path]) -> list[dict]:
    from chase_deploy.int8.quantize import Settings, quantize_file

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            calib = run if (run / "recipe.yaml").is_file() else run.parent
            for name in ("dense", "slim"):
                out = Path(tmp) / f"{run.name}-{name}.int8.onnx"
                r = quantize_file(run / f"{name}.onnx", calib, out, Settings(allow_drop=True))
                rows.append(
                    {
                        "run": str(run),
                        "model": name,
                        "top1_fp32": r["top1_fp32"],
                        "top1_int8": r["top1_int8"],
                        "drop_points": r["drop_points"],
                        "agreement": r["agreement"],
                        "int8_mac_share": r["int8_macs"]["share"],
                    }
                )
                print(
                    f"{run} {name}: top-1 {r['top1_fp32']:.2%} -> {r['top1_int8']:.2%} "
                    f"({r['drop_points']:+.2f} points drop; agreement {r['agreement']:.2%}; "
                    f"{r['int8_macs']['share']:.0%} of MACs in int8)"
                )
    return rows


def int_list(text: str) -> list[int]:
    """``8,16`` -> [8, 16]: options that run once per value."""
    return [int(n) for n in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=6.0)
    parser.add_argument("--batches", type=int_list, default=[8])
    parser.add_argument(
        "--threads",
        type=int_list,
        default=[2],
        help="ORT intra-op threads; 1,2: one interleaved run for each, same models",
    )
    parser.add_argument(
        "--round-to",
        type=int_list,
        default=[8],
        help="slim widths in multiples of each N (8,16: both, in the same run)",
    )
    parser.add_argument("--runs", type=Path, nargs="*", default=[])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = {}
    if not args.skip_speed:
        out["speed"] = speed(args)
    if args.runs:
        out["accuracy"] = accuracy(args.runs)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
