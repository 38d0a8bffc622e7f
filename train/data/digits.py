"""scikit-learn's bundled handwritten digits (1,797 8x8 images), split with a fixed seed."""

from __future__ import annotations

import torch

from train.data.splits import Splits

SPLIT_SEED = 1234


def load_digits_tensors(
    val_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, val_x, val_y): uint8 images (N, 1, 8, 8) scaled 0..255, split by a seeded shuffle."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (
        torch.from_numpy(digits.images)
        .float()
        .mul(255.0 / 16.0)
        .round()
        .to(torch.uint8)
        .unsqueeze(1)
    )
    y = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = int(round(len(y) * val_fraction))
    val, tr = order[:n_val], order[n_val:]
    return x[tr], y[tr], x[val], y[val]


def load_digits_splits(val_fraction: float) -> Splits:
    tx, ty, vx, vy = load_digits_tensors(val_fraction)
    # a flipped digit is another symbol
    return Splits(tx, ty, vx, vy, num_classes=10, mean=(0.3,), std=(0.35,), mirror_ok=False)
