"""Batched augmentation on tensors (random crop with padding, horizontal flip, normalization)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def make_transform(
    mean: list[float],
    std: list[float],
    *,
    train: bool,
    augment: bool,
    padding: int = 4,
    flip: bool = True,
    size: int | None = None,
):
    """A transform ``(uint8 or float batch, generator) -> normalized float batch``."""
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)

    def transform(x: Tensor, g: torch.Generator) -> Tensor:
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if train and augment:
            if padding:
                x = random_crop(x, padding, g)
            if flip:
                x = random_flip(x, g)
        return (x - mean_t) / std_t

    return transform


def random_crop(x: Tensor, padding: int, g: torch.Generator) -> Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    rows = (
        (dy.view(n, 1) + torch.arange(h).view(1, h))
        .view(n, 1, h, 1)
        .expand(n, c, h, w + 2 * padding)
    )
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
    return out.gather(3, cols)


def random_flip(x: Tensor, g: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
