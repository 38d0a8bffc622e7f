"""In-memory batch loader: deterministic per (seed, epoch), sharded across DDP ranks.

The order comes from ``sharding`` (seed, epoch); the augmentation from a generator seeded by
(seed, epoch, rank), so a run resumed at an epoch boundary sees exactly the batches of an
uninterrupted run with the same number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from train.data.sharding import mix_seed, train_batches, train_steps, val_batches, val_steps

Augment = Callable[[Tensor, torch.Generator], Tensor]

AUGMENT_STREAM = 1  # keeps the augmentation generator apart from the order generator


class BatchLoader(Protocol):
    """What the training loop uses: ``len()`` steps per epoch and ``batches(epoch)``."""

    batch_size: int

    @property
    def num_samples(self) -> int: ...

    def __len__(self) -> int: ...

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]: ...


class TensorLoader:
    """Batches of (images, labels) from tensors held in memory.

    ``images`` are uint8 (N, C, H, W) or float; ``transform`` turns a uint8/float batch into the
    normalized float batch the model sees (augmenting when training). ``batch_size`` is global for
    training (each rank takes ``batch_size // world``) and per rank for evaluation.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        train: bool,
        transform: Augment,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if batch_size % world and train:
            raise ValueError(f"batch size {batch_size} does not divide over {world} processes")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.train = train
        self.batch_size = batch_size // world if train else batch_size
        self.transform = transform
        self.seed, self.rank, self.world = seed, rank, world

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        if self.train:
            return train_steps(self.num_samples, self.batch_size, self.world)
        return val_steps(self.num_samples, self.batch_size, rank=self.rank, world=self.world)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, self.rank, AUGMENT_STREAM))
        for idx in self._plan(epoch):
            yield self.transform(self.images[idx], g), self.labels[idx]

    def _plan(self, epoch: int) -> list[Tensor]:
        n, b = self.num_samples, self.batch_size
        if self.train:
            return train_batches(
                n, b, seed=self.seed, epoch=epoch, rank=self.rank, world=self.world
            )
        return val_batches(n, b, rank=self.rank, world=self.world)
