"""ImageFolder data: the streaming loader (tested with a stand-in dataset) and torchvision's part."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from train.config import DataConfig
from train.data import build_data
from train.data.folder_loader import FolderLoader
from train.errors import BadInput

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


class NoisyIds:
    """Sample i is [i, u] with u drawn from torch's global RNG, like a random crop would."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(i), torch.rand(()).item()]), i % 3


def run(loader: FolderLoader, epoch: int) -> list[torch.Tensor]:
    return [x for x, _ in loader.batches(epoch)]


def test_same_epoch_same_batches_whatever_the_workers_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = run(FolderLoader(NoisyIds(), 8, train=True, seed=2, workers=0), 1)
    assert torch.equal(torch.get_rng_state(), state)
    b = run(FolderLoader(NoisyIds(), 8, train=True, seed=2, workers=2), 1)
    assert len(a) == 3 and all(x.shape == (8, 2) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = run(FolderLoader(NoisyIds(), 8, train=True, seed=2, workers=0), 2)
    assert [x[:, 0].tolist() for x in a] != [x[:, 0].tolist() for x in c]
    assert not torch.equal(a[0][:, 1], c[0][:, 1])


def test_labels_and_sharding():
    single = run(FolderLoader(NoisyIds(), 12, train=True, seed=0), 0)
    ranks = [
        run(FolderLoader(NoisyIds(), 12, train=True, seed=0, rank=r, world=3), 0) for r in range(3)
    ]
    assert len(single) == 2 and all(len(r) == 2 for r in ranks)
    for step, whole in enumerate(single):
        parts = torch.cat([r[step] for r in ranks])
        assert sorted(parts[:, 0].tolist()) == sorted(whole[:, 0].tolist())
        # the same sample in the same epoch gets the same augmentation on any rank
        assert sorted(parts[:, 1].tolist()) == sorted(whole[:, 1].tolist())
    x, y = next(iter(FolderLoader(NoisyIds(), 6, train=True).batches(0)))
    assert y.tolist() == [int(i) % 3 for i in x[:, 0].tolist()]


def test_val_shards_cover_every_sample_once():
    seen = []
    for r in range(4):
        loader = FolderLoader(NoisyIds(), 4, train=False, rank=r, world=4)
        batches = run(loader, 0)
        assert len(batches) == len(loader)
        seen += [int(v) for x in batches for v in x[:, 0].tolist()]
    assert sorted(seen) == list(range(30))


def test_missing_torchvision_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as when not installed
    with pytest.raises(BadInput) as e:
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)
    msg = str(e.value)
    assert "torchvision" in msg and "pip install 'chase-deploy[vision]'" in msg and "\n" not in msg


@pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision is not installed (pip install 'chase-deploy[vision]')"
)
def test_imagefolder_tree(tmp_path):
    from PIL import Image

    for split, n in (("train", 6), ("val", 2)):
        for cls, color in (("cat", 40), ("dog", 200)):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + i, 30), (color, i * 10, 0)).save(folder / f"{i}.png")
    cfg = DataConfig(
        name="imagefolder", root=str(tmp_path), image_size=16, batch_size=4, eval_batch_size=3
    )
    b = build_data(cfg, seed=0)
    assert (b.num_classes, b.input_shape, len(b.train), len(b.val)) == (2, (3, 16, 16), 3, 2)
    x, y = next(iter(b.train.batches(0)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    again = next(iter(build_data(cfg, seed=0).train.batches(0)))[0]
    assert torch.equal(x, again)
    vals = torch.cat([y for _, y in b.val.batches(0)])
    assert sorted(vals.tolist()) == [0, 0, 1, 1]
    (tmp_path / "val" / "dog" / "0.png").rename(tmp_path / "val" / "cat" / "x.png")
    (tmp_path / "val" / "dog" / "1.png").unlink()
    (tmp_path / "val" / "dog").rmdir()
    with pytest.raises(BadInput, match="different class folders"):
        build_data(cfg, seed=0)


@pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision is not installed (pip install 'chase-deploy[vision]')"
)
def test_imagefolder_missing_split(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(BadInput, match="expected an ImageFolder tree .*; missing .*val$"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(BadInput, match="train: no usable class folders of images"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)
