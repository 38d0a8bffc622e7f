"""In-memory batch loader: deterministic per (seed, epoch), sharded across DDP ranks.

The order and the augmentation of an epoch depend only on the seed and the epoch number, so a run
resumed at an epoch boundary sees exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator], Tensor]


class TensorLoader:
    """Batches of (images, labels) from tensors held in memory.

    ``images`` are uint8 (N, C, H, W) or float; ``transform`` turns a uint8/float batch into the
    normalized float batch the model sees (augmenting when training).
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
        self.images, self.labels = images, labels
        self.train = train
        self.batch_size = batch_size // world if train else batch_size
        self.transform = transform
        self.seed, self.rank, self.world = seed, rank, world

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        n = len(self.labels)
        if self.train:  # drop_last over the global batch, so every rank takes the same steps
            return n // (self.batch_size * self.world)
        shard = len(range(self.rank, n, self.world))
        return -(-shard // self.batch_size)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.train:
            order = torch.randperm(len(self.labels), generator=g)
            per_step = self.batch_size * self.world
            for step in range(len(self)):
                idx = order[step * per_step : (step + 1) * per_step][self.rank :: self.world]
                yield self.transform(self.images[idx], g), self.labels[idx]
        else:
            idx_all = torch.arange(self.rank, len(self.labels), self.world)
            for start in range(0, len(idx_all), self.batch_size):
                idx = idx_all[start : start + self.batch_size]
                yield self.transform(self.images[idx], g), self.labels[idx]
