"""Channel pruning, once for every caller: scores, exact selection, and what removing a channel
touches. The Chase controller (gradually, during training) and ``chase-deploy ablate`` (once, on
final weights) both call these functions.

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
index), skips a group once it is at its floor, and stops at the count. With ``round_to`` = A
(the recipe's ``chase.align``, see ``train.rounding``) a group only gives up whole chunks of A
channels (the first chunk of a width that is not a multiple of A is W mod A, bringing it onto a
multiple); a chunk is reached when the walk reaches its last channel. The count itself is rounded
so the total alive lands on a multiple of A (see ``removal_count``), so with widths that are
multiples of A every event removes exactly the scheduled number.

Removing channel c of a group touches the producers' weight rows c and bias entries c and every
consumer's weight column c (``removed_entries``); the controller masks those entries, ablate zeroes
them, which is what physically slimming the channel computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from train.rounding import round_nearest, round_up

_EPS = 1e-9


def channel_stats(weights: Sequence[Tensor]) -> tuple[Tensor, Tensor, int]:
    """(Σ|W[c]|, non-zero count of W[c], fan) over the producers' rows c of one group."""
    abs_sum = sum(w.detach().abs().flatten(1).sum(1, dtype=torch.float64) for w in weights)
    nonzero = sum((w.detach() != 0).flatten(1).sum(1) for w in weights)
    fan = sum(w[0].numel() for w in weights)
    return abs_sum, nonzero, fan


@dataclass(frozen=True)
class GroupStats:
    """``channel_stats`` of every channel of several groups, concatenated group-major."""

    abs_sum: Tensor  # float64
    nonzero: Tensor
    fan: Tensor  # float64, the group's fan repeated per channel
    group: Tensor  # long, the group index of each channel

    @classmethod
    def of(cls, producer_weights: Sequence[Sequence[Tensor]]) -> GroupStats:
        """Scores of each group given its producers' weights (rows = output channels)."""
        sums, nonzeros, fans, ids = [], [], [], []
        for gi, weights in enumerate(producer_weights):
            abs_sum, nonzero, fan = channel_stats(weights)
            width, device = abs_sum.numel(), abs_sum.device
            sums.append(abs_sum)
            nonzeros.append(nonzero)
            fans.append(torch.full((width,), float(fan), dtype=torch.float64, device=device))
            ids.append(torch.full((width,), gi, dtype=torch.long, device=device))
        return cls(torch.cat(sums), torch.cat(nonzeros), torch.cat(fans), torch.cat(ids))

    def keys(self, criterion: str, generator: torch.Generator) -> Tensor:
        """Pruning order of every channel by ``criterion`` (ascending goes first)."""
        return prune_keys(self.abs_sum, self.nonzero, self.fan, criterion, generator)


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


def channel_floor(width: int, channel_sparsity: float, beta: float, round_to: int) -> int:
    """β floor max(1, floor((1 − S_c)·β·width)), raised to a multiple of ``round_to``, ≤ width."""
    floor = max(1, math.floor((1.0 - channel_sparsity) * beta * width + _EPS))
    return min(width, round_up(floor, round_to))


def removal_count(alive: int, base: int, target: float, round_to: int) -> int:
    """Channels to remove now: alive − round(base·(1 − S)), the kept total rounded to a multiple
    of ``round_to``."""
    keep = round_nearest(base * (1.0 - target), round_to)
    return max(0, alive - keep)


def select_channels(
    keys: Tensor,
    group: Tensor,
    alive: Sequence[int],
    floors: Sequence[int],
    round_to: int,
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
    # Chunks: ids j = (rank + offset) // round_to; taking chunks 0..j leaves alive − end(j) channels.
    offset = (round_to - alive_t % round_to) % round_to
    chunk = (rank + offset[group]) // round_to
    end = torch.minimum((chunk + 1) * round_to - offset[group], alive_t[group])
    begin = (chunk * round_to - offset[group]).clamp(min=0)
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


def removed_entries(
    modules: Mapping[str, nn.Module],
    producers: Sequence[str],
    consumers: Sequence[str],
    dead: Tensor,
) -> Iterator[tuple[str, tuple]]:
    """(parameter name, index) of every entry the ``dead`` channels occupy: the producers' weight
    rows and bias entries, the consumers' weight columns."""
    for name in producers:
        yield f"{name}.weight", (dead,)
        if getattr(modules[name], "bias", None) is not None:
            yield f"{name}.bias", (dead,)
    for name in consumers:
        yield f"{name}.weight", (slice(None), dead)
