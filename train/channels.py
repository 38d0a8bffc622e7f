"""Channel pruning, once for every caller: scores, exact selection, and what removing a channel
touches. The Chase controller (gradually, during training) and ``chase-deploy ablate`` (once, on
final weights) both call these functions.

Scores (per alive output channel c of a group, W = the producer's masked weight, fan = the
original fan-in times kernel area, so removed input columns still count as zeros):

- UMM = Σ|W[c]| / fan           (lowest goes first)
- WS  = fraction of zeros in W[c] (highest goes first)
- MMM = Σ|W[c]| / (non-zeros of W[c]), 0 for an empty channel (lowest goes first)
- random: uniform from the controller's seeded generator (same on every rank)
- slimming (Network Slimming, Liu et al. 2017; ``ablate`` only) = Σ|γ| of the norm layers that
  carry the channel (lowest goes first)
- ``*_reverse``: the opposite order (for the paper's Table 2 ablation).

A group with several producers (a residual stream with ``prune_skip``, a squeeze-excitation gate
and the channels it gates) writes one index space; its channel c is scored as if the producers'
rows c were one filter: Σ|W| and the zero count are summed over all producers and divided by the
summed fan (so a producer's weight counts in proportion to its size).

Selection walks the alive channels of all groups in ascending key (ties: group order, then channel
index), skips a group once it is at its floor, and stops at the count. With ``round_to`` = A
(the recipe's ``chase.align``, see ``train.rounding``) a group only gives up whole chunks of A
channels (the first chunk of a width that is not a multiple of A is W mod A, bringing it onto a
multiple); a chunk is reached when the walk reaches its last channel. The count itself is rounded
so the total alive lands on a multiple of A (see ``removal_count``), so with widths that are
multiples of A every event removes exactly the scheduled number. A chunk that does not fit closes
its group and the walk goes on (``_exact_walk`` retries with one taken chunk skipped if it still
ends short).

Grouped convs (ResNeXt, RegNet): a group whose channels a grouped conv reads or writes is split
into ``segments`` equal slices, one per conv group, and every slice must keep as many channels as
the others (so the conv keeps its ``groups``). ``select_units`` makes the r-th lowest-scoring alive
channel of every slice one unit that goes as a whole; floors and chunks are whole units, and the
event counts are rounded to ``grain``.

What removing channel c touches is the group's members (``train.groups``): the producers' weight
rows and biases, depthwise filters and biases that carry the channel, every consumer's weight
columns, through concat offsets, flatten blocks and grouped-conv slices (``ChannelLayout``). The
controller masks those entries, ablate zeroes them (``train.slicing.zero_removed``), which is what
physically slimming the channel computes (``train.slicing.slice_model``, ``slim``); norms and
per-channel tensors stay as they are in the masked model (the zero consumer columns make them
harmless) and are cut by the slicers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from train.channel_axes import CONV_TRANSPOSE, channel_axes, grouped_mask, weight_channels
from train.groups import ChannelGroup, ChannelMap, Member
from train.masks import MASKABLE
from train.rounding import round_nearest, round_up

_EPS = 1e-9


def channel_stats(weights: Sequence[Tensor]) -> tuple[Tensor, Tensor, int]:
    """(Σ|W[c]|, non-zero count of W[c], fan) over the producers' rows c of one group."""
    abs_sum = sum(w.detach().abs().flatten(1).sum(1, dtype=torch.float64) for w in weights)
    nonzero = sum((w.detach() != 0).flatten(1).sum(1) for w in weights)
    fan = sum(w[0].numel() for w in weights)
    return abs_sum, nonzero, fan


def norm_scales(modules: Mapping[str, nn.Module], group: ChannelGroup) -> Tensor | None:
    """Σ|γ| per channel over the group's norm carriers (Network Slimming's score), None when no
    norm with a scale carries the group's channels."""
    norms = [
        m
        for m in group.carriers
        if m.kind == "norm" and getattr(modules[m.name], "weight", None) is not None
    ]
    if not norms:
        return None
    channels = torch.arange(group.width)
    total = torch.zeros(group.width, dtype=torch.float64)
    for member in norms:
        gamma = modules[member.name].weight.detach().abs().double().cpu()
        total += gamma[member.map.positions(channels, group.width)].view(group.width, -1).sum(1)
    return total


@dataclass(frozen=True)
class GroupStats:
    """``channel_stats`` of every channel of several groups, concatenated group-major, and the
    norm scales |γ| where the caller gives them (for the ``slimming`` criterion)."""

    abs_sum: Tensor  # float64
    nonzero: Tensor
    fan: Tensor  # float64, the group's fan repeated per channel
    group: Tensor  # long, the group index of each channel
    gamma: Tensor | None = None  # float64 Σ|γ| per channel; NaN where a group has no norm

    @classmethod
    def of(
        cls,
        producer_weights: Sequence[Sequence[Tensor]],
        norm_scales: Sequence[Tensor | None] | None = None,
    ) -> GroupStats:
        """Scores of each group given its producers' weights (rows = output channels) and,
        optionally, its ``norm_scales`` output."""
        sums, nonzeros, fans, ids = [], [], [], []
        for gi, weights in enumerate(producer_weights):
            abs_sum, nonzero, fan = channel_stats(weights)
            width, device = abs_sum.numel(), abs_sum.device
            sums.append(abs_sum)
            nonzeros.append(nonzero)
            fans.append(torch.full((width,), float(fan), dtype=torch.float64, device=device))
            ids.append(torch.full((width,), gi, dtype=torch.long, device=device))
        gamma = None
        if norm_scales is not None:
            gamma = torch.cat(
                [
                    g.to(sums[i].device)
                    if g is not None
                    else torch.full_like(sums[i], float("nan"))
                    for i, g in enumerate(norm_scales)
                ]
            )
        return cls(torch.cat(sums), torch.cat(nonzeros), torch.cat(fans), torch.cat(ids), gamma)

    def keys(self, criterion: str, generator: torch.Generator) -> Tensor:
        """Pruning order of every channel by ``criterion`` (ascending goes first)."""
        return prune_keys(self.abs_sum, self.nonzero, self.fan, criterion, generator, self.gamma)


