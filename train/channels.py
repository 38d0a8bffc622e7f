"""Gradual amenable channel pruning: channel scores, exact selection, removal, the channel plan.

Scores (per alive output channel c of a group, W = the producer's masked weight, fan = the
original fan-in times kernel area, so removed input columns still count as zeros):

- UMM = Σ|W[c]| / fan           (lowest goes first)
- WS  = fraction of zeros in W[c] (highest goes first)
- MMM = Σ|W[c]| / (non-zeros of W[c]), 0 for an empty channel (lowest goes first)
- random: uniform from the controller's seeded generator (same on every rank)
- ``*_reverse``: the opposite order (for the paper's Table 2 ablation).

A residual-stream group (``prune_skip``) has several producers writing one index space; its channel
c is scored as if the producers' rows c were one filter: Σ|W| and the zero count are summed over all
producers and divided by the summed fan (so a producer's weight counts in proportion to its size).

Selection walks the alive channels of all groups in ascending key (ties: group order, then channel
index), skips a group once it is at its floor, and stops at the count. With ``align`` = A a group
only gives up whole chunks of A channels (the first chunk of a width that is not a multiple of A is
W mod A, bringing it onto a multiple); a chunk is reached when the walk reaches its last channel.
The count itself is rounded so the total alive lands on a multiple of A (see ``removal_count``),
so with widths that are multiples of A every event removes exactly the scheduled number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from train.density import round_half_up

PLAN_FORMAT = "chase-channel-plan"
PLAN_VERSION = 1
_EPS = 1e-9


def channel_stats(weights: Sequence[Tensor]) -> tuple[Tensor, Tensor, int]:
    """(Σ|W[c]|, non-zero count of W[c], fan) over the producers' rows c of one group."""
    abs_sum = sum(w.detach().abs().flatten(1).sum(1, dtype=torch.float64) for w in weights)
    nonzero = sum((w.detach() != 0).flatten(1).sum(1) for w in weights)
    fan = sum(w[0].numel() for w in weights)
    return abs_sum, nonzero, fan


def prune_keys(
    abs_sum: Tensor, nonzero: Tensor, fan: Tensor, criterion: str, generator: torch.Generator
) -> Tensor:
    """Per-channel keys where ascending order is pruning order (float64)."""
    umm = abs_sum / fan
    ws = 1.0 - nonzero.double() / fan
    mmm = abs_sum / nonzero.clamp(min=1).double()
    keys = {
        "umm": umm,
        "ws": -ws,
        "mmm": mmm,
        "umm_reverse": -umm,
        "ws_reverse": ws,
        "mmm_reverse": -mmm,
    }
    if criterion == "random":
        return torch.rand(abs_sum.numel(), generator=generator, dtype=torch.float64).to(
            abs_sum.device
        )
    if criterion not in keys:
        raise ValueError(f"unknown channel criterion {criterion!r}")
    return keys[criterion]


def channel_floor(width: int, channel_sparsity: float, beta: float, align: int) -> int:
    """β floor max(1, floor((1 − S_c)·β·width)), raised to a multiple of ``align``, ≤ width."""
    floor = max(1, math.floor((1.0 - channel_sparsity) * beta * width + _EPS))
    return min(width, math.ceil(floor / align) * align)


def removal_count(alive: int, base: int, target: float, align: int) -> int:
    """Channels to remove now: alive − round(base·(1 − S)), the kept total rounded to a multiple of A."""
    keep = align * round_half_up(base * (1.0 - target) / align)
    return max(0, alive - keep)


def select_channels(
    keys: Tensor,
    group: Tensor,
    alive: Sequence[int],
    floors: Sequence[int],
    align: int,
    count: int,
) -> Tensor:
    """Which of the candidate channels to remove (bool, same order as ``keys``).

    ``keys``/``group`` list every alive channel, grouped (group-major, channel index ascending
    within a group); ``alive``/``floors`` are per group. Exact and deterministic, no Python loop
    over channels: rank channels inside their group by key, cut each group into chunks, order the
    chunks by the key of their last channel and take the eligible ones while the total fits.
    """
    n, device = keys.numel(), keys.device
    if n == 0 or count <= 0:
        return torch.zeros(n, dtype=torch.bool, device=device)
    alive_t = torch.tensor(alive, dtype=torch.long, device=device)
    floor_t = torch.tensor(floors, dtype=torch.long, device=device)
    # Rank inside the group: stable sort by key, then stable sort by group.
    by_key = torch.argsort(keys, stable=True)
    perm = by_key[torch.argsort(group[by_key], stable=True)]  # group-major, ascending key inside
    starts = torch.cumsum(alive_t, 0) - alive_t
    rank = torch.empty(n, dtype=torch.long, device=device)
    rank[perm] = torch.arange(n, device=device) - starts[group[perm]]
    # Chunks: ids j = (rank + offset) // A; taking chunks 0..j leaves alive − end(j) channels.
    offset = (align - alive_t % align) % align
    chunk = (rank + offset[group]) // align
    end = torch.minimum((chunk + 1) * align - offset[group], alive_t[group])
    begin = (chunk * align - offset[group]).clamp(min=0)
    last = rank + 1 == end
    eligible = alive_t[group] - end >= floor_t[group]
    # Chunks in walk order: represented by their last channel, ordered by (key, group, chunk id).
    reps = perm[last[perm]]
    reps = reps[torch.argsort(keys[reps], stable=True)]
    size = (end - begin)[reps] * eligible[reps]
    taken_reps = reps[(torch.cumsum(size, 0) <= count) & eligible[reps]]
    # Expand chunks to channels.
    n_chunks = int(chunk.max()) + 1
    table = torch.zeros(len(alive) * n_chunks, dtype=torch.bool, device=device)
    table[group[taken_reps] * n_chunks + chunk[taken_reps]] = True
    return table[group * n_chunks + chunk]


def channel_plan(groups: Sequence[tuple[Sequence[str], int]], alive: Sequence[Tensor]) -> dict:
    """The DESIGN.md channel plan: kept indices of every producer of a group that lost channels.

    ``groups`` holds (producer module names, width) per group, ``alive`` its bool keep vector.
    """
    layers: dict[str, dict] = {}
    for (producers, width), keep in zip(groups, alive, strict=True):
        kept = keep.nonzero().squeeze(1).tolist()
        if len(kept) == width:
            continue
        for name in producers:
            layers[name] = {"out_channels": width, "kept": kept}
    return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "layers": layers}
