"""Build the three ResNet-50 programs the GPU check times: dense, slim and slim ``--round-to 8``.

    python tests/gpu/prepare.py --out DIR [--dry-run]

Writes ``DIR/dense.pt2``, ``DIR/slim.pt2``, ``DIR/slim_r8.pt2`` and ``DIR/prepare.json`` (paths,
FLOPs, the FLOP-ratio bound, each program's verification). Everything runs on the CPU. The
channel groups (which layers are pruned together, and what each cut reaches) are read from the
model's graph, as in training and ``slim``: an ONNX export (torch's exporter, onnxscript) walked
with onnx-graphsurgeon (``chase_deploy.graph.analysis``), once for the plan and once per slim
model. The box has all of that but onnx-graphsurgeon, whose pure-Python wheel travels in
``tests/gpu/wheels/`` (``check.sh`` puts it on the path; without it this script exits 2 at once).

The model is ImageNet ResNet-50 (3x224x224; ``--dry-run``: 3x32x32) with the irregular,
Table-15-like widths of ``tests/perf/slim_speedup.py`` (the same ``chase_model``, not a copy):
pruned bottleneck conv1/conv2 rows zero, their consumers' columns zero, BN left dense. The
``--round-to 8`` plan widens every kept set to a multiple of 8 with ``train.rounding.round_kept``
scored by the producer's L1 norm per channel, the rule ``slim --round-to`` applies in ONNX; here
every candidate channel is a masked (zero) row, so both pick the lowest indices.

The physically slim models come from ``physically_slim`` below, which is
``chase_deploy.torch_export.physically_slim`` (the graph's channel groups cut by
``train.slicing``). Each program is verified against the masked dense model (fp32, CPU, batches
1, 3, 2) before it is written.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "perf"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from chase_deploy import torch_export  # noqa: E402
from train.plan import ChannelPlan, LayerPlan, parse_plan  # noqa: E402
from train.rounding import round_kept  # noqa: E402

IMAGE = (3, 224, 224)
DRY_IMAGE = (3, 32, 32)
ROUND_TO = 8
MODELS = ("dense", "slim", "slim_r8")


def physically_slim(model: nn.Module, plan: ChannelPlan) -> nn.Module:
    """Physically slim ``model`` by ``plan`` (``torch_export.physically_slim``); the groups of
    ResNet-50 (prune_skip off, as the plan prunes only bottleneck conv1/conv2) do not depend on
    the input size, so they are traced on the small one."""
    from chase_deploy.graph.analysis import derive_groups

    return torch_export.physically_slim(model, plan, derive_groups(model, DRY_IMAGE))


def rounded_plan(model: nn.Module, plan: ChannelPlan, round_to: int) -> ChannelPlan:
    """``plan`` with every pruned layer widened to a multiple of ``round_to`` (slim's rule)."""
    modules = dict(model.named_modules())
    layers = {}
    for key, entry in plan.layers.items():
        weight = modules[key].weight.detach().abs().double()
        scores = weight.sum(dim=tuple(range(1, weight.dim()))).tolist()
        kept = round_kept(entry.kept, entry.out_channels, round_to, scores)
        layers[key] = LayerPlan(entry.out_channels, kept)
    return ChannelPlan(layers)


def module_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs per sample of the Conv2d and Linear layers (2 per multiply-add), as
    ``chase_deploy/graph/flops.py`` counts them in ONNX."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        positions = output[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
        total += 2 * module.weight.numel() * positions

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *shape)))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def prepare(
    out: Path,
    dry_run: bool = False,
    slicer: Callable[[nn.Module, ChannelPlan], nn.Module] = physically_slim,
    log: Callable[[str], None] = print,
) -> dict:
    """Build, verify and write the programs; returns what ``prepare.json`` holds."""
    from slim_speedup import chase_model, table15_counts

    from train.atomic import write_bytes, write_json

    start = time.perf_counter()
    image = DRY_IMAGE if dry_run else IMAGE
    shape = (2, *image)
    masked, _, layers = chase_model(seed=0)
    plan = parse_plan({"format": "chase-channel-plan", "version": 1, "layers": layers})
    plans = {"slim": plan, "slim_r8": rounded_plan(masked, plan, ROUND_TO)}
    dense_flops = module_flops(masked, image)
    info: dict = {
        "format": "chase-gpu-prepare",
        "model": "resnet50 (ImageNet), Table-15-like widths of tests/perf/slim_speedup.py",
        "input_shape": list(image),
        "round_to": ROUND_TO,
        "widths": {
            name: [len(p.layers[k].kept) for k in sorted(p.layers)] for name, p in plans.items()
        },
        "table15_counts": [list(c) for c in table15_counts(0)],
        "models": {},
    }
    log(f"prepare: resnet50 at {'x'.join(map(str, image))}, dense {dense_flops / 1e9:.3f} GFLOPs")
    programs = {"dense": torch_export.dense_program(masked, shape)}
    info["models"]["dense"] = {"flops": dense_flops, "flop_bound": 1.0}
    for name, p in plans.items():
        try:
            sliced = slicer(copy.deepcopy(masked), p)
        except ValueError as e:  # a pruned layer the PyTorch slicer cannot cut
            info["models"][name] = {"missing": f"physical slicing: {e}"}
            log(f"prepare: {name} skipped: physical slicing: {e}")
            continue
        flops = module_flops(sliced, image)
        programs[name] = torch_export.slim_program(sliced, masked, shape)
        info["models"][name] = {"flops": flops, "flop_bound": round(dense_flops / flops, 4)}
        log(f"prepare: {name} {flops / 1e9:.3f} GFLOPs, FLOP bound {dense_flops / flops:.3f}x")
    out.mkdir(parents=True, exist_ok=True)
    for name, program in programs.items():
        path = out / f"{name}.pt2"
        write_bytes(path, program.data)
        info["models"][name].update(program.report(path))
    info["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "prepare.json", info)
    log(f"prepare: wrote {', '.join(f'{n}.pt2' for n in programs)} in {info['seconds']} s")
    return info


def main(argv: list[str] | None = None, slicer=physically_slim) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the .pt2 files")
    parser.add_argument(
        "--dry-run", action="store_true", help=f"input {'x'.join(map(str, DRY_IMAGE))} (CPU checks)"
    )
    args = parser.parse_args(argv)
    try:
        import onnx_graphsurgeon  # noqa: F401  (the channel groups are read with it)
    except ImportError:
        print(
            "prepare: onnx_graphsurgeon does not import; run 'bash tests/gpu/fetch_wheels.sh' "
            "and put tests/gpu/wheels/*.whl on PYTHONPATH (check.sh does)",
            file=sys.stderr,
        )
        return 2
    prepare(args.out, dry_run=args.dry_run, slicer=slicer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
