"""Synthetic images for tests and speed runs: learnable (class-dependent means), seeded."""

from __future__ import annotations

import torch


def make_synthetic(
    num: int, num_classes: int, channels: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num,), generator=g)
    prototypes = torch.rand(num_classes, channels, size, size, generator=torch.Generator().manual_seed(7))
    noise = torch.rand(num, channels, size, size, generator=g)
    images = (0.6 * prototypes[labels] + 0.4 * noise).mul(255).round().to(torch.uint8)
    return images, labels
