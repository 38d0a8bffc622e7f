"""DDP on the CPU: training throughput of 1 vs 2 processes, and the cost of the replica checks.

    python tests/perf/ddp_bench.py [--epochs 4] [--skip-throughput] [--skip-check]

Throughput: the same recipe trained by `chase-deploy train` in one process (2 and 1 intra-op
threads) and under torchrun with 2 gloo processes of 1 thread each; samples/s = training samples
per epoch / epoch wall time (validation included, first epoch dropped as warm-up), median over
epochs. The global batch is the recipe's in every case, so all runs take the same steps.

Check cost: 2 gloo processes hold a ResNet-50 (CIFAR) / VGG-19 Chase controller at density 0.1;
times the masks agreement check the controller runs after every exploration and channel event,
and the loop's end-of-epoch check of all weights, buffers and masks. Median of repeats, ms.

Not collected by pytest (no test functions); needs a quiet machine for meaningful numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

RECIPES = {
    "quickstart (digits 16x16, resnet_quick w16, batch 64)": ROOT / "recipes" / "quickstart.yaml",
    "cifar-shaped synthetic (resnet20, 32x32, batch 128)": {
        "seed": 0,
        "model": {"name": "resnet20"},
        "data": {
            "name": "synthetic",
            "image_size": 32,
            "num_classes": 10,
            "num_train": 2048,
            "num_val": 256,
            "batch_size": 128,
        },
        "train": {"epochs": 3, "lr": 0.1},
        "chase": {
            "density": 0.1,
            "update_every": 8,
            "channel_every": 8,
            "channel_sparsity": 0.5,
            "explore_until": 2,
        },
    },  # fmt: skip
}


def _env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def _throughput(recipe: Path, procs: int, threads: int, epochs: int, work: Path) -> float:
    out = work / f"run_{procs}p{threads}t"
    train = ["-m", "chase_deploy", "train", str(recipe), "--out", str(out), "--device", "cpu",
             "--set", f"train.epochs={epochs}", "--set", f"chase.explore_until={epochs - 1}"]  # fmt: skip
    if procs > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
        cmd = [sys.executable, *launcher, *train]
    else:
        cmd = [sys.executable, *train]
    proc = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs_rows = [r for r in rows if r["event"] == "epoch"][1:]
    samples = epochs_rows[0]["step"] * yaml.safe_load(recipe.read_text())["data"]["batch_size"]
    return statistics.median(samples / r["seconds"] for r in epochs_rows)


def throughput_table(epochs: int) -> None:
    print("throughput, samples/s (median epoch, validation included)")
    print(f"{'recipe':<56} {'1 proc x 2 thr':>15} {'1 proc x 1 thr':>15} {'2 procs x 1 thr':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, spec in RECIPES.items():
            recipe = spec if isinstance(spec, Path) else work / "recipe.yaml"
            if not isinstance(spec, Path):
                recipe.write_text(yaml.safe_dump(spec))
            cells = []
            for procs, threads in ((1, 2), (1, 1), (2, 1)):
                sub = work / f"{len(cells)}_{abs(hash(label))}"
                sub.mkdir()
                cells.append(_throughput(recipe, procs, threads, epochs, sub))
            print(f"{label:<56} {cells[0]:>15.0f} {cells[1]:>15.0f} {cells[2]:>16.0f}")


# ------------------------------------------------------------------------------ check cost


def check_cost_worker(repeats: int) -> None:
    """Runs under torchrun: rank 0 prints the median cost of each check in ms."""
    import torch

    from chase_deploy.graph.analysis import derive_groups
    from train.chase import Chase
    from train.config import ChaseConfig
    from train.distributed import check_agreement, init_distributed, shutdown
    from train.models import create_model

    cpu = torch.device("cpu")
    info = init_distributed(cpu)
    for name in ("resnet50_cifar", "vgg19"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10)
        cfg = ChaseConfig(density=0.1, channel_sparsity=0.5, update_every=100, channel_every=100)
        groups = derive_groups(model, (3, 32, 32))
        chase = Chase(model, groups, cfg, steps_per_epoch=100, epochs=10, seed=0)
        state = {**model.state_dict(), **{f"mask {k}": v for k, v in chase.masks.items()}}

        def timed(fn) -> float:
            fn()  # warm-up
            runs = []
            for _ in range(repeats):
                torch.distributed.barrier()
                start = time.perf_counter()
                fn()
                runs.append((time.perf_counter() - start) * 1e3)
            return statistics.median(runs)

        # the controller's own check, exactly as it runs after each event
        per_event = timed(lambda: chase._agree("benchmark", 0))  # noqa: B023
        per_epoch = timed(lambda: check_agreement(state, "benchmark", cpu))  # noqa: B023
        if info.is_main:
            weights = sum(m.numel() for m in chase.masks.values())
            print(f"{name:<16} masked weights {weights / 1e6:6.2f} M   masks check per event "
                  f"{per_event:7.1f} ms   full-state check per epoch {per_epoch:7.1f} ms")  # fmt: skip
    shutdown()


def check_cost(repeats: int) -> None:
    print("replica checks, 2 gloo processes x 1 thread (median ms)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, "--check-cost-worker", "--repeats", str(repeats)]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    print(proc.stdout.strip())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-check", action="store_true")
    parser.add_argument("--check-cost-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check_cost_worker:
        sys.path.insert(0, str(ROOT))
        check_cost_worker(args.repeats)
    else:
        if not args.skip_throughput:
            throughput_table(args.epochs)
        if not args.skip_check:
            check_cost(args.repeats)
