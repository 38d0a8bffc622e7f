"""CIFAR python batches: layouts, validation, and the restricted unpickler."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import DataConfig
from train.data import build_data
from train.data.cifar import CIFAR10, CIFAR100, load_cifar
from train.errors import BadInput

RECONSTRUCT = np.zeros(1).__reduce__()[0]


class Py2StylePickler(pickle.Pickler):
    """Writes arrays the way Python 2's cPickle did in the original archives (data as a str)."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin-1"))
            return (RECONSTRUCT, (np.ndarray, (0,), "b"), state)
        return NotImplemented


def dump(path: Path, obj, style: str = "py2") -> None:
    if style == "py2":
        buf = io.BytesIO()
        Py2StylePickler(buf, protocol=2).dump(obj)
        # the original files name numpy 1's module
        data = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    else:
        data = pickle.dumps(obj, protocol=int(style))
    path.write_bytes(data)


def fake_images(n: int, offset: int) -> np.ndarray:
    return ((np.arange(n * 3072).reshape(n, 3072) * 7 + offset) % 256).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 4, style: str = "py2") -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        labels = [(i + k) % 10 for k in range(per_batch)]
        batch = {
            "batch_label": "training batch",
            "labels": labels,
            "data": fake_images(per_batch, i),
        }
        dump(folder / f"data_batch_{i}", batch, style)
    dump(folder / "test_batch", {"labels": [9, 0, 1], "data": fake_images(3, 100)}, style)
    dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}, style)
    return folder


def write_cifar100(root: Path, style: str = "py2") -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    dump(folder / "train", {"fine_labels": [99, 0, 5, 42, 7, 1], "coarse_labels": [1] * 6,
                            "data": fake_images(6, 3)}, style)  # fmt: skip
    dump(
        folder / "test",
        {"fine_labels": [3, 98], "coarse_labels": [0, 0], "data": fake_images(2, 9)},
        style,
    )
    dump(folder / "meta", {"fine_label_names": [str(i) for i in range(100)]}, style)
    return folder


@pytest.mark.parametrize("style", ["py2", "2", "4", "5"])
def test_cifar10_reads_every_batch_in_channel_major_order(tmp_path, style):
    write_cifar10(tmp_path, style=style)
    s = load_cifar("cifar10", tmp_path)
    assert s.train_x.shape == (20, 3, 32, 32) and s.train_x.dtype == torch.uint8
    assert s.val_x.shape == (3, 3, 32, 32)
    assert s.train_y.tolist() == [(i + k) % 10 for i in range(1, 6) for k in range(4)]
    assert s.val_y.tolist() == [9, 0, 1] and s.num_classes == 10
    rows = fake_images(4, 2)  # data_batch_2 = images 4..7
    assert torch.equal(s.train_x[5, 1, 3, 7], torch.tensor(rows[1, 1024 + 3 * 32 + 7]))
    assert torch.equal(s.train_x[4:8], torch.from_numpy(rows.reshape(4, 3, 32, 32)))


def test_cifar100_fine_labels_and_root_may_be_the_folder_itself(tmp_path):
    folder = write_cifar100(tmp_path)
    for root in (tmp_path, folder):
        s = load_cifar("cifar100", root)
        assert s.train_y.tolist() == [99, 0, 5, 42, 7, 1] and s.val_y.tolist() == [3, 98]
        assert s.num_classes == 100 and s.train_x.shape == (6, 3, 32, 32)
        assert s.mean == CIFAR100.mean


def test_build_data_cifar10_normalizes_and_crops(tmp_path):
    write_cifar10(tmp_path)
    cfg = DataConfig(name="cifar10", root=str(tmp_path), batch_size=8, eval_batch_size=2)
    b = build_data(cfg, seed=0)
    assert (b.num_classes, b.input_shape, len(b.train), len(b.val)) == (10, (3, 32, 32), 2, 2)
    xs = [x for x, _ in b.train.batches(0)]
    assert all(x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 for x in xs)
    vx, vy = next(iter(b.val.batches(0)))
    raw = torch.from_numpy(fake_images(3, 100).reshape(3, 3, 32, 32))[:2].float() / 255
    mean, std = (
        torch.tensor(CIFAR10.mean).view(1, 3, 1, 1),
        torch.tensor(CIFAR10.std).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(vx, (raw - mean) / std)
    assert vy.tolist() == [9, 0]


def test_missing_batch_names_the_file_and_the_expected_layout(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(BadInput) as e:
        load_cifar("cifar10", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg
    assert "data_batch_1..5 and test_batch" in msg and "'python version'" in msg
    assert msg.endswith("missing data_batch_3")


def test_missing_root_and_wrong_dataset(tmp_path):
    with pytest.raises(BadInput, match="no such directory; expected CIFAR-10"):
        load_cifar("cifar10", tmp_path / "nope")
    write_cifar10(tmp_path)
    with pytest.raises(BadInput, match="missing train, test"):
        load_cifar("cifar100", tmp_path)


def test_malformed_batches_are_bad_input(tmp_path):
    folder = write_cifar10(tmp_path)
    good = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(BadInput, match="not a readable pickle.*truncated"):
        load_cifar("cifar10", tmp_path)
    dump(folder / "test_batch", {"labels": [1, 2], "data": fake_images(3, 0)})
    with pytest.raises(BadInput, match="3 images but 2 labels"):
        load_cifar("cifar10", tmp_path)
    dump(folder / "test_batch", {"labels": [1, 10, 2], "data": fake_images(3, 0)})
    with pytest.raises(BadInput, match=r"labels out of range \[0, 10\)"):
        load_cifar("cifar10", tmp_path)
    dump(folder / "test_batch", {"labels": [1], "data": np.zeros((1, 100), np.uint8)})
    with pytest.raises(BadInput, match="uint8 rows of 3072 pixels"):
        load_cifar("cifar10", tmp_path)
    dump(folder / "test_batch", [1, 2, 3])
    with pytest.raises(BadInput, match="expected a pickled dict"):
        load_cifar("cifar10", tmp_path)


class Payload:
    """Creates a directory when unpickled by an unrestricted loader."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_without_running(tmp_path, protocol):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {"labels": [0], "data": fake_images(1, 0), "x": Payload(marker)}
    data = pickle.dumps(evil, protocol=protocol)
    (folder / "data_batch_1").write_bytes(data)
    with pytest.raises(
        BadInput, match=r"refused to unpickle \(global posix\.mkdir is not allowed\)"
    ):
        load_cifar("cifar10", tmp_path)
    assert not marker.exists()
    pickle.loads(data)  # the payload is live: an ordinary unpickler runs it
    assert marker.is_dir()


def test_codecs_encode_only_for_latin1(tmp_path):
    folder = write_cifar10(tmp_path)
    text = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    (folder / "test_batch").write_bytes(text)
    with pytest.raises(BadInput, match="refused to unpickle.*'rot13' is not allowed"):
        load_cifar("cifar10", tmp_path)
