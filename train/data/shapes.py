"""A dataset's class count and input shape from the recipe alone, before any data is on disk.

``inspect RECIPE`` traces the model to list its channel groups, which needs only the shape of one
sample and the number of classes: known for every built-in dataset from the recipe's keys
(``image_size`` else the dataset's own size). An ImageFolder tree's classes are its folders, so
there the recipe must say ``model.num_classes`` or the data is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from train.config import DataConfig
from train.data import DEFAULT_SIZE
from train.data.imagefolder import DEFAULT_SIZE as FOLDER_SIZE

# dataset -> (classes, channels)
FIXED = {
    "digits": (10, 1),
    "cifar10": (10, 3),
    "cifar100": (100, 3),
    "mnist": (10, 1),
    "fashion_mnist": (10, 1),
}


@dataclass(frozen=True)
class DataShape:
    """What the model is built and traced with (the fields ``DataBundle`` has too)."""

    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)


def known_shape(cfg: DataConfig, num_classes: int | None = None) -> DataShape | None:
    """The recipe's data shape without reading the data; None where only the data can tell
    (an ImageFolder tree without ``num_classes``)."""
    if cfg.name == "synthetic":
        size = cfg.image_size or DEFAULT_SIZE["synthetic"]
        return DataShape(cfg.num_classes, (cfg.channels, size, size))
    if cfg.name in FIXED:
        classes, channels = FIXED[cfg.name]
        size = cfg.image_size or DEFAULT_SIZE[cfg.name]
        return DataShape(classes, (channels, size, size))
    if cfg.name == "imagefolder" and num_classes is not None:
        size = cfg.image_size or FOLDER_SIZE
        return DataShape(num_classes, (3, size, size))
    return None
