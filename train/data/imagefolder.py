"""An ImageFolder tree (``root/train/<class>/*``, ``root/val/<class>/*``) through torchvision.

Too big for memory, so it streams through ``FolderLoader``. Train: RandomResizedCrop + flip;
val: Resize(size * 256 / 224) + CenterCrop(size); both normalized with the ImageNet statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from train.config import DataConfig
from train.data.bundle import DataBundle
from train.data.folder_loader import FolderLoader
from train.errors import BadInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224


def import_torchvision() -> Any:
    """torchvision, or a ``BadInput`` saying how to install it."""
    try:
        import torchvision
        from torchvision import datasets, transforms  # noqa: F401
    except ImportError:
        raise BadInput(
            "data.name imagefolder needs torchvision, which is not installed: "
            "pip install 'chase-deploy[vision]' (or the torchvision build matching your torch)"
        ) from None
    except (RuntimeError, OSError) as e:  # installed but built for another torch
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        raise BadInput(
            f"data.name imagefolder: torchvision failed to import ({first}); install the torchvision "
            f"build that matches torch {torch.__version__}"
        ) from None
    return torchvision


def build_imagefolder(cfg: DataConfig, seed: int, rank: int, world: int) -> DataBundle:
    tv = import_torchvision()
    T = tv.transforms
    if not cfg.root:
        raise BadInput(
            "recipe key data.root: dataset imagefolder needs data.root (the folder holding train/ and val/)"
        )
    root = Path(cfg.root).expanduser()
    size = cfg.image_size or DEFAULT_SIZE
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    center = [T.Resize(int(size * 256 / 224)), T.CenterCrop(size)]
    if cfg.augment:
        flip = [T.RandomHorizontalFlip()] if cfg.flip else []
        train_tf = T.Compose([T.RandomResizedCrop(size), *flip, *normalize])
    else:
        train_tf = T.Compose([*center, *normalize])
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise BadInput(
                f"data.root {root}: expected an ImageFolder tree root/train/<class>/<image> and "
                f"root/val/<class>/<image>; missing {root / split}"
            )
    train_set = open_split(tv, root, "train", train_tf)
    val_set = open_split(tv, root, "val", T.Compose([*center, *normalize]))
    if train_set.classes != val_set.classes:
        only = sorted(set(train_set.classes) ^ set(val_set.classes))[:3]
        raise BadInput(
            f"data.root {root}: train and val have different class folders (e.g. {', '.join(only)}); "
            "both need the same set of class names"
        )
    if len(train_set) < cfg.batch_size:
        raise BadInput(
            f"recipe key data.batch_size: {cfg.batch_size} is larger than the training set ({len(train_set)})"
        )
    common = dict(
        seed=seed, rank=rank, world=world, workers=cfg.workers, pin_memory=torch.cuda.is_available()
    )
    return DataBundle(
        train=FolderLoader(train_set, cfg.batch_size, train=True, **common),
        val=FolderLoader(val_set, cfg.eval_batch_size, train=False, **common),
        num_classes=len(train_set.classes),
        input_shape=(3, size, size),
    )


def open_split(tv: Any, root: Path, split: str, transform: Any) -> Any:
    folder = root / split
    try:
        return tv.datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise BadInput(f"data.root {folder}: no usable class folders of images ({first})") from None
