"""Print the Fashion-MNIST results table (markdown) from the run directories of run_all.sh.

    python recipes/fashion_mnist/results_table.py [RUNS_DIR]     # default runs/fmnist

Per recipe: final-epoch validation top-1 (metrics.jsonl), parameters of slim.onnx (all, and
non-zero), FLOPs of slim.onnx and of its non-zero weights (slim_report.json), ONNX Runtime CPU
median latency of slim.onnx at each benchmarked batch size with its speedup over the same run's
dense.onnx (bench.json), and the training wall time (sum of the epochs' seconds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = ("dense", "chase_unstructured", "chase_sc05", "static", "rigl")


def nonzero_params(onnx_path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    arrays = (numpy_helper.to_array(t) for t in model.graph.initializer)
    return sum(int((a != 0).sum()) for a in arrays if a.dtype.kind == "f")  # not shape constants


def row(run: Path) -> dict:
    epochs = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if line.strip() and json.loads(line).get("event") == "epoch"
    ]
    slim = json.loads((run / "slim" / "slim_report.json").read_text())
    bench = json.loads((run / "bench.json").read_text())
    latency = {
        r["batch"]: (r["latency_ms"]["median"], r["speedup"])
        for r in bench["results"]
        if Path(r["model"]).name == "slim.onnx"
    }
    return {
        "acc": epochs[-1]["val_acc"],
        "channel_sparsity": epochs[-1]["channel_sparsity"],
        "params": slim["params"]["slim"],
        "nonzero": nonzero_params(run / "slim" / "slim.onnx"),
        "flops": slim["flops"]["slim"],
        "sparse_flops": slim["flops"]["sparse"],
        "latency": latency,
        "wall_s": sum(e["seconds"] for e in epochs),
        "min_epoch_s": min(e["seconds"] for e in epochs),
    }


def main(runs: Path) -> None:
    rows = {name: row(runs / name) for name in NAMES if (runs / name / "bench.json").is_file()}
    batches = sorted({b for r in rows.values() for b in r["latency"]})
    lat_head = " | ".join(f"slim latency b{b} ms (speedup)" for b in batches)
    print(
        f"| recipe | top-1 % | S_c | params (non-zero) | MFLOPs (non-zero) | {lat_head} | train wall s "
        "(fastest epoch s) |"
    )
    print("|---|---:|---:|---:|---:|" + "---:|" * len(batches) + "---:|")
    for name, r in rows.items():
        lat = " | ".join(
            f"{r['latency'][b][0]:.3f} ({r['latency'][b][1]:.2f}x)" if b in r["latency"] else "n/a"
            for b in batches
        )
        print(
            f"| {name} | {100 * r['acc']:.2f} | {r['channel_sparsity']:.2f} | {r['params']:,} "
            f"({r['nonzero']:,}) | {r['flops'] / 1e6:.2f} ({r['sparse_flops'] / 1e6:.2f}) | {lat} | "
            f"{r['wall_s']:.0f} ({r['min_epoch_s']:.0f}) |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fmnist"))
