"""Datasets: ``build_data(recipe.data, seed)`` gives train/val loaders and the input shape.

In memory (uint8, augmented per batch on tensors): digits, synthetic, cifar10, cifar100, mnist,
fashion_mnist. Streamed from disk through torchvision: imagefolder. Nothing is ever downloaded.
"""

from __future__ import annotations

from train.config import DataConfig
from train.data.augment import make_transform
from train.data.bundle import DataBundle
from train.data.loader import BatchLoader, TensorLoader
from train.data.splits import Splits
from train.errors import BadInput

__all__ = ["BatchLoader", "DataBundle", "Splits", "TensorLoader", "build_data", "load_splits"]

DEFAULT_SIZE = {
    "digits": 8,
    "synthetic": 32,
    "cifar10": 32,
    "cifar100": 32,
    "mnist": 28,
    "fashion_mnist": 28,
}


def build_data(cfg: DataConfig, seed: int, rank: int = 0, world: int = 1) -> DataBundle:
    """The loaders of rank ``rank`` of ``world``; the order of an epoch depends on (seed, epoch) only."""
    if cfg.batch_size % world:
        raise BadInput(
            f"recipe key data.batch_size: {cfg.batch_size} does not divide over {world} processes"
        )
    if cfg.name == "imagefolder":
        from train.data.imagefolder import build_imagefolder

        return build_imagefolder(cfg, seed, rank, world)
    data = load_splits(cfg)
    if len(data.train_y) < cfg.batch_size:
        raise BadInput(
            f"recipe key data.batch_size: {cfg.batch_size} is larger than the training set ({len(data.train_y)})"
        )
    size = cfg.image_size or DEFAULT_SIZE[cfg.name]
    common = dict(padding=cfg.crop_padding, flip=data.mirror_ok and cfg.flip, size=size)
    mean, std = list(data.mean), list(data.std)
    train = TensorLoader(
        data.train_x, data.train_y, cfg.batch_size, train=True, seed=seed, rank=rank, world=world,
        transform=make_transform(mean, std, train=True, augment=cfg.augment, **common),
    )  # fmt: skip
    val = TensorLoader(
        data.val_x, data.val_y, cfg.eval_batch_size, train=False, seed=seed, rank=rank, world=world,
        transform=make_transform(mean, std, train=False, augment=False, **common),
    )  # fmt: skip
    return DataBundle(train, val, data.num_classes, (data.channels, size, size))


def load_splits(cfg: DataConfig) -> Splits:
    """The in-memory datasets, uint8 as stored."""
    if cfg.name == "digits":
        from train.data.digits import load_digits_splits

        return load_digits_splits(cfg.val_fraction)
    if cfg.name == "synthetic":
        from train.data.synthetic import synthetic_splits

        size = cfg.image_size or DEFAULT_SIZE["synthetic"]
        return synthetic_splits(cfg.num_train, cfg.num_val, cfg.num_classes, cfg.channels, size)
    if cfg.name in ("cifar10", "cifar100"):
        from train.data.cifar import load_cifar

        if not cfg.root:
            raise BadInput(
                f"recipe key data.root: dataset {cfg.name} needs data.root (where the files are)"
            )
        return load_cifar(cfg.name, cfg.root)
    if cfg.name in ("mnist", "fashion_mnist"):
        from train.data.mnist import load_idx_dataset

        return load_idx_dataset(cfg.name, cfg.root)
    raise BadInput(f"recipe key data.name: dataset {cfg.name!r} is not available")
