"""CIFAR-10 / CIFAR-100 from the standard "python version" pickle batches. Nothing is downloaded.

Images stay uint8 in memory (50,000 x 3 x 32 x 32 = 150 MB); the loaders convert each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from train.data.safe_pickle import load_array_pickle
from train.data.splits import Splits
from train.errors import BadInput

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    title: str
    folder: str  # the folder the archive extracts to
    train_files: tuple[str, ...]
    val_file: str
    label_key: str
    num_classes: int
    described: str  # the expected files, as a person would list them
    mean: tuple[float, float, float]
    std: tuple[float, float, float]  # pixel std over the training set


CIFAR10 = CifarLayout(
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    val_file="test_batch",
    label_key="labels",
    num_classes=10,
    described="data_batch_1..5 and test_batch",
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarLayout(
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    val_file="test",
    label_key="fine_labels",
    num_classes=100,
    described="train and test",
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)
LAYOUTS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def load_cifar(name: str, root: str | Path) -> Splits:
    """Train = the training batches, val = the test batch, as uint8 (N, 3, 32, 32) tensors."""
    layout = LAYOUTS[name]
    folder = find_folder(layout, Path(root).expanduser())
    train = [read_batch(folder / f, layout) for f in layout.train_files]
    vx, vy = read_batch(folder / layout.val_file, layout)
    return Splits(
        train_x=torch.cat([x for x, _ in train]),
        train_y=torch.cat([y for _, y in train]),
        val_x=vx,
        val_y=vy,
        num_classes=layout.num_classes,
        mean=layout.mean,
        std=layout.std,
    )


def find_folder(layout: CifarLayout, root: Path) -> Path:
    """``root`` itself or ``root/<archive folder>``, whichever holds the batches; else say what is missing."""
    expected = (
        f"expected {layout.title} python batches {layout.described} (the 'python version' "
        f"archive, extracted, in {root} or {root / layout.folder})"
    )
    if not root.is_dir():
        raise BadInput(f"data.root {root}: no such directory; {expected}")
    folder = root / layout.folder if (root / layout.folder).is_dir() else root
    names = (*layout.train_files, layout.val_file)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise BadInput(f"data.root {folder}: {expected}; missing {', '.join(missing)}")
    return folder


def read_batch(path: Path, layout: CifarLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> (uint8 images N x 3 x 32 x 32, int64 labels), validated."""
    what = f"{layout.title} batch"
    batch = load_array_pickle(path, what)
    if not isinstance(batch, dict):
        raise BadInput(f"{what} {path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get(layout.label_key)
    if data is None or labels is None:
        raise BadInput(
            f"{what} {path}: lacks the 'data' or '{layout.label_key}' entry; is it a {layout.title} file?"
        )
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != PIXELS
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise BadInput(f"{what} {path}: 'data' should be uint8 rows of {PIXELS} pixels, got {got}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise BadInput(f"{what} {path}: '{layout.label_key}' is not a list of integers") from None
    if y.shape != (len(data),):
        raise BadInput(f"{what} {path}: {len(data)} images but {y.size} labels")
    if y.size and (y.min() < 0 or y.max() >= layout.num_classes):
        raise BadInput(
            f"{what} {path}: labels out of range [0, {layout.num_classes}): {y.min()}..{y.max()}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(y)
