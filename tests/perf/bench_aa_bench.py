"""How trustworthy is `bench`? An A/A run (the same model twice) and a half-width model.

Opt-in (not collected by pytest):
    python tests/perf/bench_aa_bench.py [--duration-s 2] [--threads 2] [--batch 1,8,32]

Exports ``resnet_quick`` (CIFAR-shaped, 32x32) at width W and W/2 with a dynamic batch axis,
copies the first file, and benchmarks [W, W copy, W/2] with ONNX Runtime CPU in one interleaved
run. The copy's speedup should be 1.00 within the run-to-run noise that the stability numbers
(CV of the slice medians) report; the half-width model shows what a real difference looks like.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def export(width: int, path: Path) -> Path:
    import torch

    from train.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet_quick", num_classes=10, in_channels=3, width=width).eval()
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 32, 32),),
        str(path),
        dynamo=False,
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args()

    from chase_deploy.bench import benchmark, format_table
    from chase_deploy.commands.params import BatchSizes

    with tempfile.TemporaryDirectory() as tmp:
        full = export(args.width, Path(tmp) / f"w{args.width}.onnx")
        copy = Path(tmp) / f"w{args.width}_copy.onnx"
        shutil.copy(full, copy)
        half = export(args.width // 2, Path(tmp) / f"w{args.width // 2}.onnx")
        result = benchmark(
            [full, copy, half],
            batches=BatchSizes().convert(args.batch, None, None),
            duration_s=args.duration_s,
            threads=args.threads,
        )
    print(format_table(result))
    print("\nA/A speedup (should be 1.00) and run-to-run variation:")
    for row in result["results"]:
        if Path(row["model"]).name.endswith("_copy.onnx"):
            print(f"  batch {row['batch']:>3}: A/A speedup {row['speedup']:.3f}")
    for row in result["environment"]["stability"]:
        print(
            f"  {Path(row['model']).name:>16} batch {row['batch']:>3}: {row['iterations']:>6} iterations, "
            f"CV of slice medians {row['cv_slices']:.1%}"
        )


if __name__ == "__main__":
    main()
