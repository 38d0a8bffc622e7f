"""Which channels go: the exact, floor- and width-rounding-aware selection shared by the Chase
controller and ``chase-deploy ablate``; ``Pool`` is the one entry point.

Selection walks the alive channels of all groups in ascending key (``train.channel_scores``;
ties: group order, then channel index), skips a group once it is at its floor, and stops at the
count. With ``round_to`` = A (the recipe's ``chase.align``, see ``train.rounding``) a group only
gives up whole chunks of A channels (the first chunk of a width that is not a multiple of A is
W mod A, bringing it onto a multiple); a chunk is reached when the walk reaches its last channel.
The count itself is rounded so the total alive lands on a multiple of A (see ``removal_count``),
so with widths that are multiples of A every event removes exactly the scheduled number. A chunk
that does not fit closes its group and the walk goes on (``_exact_walk`` retries with one taken
chunk skipped if it still ends short).

Grouped convs (ResNeXt, RegNet): a group whose channels a grouped conv reads or writes is split
into ``segments`` equal slices, one per conv group, and every slice must keep as many channels as
the others (so the conv keeps its ``groups``). ``select_units`` makes the r-th lowest-scoring alive
channel of every slice one unit that goes as a whole; floors and chunks are whole units, and the
event counts are rounded to ``grain``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from train.groups import ChannelGroup
from train.rounding import round_nearest, round_up

_EPS = 1e-9


@dataclass(frozen=True)
class Pool:
    """The groups channels are removed from: each one's width, conv-group ``segments`` and β
    floor, and the width rounding ``round_to``. ``count`` says how many channels an event at a
    target sparsity removes, ``select`` which."""

    widths: tuple[int, ...]
    segments: tuple[int, ...]
    floors: tuple[int, ...]
    round_to: int

    @classmethod
    def of(
        cls, groups: Sequence[ChannelGroup], sparsity: float, beta: float, round_to: int
    ) -> Pool:
        """The pool of ``groups`` whose floors are set by the final channel ``sparsity``."""
        return cls(
            tuple(g.width for g in groups),
            tuple(g.segments for g in groups),
            tuple(
                channel_floor(g.width, sparsity, beta, math.lcm(round_to, g.segments))
                for g in groups
            ),
            round_to,
        )

    @property
    def total(self) -> int:
        return sum(self.widths)

    def count(self, alive: int, target: float) -> int:
        """Channels to remove now, with ``alive`` of the ``total`` left, to reach ``target``."""
        return removal_count(alive, self.total, target, grain(self.round_to, self.segments))

    def select(
        self,
        keys: Tensor,
        alive: Sequence[Tensor],
        count: int,
        alive_counts: Sequence[int] | None = None,
    ) -> list[Tensor]:
        """Which alive channels to remove: per group a bool over its channels (True: remove).

        ``keys`` are every channel's prune-order keys, group-major (``GroupStats.keys``),
        ``alive`` each group's bool keep vector; ``alive_counts`` (their sums) saves a device
        sync where the caller keeps them."""
        flat = torch.cat(list(alive))
        device = flat.device
        widths = torch.tensor(self.widths, device=device)
        group = torch.repeat_interleave(torch.arange(len(self.widths), device=device), widths)
        starts = widths.cumsum(0) - widths
        candidates = flat.nonzero().squeeze(1)
        counts = alive_counts if alive_counts is not None else [int(a.sum()) for a in alive]
        chosen = select_units(
            keys[candidates],
            candidates - starts[group[candidates]],
            group[candidates],
            self.widths,
            self.segments,
            counts,
            self.floors,
            self.round_to,
            count,
        )
        dead = torch.zeros_like(flat)
        dead[candidates[chosen]] = True
        return list(torch.split(dead, list(self.widths)))


def channel_floor(width: int, channel_sparsity: float, beta: float, round_to: int) -> int:
    """β floor max(1, floor((1 − S_c)·β·width)), raised to a multiple of ``round_to``, ≤ width."""
    floor = max(1, math.floor((1.0 - channel_sparsity) * beta * width + _EPS))
    return min(width, round_up(floor, round_to))


def grain(round_to: int, segments: Sequence[int]) -> int:
    """The step every group's width moves by, common to all groups: each group loses whole
    chunks of lcm(round_to, its segments) channels, so the total kept is rounded to the gcd of
    those (``round_to`` itself when no grouped conv splits a group)."""
    if not segments:
        return round_to
    return math.gcd(*(math.lcm(round_to, s) for s in segments))


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
    round_to: int | Sequence[int],
    count: int,
    unit: Sequence[int] | None = None,
) -> Tensor:
    """Which of the candidate channels to remove (bool, same order as ``keys``).

    ``keys``/``group`` list every alive channel, grouped (group-major, channel index ascending
    within a group); ``alive``/``floors`` are per group; ``round_to`` is one chunk size or one per
    group. Exact and deterministic: rank channels inside their group by key, cut each group into
    chunks, order the chunks by the key of their last channel and take the eligible ones while
    the total fits. When a chunk does not fit, its group is closed and the walk goes on with the
    others; if it still ends short of the count (chunks of several sizes), it is retried with
    one taken chunk skipped, latest first (``_exact_walk``). With equal chunk sizes this
    is the plain prefix of the walk. With ``unit`` an element stands for
    ``unit[g]`` channels of its group (``select_units``): sizes and ``count`` are in channels,
    ``alive``, ``floors`` and ``round_to`` in elements.
    """
    n, device = keys.numel(), keys.device
    if n == 0 or count <= 0:
        return torch.zeros(n, dtype=torch.bool, device=device)
    alive_t = torch.tensor(alive, dtype=torch.long, device=device)
    floor_t = torch.tensor(floors, dtype=torch.long, device=device)
    if isinstance(round_to, int):
        rt = torch.full_like(alive_t, round_to)
    else:
        rt = torch.tensor(list(round_to), dtype=torch.long, device=device)
    unit_t = torch.ones_like(alive_t) if unit is None else torch.tensor(list(unit), device=device)
    # Rank inside the group: stable sort by key, then stable sort by group.
    by_key = torch.argsort(keys, stable=True)
    perm = by_key[torch.argsort(group[by_key], stable=True)]  # group-major, ascending key inside
    starts = torch.cumsum(alive_t, 0) - alive_t
    rank = torch.empty(n, dtype=torch.long, device=device)
    rank[perm] = torch.arange(n, device=device) - starts[group[perm]]
    # Chunks: ids j = (rank + offset) // round_to; taking chunks 0..j leaves alive − end(j) channels.
    offset = (rt - alive_t % rt) % rt
    r = rt[group]
    chunk = (rank + offset[group]) // r
    end = torch.minimum((chunk + 1) * r - offset[group], alive_t[group])
    begin = (chunk * r - offset[group]).clamp(min=0)
    last = rank + 1 == end
    eligible = alive_t[group] - end >= floor_t[group]
    # Chunks in walk order: represented by their last channel, ordered by (key, group, chunk id).
    reps = perm[last[perm]]
    reps = reps[torch.argsort(keys[reps], stable=True)]
    size = (end - begin)[reps] * eligible[reps] * unit_t[group[reps]]
    fits = (torch.cumsum(size, 0) <= count) & eligible[reps]
    taken_reps = reps[fits]
    blocked = (~fits & eligible[reps]).nonzero()
    if len(blocked) and int(size[fits].sum()) < count:
        walked = _exact_walk(size.tolist(), eligible[reps].tolist(), group[reps].tolist(), count)
        taken_reps = reps[torch.tensor(walked, dtype=torch.long, device=device)]
    # Expand chunks to channels.
    n_chunks = int(chunk.max()) + 1
    table = torch.zeros(len(alive) * n_chunks, dtype=torch.bool, device=device)
    table[group[taken_reps] * n_chunks + chunk[taken_reps]] = True
    return table[group * n_chunks + chunk]


BACKTRACK = 64  # retries when the walk ends short of the count (chunks of several sizes)


def _walk(sizes: list[int], ok: list[bool], groups: list[int], count: int, skip: int = -1):
    """The walk over chunks in order: take a chunk while it fits; one that does not fit (or
    ``skip``) closes its group. Returns (taken chunk positions, channels taken)."""
    taken, closed, total = [], set(), 0
    for i, (size, good, g) in enumerate(zip(sizes, ok, groups, strict=True)):
        if total >= count:
            break
        if not good or g in closed:
            continue
        if i == skip or total + size > count:
            closed.add(g)
            continue
        taken.append(i)
        total += size
    return taken, total


def _exact_walk(sizes: list[int], ok: list[bool], groups: list[int], count: int) -> list[int]:
    """``_walk``; if it ends short of ``count`` (chunks of several sizes), retry with one of
    its chunks skipped (closing that chunk's group there), latest first, at most ``BACKTRACK``
    times, and keep the first walk that lands exactly, else the first one."""
    first, total = _walk(sizes, ok, groups, count)
    if total == count:
        return first
    tries = list(reversed(first))[:BACKTRACK]
    for skip in tries:
        taken, total = _walk(sizes, ok, groups, count, skip)
        if total == count:
            return taken
    return first


def select_units(
    keys: Tensor,
    channel: Tensor,
    group: Tensor,
    widths: Sequence[int],
    segments: Sequence[int],
    alive: Sequence[int],
    floors: Sequence[int],
    round_to: int,
    count: int,
) -> Tensor:
    """``select_channels`` where a group's channels split into ``segments[g]`` equal slices (a
    grouped conv reads or writes them) and every slice must lose as many as the others.

    Within each slice the alive channels are ranked by key; the r-th of every slice form unit r,
    whose key is the largest of theirs (it is reached when the walk has reached all of them).
    Units are selected like channels, ``segments[g]`` channels each; floors and ``round_to`` are
    rounded to whole units. Without segments this is ``select_channels``. ``channel`` holds each
    candidate's index within its group."""
    if all(s == 1 for s in segments):
        return select_channels(keys, group, alive, floors, round_to, count)
    device = keys.device
    unit_keys, unit_group, unit_of = [], [], torch.empty_like(group)
    offsets = torch.cumsum(torch.tensor([0, *alive[:-1]]), 0).tolist()
    unit_alive, unit_floor, unit_round = [], [], []
    base = 0
    for g, (width, s) in enumerate(zip(widths, segments, strict=True)):
        idx = torch.arange(offsets[g], offsets[g] + alive[g], device=device)
        if s == 1:
            unit_keys.append(keys[idx])
            unit_of[idx] = base + torch.arange(len(idx), device=device)
        else:
            seg = channel[idx] // (width // s)
            per = alive[g] // s
            order = torch.argsort(keys[idx], stable=True)
            order = order[torch.argsort(seg[order], stable=True)]  # slice-major, key-ascending
            ranks = torch.empty_like(order)
            ranks[order] = torch.arange(len(idx), device=device) % per
            grid = keys[idx][order].view(s, per)
            unit_keys.append(grid.max(dim=0).values)
            unit_of[idx] = base + ranks
        count_g = len(unit_keys[-1])
        unit_group.append(torch.full((count_g,), g, dtype=torch.long, device=device))
        step = math.lcm(round_to, s) // s
        unit_alive.append(count_g)
        unit_floor.append(min(count_g, round_up(math.ceil(floors[g] / s), step)))
        unit_round.append(step)
        base += count_g
    chosen_units = select_channels(
        torch.cat(unit_keys),
        torch.cat(unit_group),
        unit_alive,
        unit_floor,
        unit_round,
        count,
        unit=list(segments),
    )
    return chosen_units[unit_of]
