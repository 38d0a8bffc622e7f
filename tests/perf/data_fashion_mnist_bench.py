"""Time a full pass over Fashion-MNIST: read + validate the IDX files, one training epoch, one val pass.

Run: python tests/perf/data_fashion_mnist_bench.py [ROOT] [--batch 128] [--repeats 3]
(ROOT defaults to Debian's /usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`.)
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    import torch

    from train.config import DataConfig
    from train.data import build_data, load_splits

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("root", nargs="?", default=None)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = DataConfig(name="fashion_mnist", root=args.root, batch_size=args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    times: dict[str, list[float]] = {
        "load (read+gunzip+validate)": [],
        "train epoch (crop+flip+normalize)": [],
        "val pass": [],
    }
    for _ in range(args.repeats):
        t = time.perf_counter()
        splits = load_splits(cfg)
        times["load (read+gunzip+validate)"].append(time.perf_counter() - t)
        bundle = build_data(cfg, seed=0)
        t = time.perf_counter()
        n_train = sum(len(y) for _, y in bundle.train.batches(0))
        times["train epoch (crop+flip+normalize)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        n_val = sum(len(y) for _, y in bundle.val.batches(0))
        times["val pass"].append(time.perf_counter() - t)
    print(
        f"train {tuple(splits.train_x.shape)} val {tuple(splits.val_x.shape)}; per epoch {n_train} train / {n_val} val samples"
    )
    for name, ts in times.items():
        print(
            f"{name:36s} median {statistics.median(ts):.3f} s  (min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)})"
        )


if __name__ == "__main__":
    main()
