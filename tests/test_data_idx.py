"""IDX files (MNIST, Fashion-MNIST): parsing, validation and the dataset-level messages."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import DataConfig
from train.data import build_data
from train.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from train.data.mnist import DATASETS, FASHION_DEBIAN_ROOT, load_idx_dataset
from train.errors import BadInput


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (0x0800 | array.ndim)
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def images(n: int, seed: int = 0, h: int = 28, w: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def write_set(
    root: Path, n_train: int = 12, n_val: int = 5, gz: bool = False
) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": images(n_train, 1),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": images(n_val, 2),
        "t10k-labels-idx1-ubyte": (np.arange(n_val, dtype=np.uint8) * 3) % 10,
    }
    for name, a in arrays.items():
        write(root / (name + ext), idx_bytes(a))
    return arrays


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_plain_and_gzip(tmp_path, name):
    a = images(3)
    got = read_idx(write(tmp_path / name, idx_bytes(a)), IMAGES_MAGIC)
    assert got.shape == (3, 28, 28) and np.array_equal(got, a)
    labels = np.array([0, 9, 4], np.uint8)
    assert read_idx(write(tmp_path / ("l" + name), idx_bytes(labels)), LABELS_MAGIC).tolist() == [
        0,
        9,
        4,
    ]


def test_wrong_magic_number(tmp_path):
    path = write(tmp_path / "labels-as-images", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(BadInput, match="magic number 2049, expected 2051 \\(uint8 images\\)"):
        read_idx(path, IMAGES_MAGIC)
    path = write(tmp_path / "float", idx_bytes(np.zeros((1, 2, 2)), magic=0x0D03))
    with pytest.raises(BadInput, match="magic number 3331, expected 2051"):
        read_idx(path, IMAGES_MAGIC)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, gz):
    data = idx_bytes(images(3))
    path = write(tmp_path / ("t.gz" if gz else "t"), data[:-10])
    with pytest.raises(
        BadInput, match=r"truncated: dimensions \(3, 28, 28\) need 2352 bytes of data, found 2342"
    ):
        read_idx(path, IMAGES_MAGIC)
    write(path, data[:6])
    with pytest.raises(BadInput, match="shorter than its header"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_gzip_stream_and_trailing_bytes(tmp_path):
    data = gzip.compress(idx_bytes(images(3)))
    (tmp_path / "t.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="broken gzip data"):
        read_idx(tmp_path / "t.gz", IMAGES_MAGIC)
    path = write(tmp_path / "long", idx_bytes(images(3)) + b"\0\0")
    with pytest.raises(BadInput, match="2 bytes past the end"):
        read_idx(path, IMAGES_MAGIC)


@pytest.mark.parametrize("gz", [False, True])
def test_load_dataset(tmp_path, gz):
    arrays = write_set(tmp_path, gz=gz)
    s = load_idx_dataset("fashion_mnist", tmp_path)
    assert s.train_x.shape == (12, 1, 28, 28) and s.train_x.dtype == torch.uint8
    assert np.array_equal(s.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert s.train_y.dtype == torch.int64 and s.train_y.tolist() == [i % 10 for i in range(12)]
    assert s.val_y.tolist() == [0, 3, 6, 9, 2] and s.num_classes == 10 and s.mirror_ok
    assert not load_idx_dataset("mnist", tmp_path).mirror_ok


def test_count_mismatch(tmp_path):
    write_set(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(BadInput, match="5 images but 4 labels"):
        load_idx_dataset("mnist", tmp_path)


def test_label_out_of_range(tmp_path):
    write_set(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 3, 10], np.uint8)))
    with pytest.raises(BadInput, match=r"label 10 is out of range \[0, 10\)"):
        load_idx_dataset("mnist", tmp_path)


def test_missing_files_name_the_debian_package(tmp_path):
    write_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(BadInput) as e:
        load_idx_dataset("fashion_mnist", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "missing train-labels-idx1-ubyte[.gz]" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and FASHION_DEBIAN_ROOT in msg
    with pytest.raises(BadInput, match="no such directory.*dataset-fashion-mnist"):
        load_idx_dataset("fashion_mnist", tmp_path / "absent")


def test_mnist_needs_a_root():
    with pytest.raises(
        BadInput, match="dataset mnist needs data.root, a folder with train-images-idx3-ubyte"
    ):
        load_idx_dataset("mnist", None)


def test_torchvision_layout_and_dotted_names(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_set(raw)
    (raw / "train-images-idx3-ubyte").rename(raw / "train-images.idx3-ubyte")
    assert load_idx_dataset("mnist", tmp_path).train_x.shape == (12, 1, 28, 28)


def test_build_data_flips_fashion_but_not_digits(tmp_path):
    write_set(tmp_path, n_train=64)
    plain = torch.from_numpy(images(64, 1)).unsqueeze(1).float() / 255
    for name, flips in (("fashion_mnist", True), ("mnist", False)):
        cfg = DataConfig(name=name, root=str(tmp_path), batch_size=64, crop_padding=0)
        b = build_data(cfg, seed=0)
        assert b.input_shape == (1, 28, 28) and b.num_classes == 10
        ((x, y),) = list(b.train.batches(0))
        flipped = count_mirrored(x, y, plain, name)
        assert flipped > 10 if flips else flipped == 0


def count_mirrored(x: torch.Tensor, y: torch.Tensor, plain: torch.Tensor, name: str) -> int:
    """Match each output image to its normalized source image, as-is or mirrored; count mirrors."""
    ds = DATASETS[name]
    src = (plain - ds.mean) / ds.std
    flipped = 0
    for img, label in zip(x, y, strict=True):
        candidates = [i for i in range(len(src)) if i % 10 == int(label)]
        same = any(torch.allclose(src[i], img, atol=1e-6) for i in candidates)
        mirror = any(torch.allclose(src[i].flip(-1), img, atol=1e-6) for i in candidates)
        assert same or mirror
        flipped += int(mirror and not same)
    return flipped
