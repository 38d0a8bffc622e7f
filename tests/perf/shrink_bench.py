"""Shrunk against masked Chase training (``chase.shrink``): epoch time and memory (CPU, opt-in).

    python tests/perf/shrink_bench.py [--models resnet50_cifar,vgg19] [--batch 32]
        [--steps-per-epoch 6] [--epochs 8] [--prune-epochs 4] [--threads 1] [--align 1]
        [--prune-skip 0] [--json OUT.json]

Per model, two child processes train the same recipe from the same seed on CIFAR-shaped synthetic
data (3x32x32, 10 classes) with the real trainer: one masked (``chase.shrink: false``), one
shrunk. Density 0.1, S_c 0.5 (β 0.5 for ResNet-50, 0.2 for VGG-19, as the paper), channel pruning
over the first ``--prune-epochs`` epochs (a channel event every 2 steps), then training on to
``--epochs``. The children take turns epoch by epoch (the order alternates), so machine drift hits
both alike; an epoch is timed as the trainer times it (train steps + validation).

Parameter explorations are left out by default (``--explore-every 0``): one costs the same in
both arms (the controller explores in the original shapes) and the paper runs one every 1000
steps, so a few-step epoch holding one would mostly time the exploration. One thread per process
by default: on a machine shared with other jobs, two OpenMP threads wait for each other at every
op and the times stop depending on the work. Reported:

- post-pruning epoch time: the epochs after channel pruning ended, shrunk over masked (the goal
  in docs/algorithm.md is ≤ 0.75);
- whole-run ratio: all epochs, shrunk over masked (pruning epochs included);
- peak memory: each child's peak resident set (VmHWM) over the training epochs (reset after the
  model, data and channel groups were set up) and over the post-pruning epochs alone (reset at
  their start, after handing freed heap back to the OS with glibc's malloc_trim, which a process
  otherwise keeps), and the training state it holds at the end (parameters + gradients +
  momentum, float32);
- the forward MACs per image of the final model, whose shrunk/masked ratio bounds the speedup.

Not collected by pytest (no test functions; runs under __main__ only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BETA = {"resnet50_cifar": 0.5, "vgg19": 0.2}


def main() -> None:
    args = _parse()
    if args.child:
        _child(args)
        return
    results = []
    print(
        f"batch {args.batch}, {args.steps_per_epoch} steps per epoch, {args.epochs} epochs "
        f"(channel pruning in the first {args.prune_epochs}), {args.threads} threads per process",
        flush=True,
    )
    for name in args.models.split(","):
        results.append(_compare(name, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50_cifar,vgg19")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps-per-epoch", type=int, default=6)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--prune-epochs", type=int, default=4, help="chase.explore_until")
    p.add_argument("--explore-every", type=int, default=0, help="ΔT_p in steps; 0: none")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--align", type=int, default=1, help="chase.align: widths in multiples of this")
    p.add_argument(
        "--prune-skip", type=int, default=0, help="chase.prune_skip (1: the streams too)"
    )
    p.add_argument("--out", default=None, help="keep the two run directories here")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def _recipe(name: str, args: argparse.Namespace, shrink: bool) -> dict:
    return {
        "seed": 0,
        "model": {"name": name},
        "data": {
            "name": "synthetic",
            "image_size": 32,
            "channels": 3,
            "num_classes": 10,
            "num_train": args.batch * args.steps_per_epoch,
            "num_val": args.batch,
            "batch_size": args.batch,
            "eval_batch_size": args.batch,
        },
        "train": {"epochs": args.epochs, "lr": 0.1, "lr_schedule": "cosine"},
        "chase": {
            "density": 0.1,
            "channel_sparsity": 0.5,
            "beta": BETA.get(name, 0.5),
            "update_every": args.explore_every or 10**9,
            "channel_every": 2,
            "channel_offset": 1,  # events at odd steps
            "explore_until": args.prune_epochs,
            "shrink": shrink,
            "align": args.align,
            "prune_skip": bool(args.prune_skip),
        },
    }


# ------------------------------------------------------------------------------------ parent


def _compare(name: str, args: argparse.Namespace) -> dict:
    import tempfile

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="shrink_bench_"))
    arms = {}
    for arm in ("masked", "shrunk"):
        cmd = [sys.executable, __file__, "--child", arm, "--model", name]
        cmd += ["--out", str(root / f"{name}_{arm}")]
        for key in (
            "batch",
            "steps_per_epoch",
            "epochs",
            "prune_epochs",
            "explore_every",
            "threads",
            "align",
            "prune_skip",
        ):
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
        arms[arm] = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
    for proc in arms.values():
        _expect(proc, "ready")
    seconds: dict[str, list[float]] = {"masked": [], "shrunk": []}
    for epoch in range(args.epochs):
        order = ("masked", "shrunk") if epoch % 2 == 0 else ("shrunk", "masked")
        for arm in order:
            arms[arm].stdin.write("go\n")
            arms[arm].stdin.flush()
            reply = _expect(arms[arm], "epoch")
            seconds[arm].append(reply["seconds"])
            print(
                f"  {name} {arm:6s} epoch {epoch + 1}: {reply['seconds']:7.2f} s, "
                f"{reply['params']:,} parameters, channel sparsity {reply['channel_sparsity']:.3f}",
                flush=True,
            )
    final = {arm: _expect(proc, "done") for arm, proc in arms.items()}
    for proc in arms.values():
        proc.wait()
    post = slice(args.prune_epochs, args.epochs)
    result = {
        "model": name,
        "seconds": seconds,
        "post_pruning_ratio": sum(seconds["shrunk"][post]) / sum(seconds["masked"][post]),
        "whole_run_ratio": sum(seconds["shrunk"]) / sum(seconds["masked"]),
        "memory": {arm: {k: v for k, v in f.items() if k != "event"} for arm, f in final.items()},
    }
    _print(result, args)
    return result


def _expect(proc: subprocess.Popen, event: str) -> dict:
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"a child process ended early (exit {proc.wait()}); see its stderr above")
    reply = json.loads(line)
    if reply.get("event") != event:
        raise SystemExit(f"expected {event!r} from a child, got {reply}")
    return reply


def _print(r: dict, args: argparse.Namespace) -> None:
    m, s = r["memory"]["masked"], r["memory"]["shrunk"]
    post = slice(args.prune_epochs, args.epochs)
    print(f"\n{r['model']}:")
    print(
        f"  epochs after channel pruning: masked {sum(r['seconds']['masked'][post]):.1f} s, "
        f"shrunk {sum(r['seconds']['shrunk'][post]):.1f} s -> ratio {r['post_pruning_ratio']:.3f}"
        f" (goal <= 0.75)"
    )
    print(
        f"  whole run: masked {sum(r['seconds']['masked']):.1f} s, shrunk "
        f"{sum(r['seconds']['shrunk']):.1f} s -> ratio {r['whole_run_ratio']:.3f}"
    )
    for label, key in (
        ("peak RSS over training", "peak_rss_mib"),
        ("peak RSS after pruning", "peak_rss_post_mib"),
        ("training state at the end", "state_mib"),
    ):
        print(f"  {label}: masked {m[key]:.0f} MiB, shrunk {s[key]:.0f} MiB")
    print(f"  parameters at the end: masked {m['params']:,}, shrunk {s['params']:,}")
    print(
        f"  forward MACs per image: masked {m['macs'] / 1e6:.0f} M, shrunk {s['macs'] / 1e6:.0f} M "
        f"(ratio {s['macs'] / m['macs']:.3f}, the bound on the time ratio)\n",
        flush=True,
    )


# ------------------------------------------------------------------------------------- child


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from chase_deploy.graph.analysis import derive_groups
    from train.config import recipe_from_dict
    from train.distributed import DistInfo
    from train.loop import Trainer
    from train.run_dir import RunDir

    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything else printed goes to the log
    recipe = recipe_from_dict(_recipe(args.model, args, shrink=args.child == "shrunk"))
    out = Path(args.out)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    trainer = Trainer(recipe, RunDir(out), torch.device("cpu"), DistInfo(), derive_groups)
    trainer._prepare_out_dir(None)

    def send(**message) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    _reset_peak()
    send(event="ready")
    peak_pruning = 0.0
    for epoch in range(recipe.train.epochs):
        sys.stdin.readline()
        if epoch == args.prune_epochs:
            peak_pruning = _peak_mib()
            _trim_heap()
            _reset_peak()
        start = time.perf_counter()
        loss = trainer._train_epoch(epoch)
        trainer.evaluate()
        took = time.perf_counter() - start
        trainer.epoch += 1
        sparsity = trainer._sparsity()["channel_sparsity"]
        params = sum(p.numel() for p in trainer.model.parameters())
        send(event="epoch", seconds=took, loss=loss, params=params, channel_sparsity=sparsity)
    post = _peak_mib()
    params = sum(p.numel() for p in trainer.model.parameters())
    send(
        event="done",
        macs=_macs(trainer.model, recipe.data.image_size),
        peak_rss_mib=max(peak_pruning, post),
        peak_rss_post_mib=post,
        state_mib=3 * 4 * params / 2**20,  # weights, gradients, momentum
        params=params,
    )


def _macs(model, size: int) -> int:
    """Multiply-accumulates of one forward pass (one 3 x size x size image), Conv and Linear."""
    import torch

    total = [0]

    def count(module, inputs, output) -> None:
        total[0] += output[0].numel() * module.weight[0].numel()

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total[0]


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc); a no-op elsewhere."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> None:
    """Reset this process's peak resident set (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
