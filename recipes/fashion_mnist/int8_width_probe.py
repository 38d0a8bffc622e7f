"""Where does int8 pay on this network? fp32 against int8 throughput of an *untrained*
resnet_quick at several widths (speed needs no training), ONNX Runtime CPU, one interleaved run.

    python recipes/fashion_mnist/int8_width_probe.py [--widths 8,16,32] [--batch 32] [--duration-s 4]

Each width is exported (28x28, one channel), quantized with ``quantize --target cpu`` calibrated
on 512 Fashion-MNIST training images (recipes/fashion_mnist/dense.yaml at that width), and the
fp32 and int8 models of every width take turns in one ``bench`` run (one thread). Small widths
are dominated by per-operator overhead, where int8 gains little; the front study picks the
smallest width at which int8 clearly pays.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent


def main() -> None:
    from chase_deploy.bench import benchmark
    from chase_deploy.export import export_onnx
    from chase_deploy.graph.flops import layer_costs
    from chase_deploy.int8.calibration import CalibrationSource
    from chase_deploy.int8.quantize import Settings, quantize_file
    from train.config import load_recipe
    from train.models import create_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="8,16,32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=4.0)
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    models, mflops = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for width in widths:
            recipe = load_recipe(HERE / "dense.yaml", [f"model.width={width}"])
            model = create_model("resnet_quick", width=width, in_channels=1, num_classes=10)
            fp32 = Path(tmp) / f"w{width}.onnx"
            onnx.save(export_onnx(model, (2, 1, 28, 28)).model, str(fp32))
            mflops[width] = sum(c.flops for c in layer_costs(onnx.load(str(fp32)))) / 1e6
            source = CalibrationSource(HERE / "dense.yaml", "recipe", recipe)
            int8 = fp32.with_suffix(".int8.onnx")
            quantize_file(fp32, source, int8, Settings(allow_drop=True))
            models += [str(fp32), str(int8)]
        result = benchmark(models, "ort-cpu", [args.batch], 500, args.duration_s, threads=1)
    speed = {r["model"]: r["throughput"] for r in result["results"]}
    print(f"\nONNX Runtime CPU, batch {args.batch}, one thread, one interleaved run")
    print("| width | MFLOPs | fp32 items/s | int8 items/s | int8 / fp32 |")
    print("|---:|---:|---:|---:|---:|")
    for width, (fp32, int8) in zip(
        widths, zip(models[::2], models[1::2], strict=True), strict=True
    ):
        f, i = speed[fp32], speed[int8]
        print(f"| {width} | {mflops[width]:.1f} | {f:,.0f} | {i:,.0f} | {i / f:.2f}x |")


if __name__ == "__main__":
    main()
