"""A loader for data too big for memory: a torch DataLoader fed a seeded, rank-sharded order.

Same interface as ``TensorLoader``. The order comes from ``sharding``; each sample is decoded and
augmented under a private torch RNG seeded by (seed, epoch, sample index), so the batches of an
epoch are the same whatever the number of workers and a resume at an epoch boundary is exact.
The global RNG of the training process is left untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from train.data.sharding import mix_seed, train_batches, train_steps, val_batches, val_steps

GOLDEN = 0x9E3779B97F4A7C15  # spreads consecutive sample indices over the seed space
SEED_MASK = (1 << 63) - 1
WORKER_STREAM = 2


class SeededSamples(Dataset):
    """Item ``(index, sample_seed)`` is ``base[index]`` computed with torch's RNG seeded by ``sample_seed``."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, sample_seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.base[index]


class FolderLoader:
    """Batches of (images, labels) from a map-style dataset returning ``(tensor, int)`` pairs.

    ``batch_size`` is global for training (each rank takes ``batch_size // world``) and per rank
    for evaluation, as in ``TensorLoader``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if batch_size % world and train:
            raise ValueError(f"batch size {batch_size} does not divide over {world} processes")
        self.samples = SeededSamples(dataset)
        self.train = train
        self.batch_size = batch_size // world if train else batch_size
        self.seed, self.rank, self.world = seed, rank, world
        self.workers, self.pin_memory = workers, pin_memory

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def __len__(self) -> int:
        if self.train:
            return train_steps(self.num_samples, self.batch_size, self.world)
        return val_steps(self.num_samples, self.batch_size, rank=self.rank, world=self.world)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            self.samples,
            batch_sampler=self.plan(epoch),
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            # DataLoader draws its worker base seed from this, not from the global RNG
            generator=torch.Generator().manual_seed(
                mix_seed(self.seed, epoch, self.rank, WORKER_STREAM)
            ),
        )
        yield from loader

    def plan(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of ``(sample index, sample seed)`` for ``epoch``."""
        n, b = self.num_samples, self.batch_size
        if self.train:
            batches = train_batches(
                n, b, seed=self.seed, epoch=epoch, rank=self.rank, world=self.world
            )
        else:
            batches = val_batches(n, b, rank=self.rank, world=self.world)
        base = mix_seed(self.seed, epoch)
        return [[(i, (base + i * GOLDEN) & SEED_MASK) for i in idx.tolist()] for idx in batches]
