"""Datasets: ``build_data(recipe.data, seed)`` gives train/val loaders and the input shape."""

from __future__ import annotations

from dataclasses import dataclass

from train.config import DataConfig
from train.data.augment import make_transform
from train.data.loader import TensorLoader
from train.errors import BadInput


@dataclass
class DataBundle:
    train: TensorLoader
    val: TensorLoader
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) the model sees


def build_data(cfg: DataConfig, seed: int, rank: int = 0, world: int = 1) -> DataBundle:
    if cfg.batch_size % world:
        raise BadInput(f"recipe key data.batch_size: {cfg.batch_size} does not divide over {world} processes")
    if cfg.name == "digits":
        from train.data.digits import load_digits_tensors

        tx, ty, vx, vy = load_digits_tensors(cfg.val_fraction)
        mean, std, classes = [0.3], [0.35], 10
        size = cfg.image_size or 8
        flip = False  # a flipped digit is another symbol
    elif cfg.name == "synthetic":
        from train.data.synthetic import make_synthetic

        size = cfg.image_size or 32
        tx, ty = make_synthetic(cfg.num_train, cfg.num_classes, cfg.channels, size, seed=1)
        vx, vy = make_synthetic(cfg.num_val, cfg.num_classes, cfg.channels, size, seed=2)
        mean, std, classes = [0.5] * cfg.channels, [0.25] * cfg.channels, cfg.num_classes
        flip = cfg.flip
    else:
        raise BadInput(f"recipe key data.name: dataset {cfg.name!r} is not available yet")
    if len(ty) < cfg.batch_size:
        raise BadInput(
            f"recipe key data.batch_size: {cfg.batch_size} is larger than the training set ({len(ty)})"
        )
    kwargs = dict(padding=cfg.crop_padding, flip=flip and cfg.flip, size=size)
    train = TensorLoader(
        tx, ty, cfg.batch_size, train=True, seed=seed, rank=rank, world=world,
        transform=make_transform(mean, std, train=True, augment=cfg.augment, **kwargs),
    )
    val = TensorLoader(
        vx, vy, cfg.eval_batch_size, train=False, seed=seed, rank=rank, world=world,
        transform=make_transform(mean, std, train=False, augment=False, **kwargs),
    )
    return DataBundle(train, val, classes, (tx.shape[1], size, size))
