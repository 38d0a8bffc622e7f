"""Opt-in: the six "your own model" architectures (``tests/own_models.py``) end to end through the
CLI, as a user runs them: a recipe naming ``own_models:ARCH`` (the module copied into the working
directory), ``train`` with Chase, ``slim`` with and without ``--round-to 8``, then ``bench`` of
dense.onnx against slim.onnx (rounded) on ONNX Runtime CPU at batch 8, one interleaved run each.

    python tests/perf/own_models_bench.py --width 32 --size 32 --out runs/own_bench

Prints one line per architecture (groups, channel sparsity, slim max abs diff with and without
rounding, FLOP ratio, speedup) and writes ``summary.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent.parent
ARCHS = ("mobilenet_v2_se", "resnet18", "densenet", "resnext", "regnety", "convnext")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/own_bench")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--duration-s", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--archs", default=",".join(ARCHS))
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "own_models.py", out / "own_models.py")
    rows = []
    for arch in args.archs.split(","):
        rows.append(_one(arch, out, args))
        print(_line(rows[-1]), flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))


def _cli(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "chase_deploy", *args]
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def _one(arch: str, out: Path, args: argparse.Namespace) -> dict:
    recipe = {
        "seed": 0,
        "model": {"name": f"own_models:{arch}", "width": args.width},
        "data": {
            "name": "synthetic",
            "image_size": args.size,
            "channels": 3,
            "num_classes": 10,
            "num_train": 256,
            "num_val": 64,
            "batch_size": 32,
        },
        "train": {"epochs": args.epochs, "lr": 0.05, "lr_schedule": "cosine"},
        "chase": {
            "density": 0.3,
            "update_every": 4,
            "channel_every": 4,
            "explore_until": max(1, args.epochs - 1),
            "channel_sparsity": 0.5,
            "beta": 0.5,
        },
    }
    run = out / arch
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    (run / "recipe.in.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    _cli("train", str(run / "recipe.in.yaml"), "--out", str(run / "train"), cwd=out)
    _cli("slim", str(run / "train" / "final.pt"), "--out", str(run / "exact"), cwd=out)
    _cli(
        "slim",
        str(run / "train" / "final.pt"),
        "--out",
        str(run / "r8"),
        "--round-to",
        "8",
        cwd=out,
    )
    exact = json.loads((run / "exact" / "slim_report.json").read_text())
    rounded = json.loads((run / "r8" / "slim_report.json").read_text())
    bench = run / "bench.json"
    _cli(
        "bench",
        str(run / "r8" / "dense.onnx"),
        str(run / "r8" / "slim.onnx"),
        "--backend",
        "ort-cpu",
        "--batch",
        "8",
        "--duration-s",
        str(args.duration_s),
        "--threads",
        str(args.threads),
        "--json",
        str(bench),
        cwd=out,
    )
    results = json.loads(bench.read_text())["results"]
    metrics = [json.loads(x) for x in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if m["event"] == "epoch"][-1]
    groups = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "chase_deploy",
                "inspect",
                str(run / "recipe.in.yaml"),
                "--json",
            ],
            cwd=out,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    return {
        "arch": arch,
        "groups": [g["name"] for g in groups["groups"]],
        "prunable_channels": groups["channels"],
        "channel_sparsity": last["channel_sparsity"],
        "max_abs_diff": exact["max_abs_diff"],
        "max_abs_diff_round8": rounded["max_abs_diff"],
        "lossless": exact["lossless"] and rounded["lossless"],
        "flop_ratio_round8": rounded["flop_ratio"],
        "speedup_b8_round8": next(
            r["speedup"] for r in results if r["model"].endswith("slim.onnx")
        ),
    }


def _line(r: dict) -> str:
    return (
        f"{r['arch']}: {len(r['groups'])} groups ({r['prunable_channels']} channels), "
        f"channel sparsity {r['channel_sparsity']:.4f}, max abs diff {r['max_abs_diff']:.2g} / "
        f"{r['max_abs_diff_round8']:.2g} (round-to 8), FLOP ratio {r['flop_ratio_round8']}, "
        f"speedup b8 {r['speedup_b8_round8']:.2f}x"
    )


if __name__ == "__main__":
    main()
