"""What ``build_data`` hands the training loop."""

from __future__ import annotations

from dataclasses import dataclass

from train.data.loader import BatchLoader


@dataclass
class DataBundle:
    train: BatchLoader
    val: BatchLoader
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) the model sees