def prune_keys(
    abs_sum: Tensor,
    nonzero: Tensor,
    fan: Tensor,
    criterion: str,
    generator: torch.Generator,
    gamma: Tensor | None = None,
) -> Tensor:
    """Per-channel keys where ascending order is pruning order (float64)."""
    if criterion.startswith("slimming"):
        if gamma is None or torch.isnan(gamma).any():
            raise ValueError(
                "the slimming criterion ranks channels by their norm layer's |gamma|: every "
                "group needs a norm with a scale after its producers"
            )
        return -gamma if criterion == "slimming_reverse" else gamma
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


def removed_entries(
    modules: Mapping[str, nn.Module],
    producers: Sequence[str],
    consumers: Sequence[str],
    dead: Tensor,
) -> Iterator[tuple[str, tuple]]:
    """(parameter name, index) of every entry the ``dead`` channels occupy: the producers' weight
    rows and bias entries, the consumers' weight columns (plain groups; ``ChannelLayout`` covers
    every member)."""
    for name in producers:
        yield f"{name}.weight", (dead,)
        if getattr(modules[name], "bias", None) is not None:
            yield f"{name}.bias", (dead,)
    for name in consumers:
        yield f"{name}.weight", (slice(None), dead)


@dataclass(frozen=True)
class _Slot:
    """Group ``group`` occupies positions ``map`` along ``dim`` of a parameter; with
    ``segments`` > 1 the parameter is a grouped conv's weight and ``dim`` 1 holds each conv
    group's own input channels."""

    group: int
    dim: int
    map: ChannelMap
    width: int
    segments: int = 1


class ChannelLayout:
    """Where every group's channels sit in the model's Conv/Linear weights and biases: producer
    rows and biases, consumer columns (through concat offsets, flatten blocks and grouped-conv
    slices), depthwise filter rows and biases. Norms and per-channel tensors are left dense (a
    removed channel's consumers read it with zero weights; ``train.slicing`` removes them).

    Removing channels masks every entry they occupy (``allowed``); ``capacity`` counts a weight's
    positions inside alive channels with Python ints (no device sync)."""

    def __init__(self, modules: Mapping[str, nn.Module], groups: Sequence[ChannelGroup]) -> None:
        self.slots: dict[str, list[_Slot]] = {}
        for gi, group in enumerate(groups):
            for member in group.members:
                self._add(modules, gi, group, member)

    def _add(self, modules, gi: int, group: ChannelGroup, member: Member) -> None:
        module = modules.get(member.name)
        if member.kind in ("norm", "tensor"):
            return
        if not isinstance(module, MASKABLE + CONV_TRANSPOSE):
            raise ValueError(
                f"channel group {group.name!r}: {member.role} {member.name!r} is not a "
                f"Conv/Linear module"
            )
        if member.segments > 1 and getattr(module, "groups", 1) != member.segments:
            raise ValueError(
                f"channel group {group.name!r}: {member.name} has groups="
                f"{getattr(module, 'groups', 1)}, not {member.segments}"
            )
        axes = channel_axes(module, member)  # the weight first, then a producer's bias
        size = weight_channels(module, axes[0].dim)
        if member.map.size(group.width) != size:
            raise ValueError(
                f"channel group {group.name!r}: {member.role} {member.name!r} has {size} "
                f"channels where the group's map needs {member.map.size(group.width)}"
            )
        for axis in axes:
            slot = _Slot(gi, axis.dim, member.map, group.width, axis.segments)
            self.slots.setdefault(axis.name, []).append(slot)

    def params_of(self, group: int) -> list[str]:
        return [name for name, slots in self.slots.items() if any(s.group == group for s in slots)]

    def allowed(
        self, name: str, shape: Sequence[int], alive: Sequence[Tensor], widths: Sequence[int]
    ) -> Tensor | None:
        """Broadcastable bool over parameter ``name``: inside alive channels (None: all are)."""
        out = None
        for slot in self.slots.get(name, ()):
            if widths[slot.group] == slot.width:
                continue
            keep = alive[slot.group]
            dead = (~keep).nonzero().squeeze(1)
            if slot.segments > 1:
                per, g = shape[1], slot.segments
                cols = torch.ones(per * g, dtype=torch.bool, device=keep.device)
                cols[slot.map.positions(dead, slot.width)] = False
                grid = grouped_mask(cols, g, shape[0] // g)
                view = grid.view(shape[0], per, *([1] * (len(shape) - 2)))
            else:
                line = torch.ones(shape[slot.dim], dtype=torch.bool, device=keep.device)
                line[slot.map.positions(dead, slot.width)] = False
                dims = [1] * len(shape)
                dims[slot.dim] = -1
                view = line.view(dims)
            out = view if out is None else out & view
        return out

    def capacity(self, name: str, shape: Sequence[int], widths: Sequence[int]) -> int:
        """Positions of parameter ``name`` inside alive channels."""
        sizes = list(shape)
        for slot in self.slots.get(name, ()):
            dead = slot.width - widths[slot.group]
            lost = dead * slot.map.outer * slot.map.inner
            sizes[slot.dim] -= lost // slot.segments
        return math.prod(sizes)
