"""Which Q/DQ patterns does ONNX Runtime's CPU provider turn into integer kernels, and which
placement runs fastest? Opt-in, not collected by pytest.

    python tests/perf/int8_patterns.py [--model resnet_quick|resnet50] [--width 16] [--batch 32]

One fp32 model (untrained: speed needs no training) is quantized by ``quantize_static`` under
several placements: every operator ONNX Runtime can quantize (``quantize --target cpu``), only
Conv/Gemm/MatMul, Conv/Gemm/MatMul plus Add, and the TensorRT form (``--target tensorrt``). For
each, the graph ONNX Runtime actually runs after optimization (``SessionOptions.
optimized_model_filepath``) is summarized by operator type, and all of them plus the fp32 model
run in one interleaved ``bench``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


class Random:
    """Calibration batches of random images: enough for speed, meaningless for accuracy."""

    def __init__(self, shape, batches=2):
        rng = np.random.default_rng(0)
        self.items = [rng.standard_normal(shape, dtype=np.float32) for _ in range(batches)]

    def get_next(self):
        return {"input": self.items.pop()} if self.items else None


def main() -> None:
    from onnxruntime.quantization import CalibrationDataReader, quant_pre_process, quantize_static

    from chase_deploy.bench import benchmark, format_table
    from chase_deploy.export import export_onnx
    from chase_deploy.int8.inspect_qdq import ort_cpu_plan
    from chase_deploy.int8.targets import quantize_static_kwargs
    from train.models import create_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet_quick", choices=("resnet_quick", "resnet50"))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=4.0)
    args = parser.parse_args()
    if args.model == "resnet50":
        model, shape = create_model("resnet50"), (args.batch, 3, 224, 224)
    else:
        model = create_model("resnet_quick", width=args.width, in_channels=1, num_classes=10)
        shape = (args.batch, 1, 28, 28)

    class Reader(Random, CalibrationDataReader):
        pass

    cpu = quantize_static_kwargs("cpu", "minmax")
    variants = {
        "cpu: every op (quantize --target cpu)": cpu,
        "cpu: Conv/Gemm/MatMul only": {**cpu, "op_types_to_quantize": ["Conv", "Gemm", "MatMul"]},
        "cpu: Conv/Gemm/MatMul + Add": {
            **cpu,
            "op_types_to_quantize": ["Conv", "Gemm", "MatMul", "Add"],
        },
        "tensorrt form (quantize --target tensorrt)": quantize_static_kwargs("tensorrt", "minmax"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        onnx.save(export_onnx(model, (2, *shape[1:])).model, str(fp32))
        quant_pre_process(str(fp32), str(pre))
        paths = {"fp32": fp32}
        for i, (name, kwargs) in enumerate(variants.items()):
            out = Path(tmp) / f"v{i}.onnx"
            quantize_static(str(pre), str(out), Reader((min(args.batch, 8), *shape[1:])), **kwargs)
            print(f"{name}: ORT CPU runs {ort_cpu_plan(out).ops}", flush=True)
            paths[name] = out
        result = benchmark(
            [str(p) for p in paths.values()],
            "ort-cpu",
            [args.batch],
            500,
            args.duration_s,
            threads=args.threads,
        )
    print(format_table(result))
    names = {str(p): n for n, p in paths.items()}
    for r in result["results"]:
        print(f"{names[r['model']]:>45}: {r['throughput']:9.0f} items/s  {r['speedup']:.2f}x fp32")


if __name__ == "__main__":
    main()
