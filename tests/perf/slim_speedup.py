"""Does slimming buy real speed? ImageNet ResNet-50 with irregular Chase widths, ONNX Runtime CPU.

Opt-in (not collected by pytest):  python tests/perf/slim_speedup.py [--duration-s 6]

Builds a synthetic ``resnet50`` checkpoint whose bottleneck conv1/conv2 keep irregular channel
counts in the spirit of the paper's Table 15 (63, 111, 117, 241, ...; the exact table is not at
hand, so per-stage keep fractions with a seeded jitter are tuned to the ~1.48x FLOP ratio of
shared/reference/measurements.md), masks zeroing the pruned rows and consumer columns, random BN
statistics. Then it runs the real ``chase-deploy slim`` pipeline without and with ``--round-to 8``
(timed end to end) and times dense / slim / slim-r8 with ONNX Runtime (CPU provider,
intra_op_num_threads=2) at batch 1, 8 and 32 with ``chase_deploy.bench.benchmark`` (interleaved).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

STAGES = [(3, 64), (4, 128), (6, 256), (3, 512)]  # (blocks, bottleneck width)
KEEP_CONV1 = (0.95, 0.82, 0.63, 0.56)
KEEP_CONV2 = (0.90, 0.84, 0.63, 0.55)


def table15_counts(seed: int = 0) -> list[tuple[int, int]]:
    """Irregular kept counts (conv1, conv2) per bottleneck, never a multiple of 8."""
    rng = np.random.default_rng(seed)
    counts = []
    for si, (blocks, width) in enumerate(STAGES):
        for _ in range(blocks):
            pair = []
            for frac in (KEEP_CONV1[si], KEEP_CONV2[si]):
                c = min(width - 1, int(round(width * frac * rng.uniform(0.95, 1.05))))
                pair.append(c - 1 if c % 8 == 0 else c)
            counts.append((pair[0], pair[1]))
    return counts


def chase_model(seed: int = 0) -> tuple[nn.Module, dict, dict]:
    """A resnet50 as Chase would leave it with the ``table15_counts`` widths: (model in eval mode
    with pruned rows/columns zero, masks, channel-plan layers). Also used by tests/gpu/prepare.py."""
    from chase_deploy.graph.analysis import derive_groups
    from train.models import create_model

    torch.manual_seed(seed)
    model = create_model("resnet50").eval()
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    modules = dict(model.named_modules())
    masks = {
        f"{name}.weight": torch.ones_like(m.weight, dtype=torch.bool)
        for name, m in modules.items()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }
    rng = np.random.default_rng(seed)
    layers = {}
    groups = derive_groups(model, (3, 64, 64))
    counts = [c for pair in table15_counts(seed) for c in pair]
    for group, count in zip(groups, counts, strict=True):
        kept = sorted(rng.choice(group.width, size=count, replace=False).tolist())
        dropped = sorted(set(range(group.width)) - set(kept))
        for producer in group.producers:
            masks[f"{producer}.weight"][dropped] = False
            layers[producer] = {"out_channels": group.width, "kept": kept}
        for consumer in group.consumers:
            masks[f"{consumer}.weight"][:, dropped] = False
    with torch.no_grad():
        for name, mask in masks.items():
            dict(model.named_parameters())[name].mul_(mask)
    return model, masks, layers


def chase_checkpoint(path: Path, seed: int = 0) -> dict:
    """A resnet50 checkpoint as Chase would leave it: pruned rows/columns zero and masked."""
    from train.checkpoint import save_checkpoint

    model, masks, layers = chase_model(seed)
    save_checkpoint(
        path,
        {
            "model": {"name": "resnet50", "kwargs": {}},
            "state_dict": model.state_dict(),
            "masks": masks,
            "channel_plan": {"format": "chase-channel-plan", "version": 1, "layers": layers},
            "recipe": {},
            "progress": {"epoch": 1, "step": 1},
            "input_shape": [3, 224, 224],
        },
    )
    return layers


def time_models(paths: dict[str, str], batches: list[int], duration_s: float) -> dict:
    """Median latency (ms) per model and batch, measured by `chase-deploy bench` itself."""
    from chase_deploy.bench import benchmark, format_table

    result = benchmark(
        list(paths.values()),
        backend="ort-cpu",
        batches=batches,
        warmup_ms=500,
        duration_s=duration_s,
        threads=2,
    )
    print(format_table(result))
    by_path = {path: name for name, path in paths.items()}
    latency: dict[int, dict[str, float]] = {}
    for r in result["results"]:
        latency.setdefault(r["batch"], {})[by_path[r["model"]]] = r["latency_ms"]["median"]
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration-s", type=float, default=6.0, help="measured time per model and batch"
    )
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    from chase_deploy.slim import slim_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "resnet50.pt"
        chase_checkpoint(ckpt)
        reports = {}
        for round_to, out in ((1, tmp / "r1"), (8, tmp / "r8")):
            t = time.perf_counter()
            reports[round_to] = slim_checkpoint(ckpt, out, round_to=round_to)
            wall = time.perf_counter() - t
            r = reports[round_to]
            print(
                f"slim --round-to {round_to}: {wall:.1f} s end to end "
                f"(export {r['timings']['export_s']:.1f} s, surgery {r['timings']['surgery_s']:.1f} s, "
                f"verify {r['timings']['verify_s']:.1f} s); lossless={r['lossless']} "
                f"max_abs_diff={r['max_abs_diff']:.2e}; GFLOPs {r['flops']['dense'] / 1e9:.2f} -> "
                f"{r['flops']['slim'] / 1e9:.2f} (bound {r['flop_ratio']:.2f}x)"
            )
        paths = {
            "dense": str(tmp / "r1" / "dense.onnx"),
            "slim": str(tmp / "r1" / "slim.onnx"),
            "slim-r8": str(tmp / "r8" / "slim.onnx"),
        }
        batches = [int(b) for b in args.batches.split(",")]
        latency = time_models(paths, batches, args.duration_s)
    bounds = {"slim": reports[1]["flop_ratio"], "slim-r8": reports[8]["flop_ratio"]}
    print(
        f"\nONNX Runtime CPU, 2 threads, `bench` medians over {args.duration_s:g} s per model and batch"
    )
    print(f"{'batch':>5} {'model':>8} {'ms':>9} {'speedup':>8} {'bound':>6} {'of bound':>8}")
    table = []
    for batch, per in latency.items():
        for name, ms in per.items():
            speedup = per["dense"] / ms
            bound = bounds.get(name, 1.0)
            table.append(
                {"batch": batch, "model": name, "ms": ms, "speedup": speedup, "bound": bound}
            )
            print(
                f"{batch:>5} {name:>8} {ms:>9.2f} {speedup:>7.2f}x {bound:>5.2f}x {speedup / bound:>8.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps({"latency": table, "bounds": bounds}, indent=2))


if __name__ == "__main__":
    main()
