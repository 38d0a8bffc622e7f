"""MNIST and Fashion-MNIST from the standard IDX files (plain or ``.gz``). Nothing is downloaded.

Fashion-MNIST defaults to where Debian's ``dataset-fashion-mnist`` package installs it:
``/usr/share/datasets/fashion-mnist/`` with the four files gzip-compressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from train.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from train.data.splits import Splits
from train.errors import BadInput

FASHION_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10


@dataclass(frozen=True)
class IdxDataset:
    title: str
    torchvision_folder: str  # torchvision's download layout, <root>/<folder>/raw, also accepted
    mean: float
    std: float
    mirror_ok: bool
    default_root: str | None
    hint: str  # how to get the files


MNIST = IdxDataset(
    title="MNIST",
    torchvision_folder="MNIST",
    mean=0.1307,
    std=0.3081,
    mirror_ok=False,  # a mirrored digit is another symbol
    default_root=None,
    hint="set data.root to the folder holding them",
)
FASHION = IdxDataset(
    title="Fashion-MNIST",
    torchvision_folder="FashionMNIST",
    mean=0.2860,
    std=0.3530,
    mirror_ok=True,
    default_root=FASHION_DEBIAN_ROOT,
    hint="on Debian/Ubuntu `apt-get install dataset-fashion-mnist` puts them in "
    f"{FASHION_DEBIAN_ROOT}, or set data.root to the folder holding them",
)
DATASETS = {"mnist": MNIST, "fashion_mnist": FASHION}

STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}


def load_idx_dataset(name: str, root: str | Path | None) -> Splits:
    """Train = the 60k ``train-*`` files, val = the 10k ``t10k-*`` files; uint8 (N, 1, 28, 28)."""
    ds = DATASETS[name]
    if root is None and ds.default_root is None:
        raise BadInput(
            f"recipe key data.root: dataset {name} needs data.root, a folder with "
            f"{', '.join(s + '[.gz]' for s in STEMS.values())}"
        )
    files = find_files(ds, Path(root or ds.default_root).expanduser())
    tx, ty = read_pair(files["train_images"], files["train_labels"])
    vx, vy = read_pair(files["val_images"], files["val_labels"])
    if tx.shape[1:] != vx.shape[1:]:
        raise BadInput(
            f"{ds.title} at {files['val_images'].parent}: train images are {tuple(tx.shape[2:])} "
            f"but test images are {tuple(vx.shape[2:])}"
        )
    return Splits(tx, ty, vx, vy, NUM_CLASSES, (ds.mean,), (ds.std,), mirror_ok=ds.mirror_ok)


def find_files(ds: IdxDataset, root: Path) -> dict[str, Path]:
    """The four files in ``root`` (or torchvision's ``root/<Name>/raw``); plain preferred over .gz."""
    expected = f"expected {ds.title} IDX files {', '.join(s + '[.gz]' for s in STEMS.values())}"
    folders = [root, root / ds.torchvision_folder / "raw"]
    folder = next((f for f in folders if any(_candidates(f, s) for s in STEMS.values())), root)
    if not folder.is_dir():
        raise BadInput(f"data.root {root}: no such directory; {expected}; {ds.hint}")
    found = {key: _candidates(folder, stem) for key, stem in STEMS.items()}
    missing = [STEMS[k] + "[.gz]" for k, paths in found.items() if not paths]
    if missing:
        raise BadInput(f"data.root {folder}: {expected}; missing {', '.join(missing)}; {ds.hint}")
    return {key: paths[0] for key, paths in found.items()}


def _candidates(folder: Path, stem: str) -> list[Path]:
    """Existing spellings of one file: plain, gzipped, and the 'train-images.idx3-ubyte' variant."""
    dotted = stem.replace("-idx", ".idx")
    names = (stem, dotted, stem + ".gz", dotted + ".gz")
    return [folder / n for n in names if (folder / n).is_file()]


def read_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64, with counts and label range checked."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise BadInput(
            f"IDX files {images_path} and {labels_path}: {len(images)} images but {len(labels)} "
            "labels; the two files are from different sets or one is damaged"
        )
    if min(images.shape) == 0:
        raise BadInput(f"IDX file {images_path}: empty (dimensions {images.shape})")
    if labels.max() >= NUM_CLASSES:
        raise BadInput(
            f"IDX file {labels_path}: label {labels.max()} is out of range [0, {NUM_CLASSES})"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
