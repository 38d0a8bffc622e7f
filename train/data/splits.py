"""A dataset held in memory: uint8 train/val tensors plus what the loaders need to know about it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Splits:
    """Train and validation images (uint8, N x C x H x W) and int64 labels, with their statistics.

    ``mirror_ok`` says whether a horizontal flip keeps the label (not for digits: a mirrored 2 is
    no digit). ``mean``/``std`` are per channel on the 0..1 scale.
    """

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mirror_ok: bool = True

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])
