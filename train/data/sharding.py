"""Which sample indices each DDP rank sees in an epoch, from (seed, epoch) alone.

Every loader (in memory or streamed from disk) takes its order from here, so an epoch's batches
depend only on the seed, the epoch number, the rank and the world size: a run resumed at an epoch
boundary sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers; stable across processes, platforms and Python versions."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(int(p).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") >> 1


def train_steps(n: int, per_rank: int, world: int) -> int:
    """Full global batches per epoch (drop-last), so every rank takes the same number of steps."""
    return n // (per_rank * world)


def train_batches(
    n: int, per_rank: int, *, seed: int, epoch: int, rank: int, world: int
) -> list[Tensor]:
    """This rank's index batches: a seeded permutation cut into global batches, each split by rank.

    The ranks' batches at one step partition the global batch of that step.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
    per_step = per_rank * world
    return [
        order[s * per_step : (s + 1) * per_step][rank::world]
        for s in range(train_steps(n, per_rank, world))
    ]


def val_batches(n: int, batch_size: int, *, rank: int, world: int) -> list[Tensor]:
    """Every sample exactly once over all ranks (rank r takes r, r+world, ...), in order."""
    return list(torch.arange(rank, n, world).split(batch_size))


def val_steps(n: int, batch_size: int, *, rank: int, world: int) -> int:
    shard = len(range(rank, n, world))
    return -(-shard // batch_size)
