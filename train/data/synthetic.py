"""Synthetic images for tests and speed runs: learnable (class-dependent means), seeded."""

from __future__ import annotations

import torch

from train.data.splits import Splits

PROTOTYPE_SEED = 7
TRAIN_SEED, VAL_SEED = 1, 2


def make_synthetic(
    num: int, num_classes: int, channels: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images: 60 % a fixed per-class prototype, 40 % noise; labels uniform over classes."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num,), generator=g)
    prototypes = torch.rand(
        num_classes, channels, size, size, generator=torch.Generator().manual_seed(PROTOTYPE_SEED)
    )
    noise = torch.rand(num, channels, size, size, generator=g)
    images = (0.6 * prototypes[labels] + 0.4 * noise).mul(255).round().to(torch.uint8)
    return images, labels


def synthetic_splits(
    num_train: int, num_val: int, num_classes: int, channels: int, size: int
) -> Splits:
    tx, ty = make_synthetic(num_train, num_classes, channels, size, seed=TRAIN_SEED)
    vx, vy = make_synthetic(num_val, num_classes, channels, size, seed=VAL_SEED)
    return Splits(tx, ty, vx, vy, num_classes, mean=(0.5,) * channels, std=(0.25,) * channels)
