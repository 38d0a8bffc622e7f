"""In-memory loader: determinism per (seed, epoch), DDP sharding, augmentation, built-in datasets."""

from __future__ import annotations

import pytest
import torch

from train.config import DataConfig
from train.data import TensorLoader, build_data
from train.data.augment import make_transform, random_crop, random_flip
from train.data.sharding import mix_seed, train_batches
from train.errors import BadInput


def identity(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x


def ids_loader(
    n: int, batch: int, *, train: bool, rank: int = 0, world: int = 1, seed: int = 5
) -> TensorLoader:
    """Images that are their own sample index, so batches can be traced back to samples."""
    ids = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    return TensorLoader(
        ids,
        torch.arange(n),
        batch,
        train=train,
        transform=identity,
        seed=seed,
        rank=rank,
        world=world,
    )


def ids(batches) -> list[list[int]]:
    return [x.flatten().long().tolist() for x, _ in batches]


def augmenting_loader(seed: int) -> TensorLoader:
    x = torch.randint(
        0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    tf = make_transform([0.5] * 3, [0.25] * 3, train=True, augment=True, padding=2, flip=True)
    return TensorLoader(x, torch.arange(40) % 4, 8, train=True, transform=tf, seed=seed)


def test_same_seed_and_epoch_give_the_same_batches_even_in_a_fresh_loader():
    first = list(augmenting_loader(3).batches(2))
    resumed = augmenting_loader(3)  # as after a resume: epochs 0 and 1 never iterated
    again = list(resumed.batches(2))
    assert len(first) == len(resumed) == 5
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_epochs_and_seeds_change_the_order():
    loader = ids_loader(64, 16, train=True)
    e0, e1 = ids(loader.batches(0)), ids(loader.batches(1))
    assert e0 != e1
    assert sorted(sum(e0, [])) == sorted(sum(e1, [])) == list(range(64))
    assert ids(ids_loader(64, 16, train=True, seed=6).batches(0)) != e0
    x0 = [x for x, _ in augmenting_loader(3).batches(0)]
    x1 = [x for x, _ in augmenting_loader(3).batches(1)]
    assert not all(torch.equal(a, b) for a, b in zip(x0, x1, strict=True))


def test_train_drops_the_last_partial_global_batch():
    loader = ids_loader(70, 16, train=True)
    assert len(loader) == 4 and loader.num_samples == 70
    assert [len(b) for b in ids(loader.batches(0))] == [16] * 4


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_partition_each_global_batch(world):
    n, batch = 100, 12
    single = ids(ids_loader(n, batch, train=True).batches(4))
    per_rank = [
        ids(ids_loader(n, batch, train=True, rank=r, world=world).batches(4)) for r in range(world)
    ]
    assert all(len(steps) == len(single) == n // batch for steps in per_rank)
    for step, whole in enumerate(single):
        parts = [per_rank[r][step] for r in range(world)]
        assert all(len(p) == batch // world for p in parts)
        assert sorted(sum(parts, [])) == sorted(whole)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_val_shards_cover_every_sample_once(world):
    n = 23
    seen = []
    for r in range(world):
        loader = ids_loader(n, 4, train=False, rank=r, world=world)
        got = ids(loader.batches(0))
        assert len(got) == len(loader)
        seen += sum(got, [])
    assert sorted(seen) == list(range(n))


def test_ranks_augment_differently():
    x = torch.full((8, 1, 6, 6), 200, dtype=torch.uint8)
    tf = make_transform([0.0], [1.0], train=True, augment=True, padding=2, flip=False)
    outs = [
        next(
            iter(
                TensorLoader(
                    x, torch.zeros(8), 8, train=True, transform=tf, rank=r, world=2
                ).batches(0)
            )
        )[0]
        for r in range(2)
    ]
    assert not torch.equal(outs[0], outs[1])


def test_random_crop_keeps_size_and_takes_a_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 2, 7, 9, generator=g)
    p = 2
    out = random_crop(x, p, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 7, dx : dx + 9])
        ]
        assert found, f"image {i} is no window of its padded input"
        offsets.add(found[0])
    assert len(offsets) > 5  # offsets really vary


def test_random_flip_is_a_mirror_or_nothing():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 4, 5, generator=g)
    out = random_flip(x, g)
    mirrored = 0
    for i in range(64):
        if torch.equal(out[i], x[i]):
            continue
        mirrored += 1
        for j in range(5):
            assert torch.equal(out[i, :, :, j], x[i, :, :, 4 - j])
    assert 16 < mirrored < 48


def test_transform_normalizes_uint8_and_resizes():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 4, 4)
    tf = make_transform([0.2], [0.5], train=False, augment=False)
    out = tf(x, torch.Generator())
    assert out.dtype == torch.float32
    assert out[:, 0, 0, 0].tolist() == pytest.approx([-0.4, 0.0, 1.6])
    big = make_transform([0.0], [1.0], train=False, augment=False, size=8)(x, torch.Generator())
    assert big.shape == (3, 1, 8, 8)


def test_digits():
    b = build_data(DataConfig(name="digits", batch_size=64, val_fraction=0.2), seed=0)
    assert (b.num_classes, b.input_shape) == (10, (1, 8, 8))
    assert b.train.num_samples == 1797 - 359 and b.val.num_samples == 359
    assert len(b.train) == (1797 - 359) // 64
    x, y = next(iter(b.train.batches(0)))
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.int64 and int(y.max()) <= 9


def test_digits_are_never_mirrored():
    cfg = DataConfig(name="digits", batch_size=64, crop_padding=0, flip=True)
    b = build_data(cfg, seed=0)
    plain = make_transform([0.3], [0.35], train=False, augment=False, size=8)
    x_aug = torch.cat([x for x, _ in b.train.batches(0)])
    n = len(x_aug)
    # with no crop and no flip, training batches are the normalized images in shuffled order
    order = torch.cat(train_batches(b.train.num_samples, 64, seed=0, epoch=0, rank=0, world=1))
    torch.testing.assert_close(x_aug, plain(b.train.images[order[:n]], torch.Generator()))


def test_synthetic_and_image_size():
    cfg = DataConfig(
        name="synthetic",
        num_train=96,
        num_val=40,
        num_classes=3,
        channels=2,
        image_size=12,
        batch_size=32,
    )
    b = build_data(cfg, seed=1)
    assert (b.num_classes, b.input_shape, len(b.train), len(b.val)) == (3, (2, 12, 12), 3, 1)
    x, y = next(iter(b.train.batches(0)))
    assert x.shape == (32, 2, 12, 12) and set(y.tolist()) <= {0, 1, 2}
    again = build_data(cfg, seed=1)
    assert torch.equal(
        again.train.images, b.train.images
    )  # the data does not depend on the run seed


def test_batch_size_errors():
    with pytest.raises(BadInput, match="data.batch_size: 10 does not divide over 4 processes"):
        build_data(DataConfig(name="synthetic", batch_size=10), seed=0, world=4)
    with pytest.raises(BadInput, match="larger than the training set"):
        build_data(DataConfig(name="synthetic", num_train=8, batch_size=16), seed=0)
    with pytest.raises(BadInput, match="dataset cifar10 needs data.root"):
        build_data(DataConfig(name="cifar10"), seed=0)


def test_seeds_are_pinned():
    """Epoch seeds must not change between versions, or a resumed run would see other batches."""
    assert mix_seed(0, 0) == 5809880761037817570
    assert mix_seed(3, 2, 1, 1) == 5363792425254898187
