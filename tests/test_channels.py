"""Channel scores, the exact floor/round_to-aware selection, counts and the plan."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.channel_axes import producer_rows
from train.channel_scores import channel_stats, prune_keys
from train.channel_selection import (
    Pool,
    channel_floor,
    removal_count,
    select_channels,
    select_units,
)
from train.groups import ChannelGroup, ChannelMap, Member
from train.plan import plan_from_groups


def _walk(
    keys: list[float],
    group: list[int],
    alive: list[int],
    floors: list[int],
    round_to: int,
    count: int,
    skip: tuple[int, int] | None = None,
):
    """The spec, literally: walk channels in ascending key (ties: position), whole chunks per
    group; a chunk that does not fit (or the ``skip`` = (group, chunk number) one) closes its
    group. Returns the chosen channels and, per taken chunk, (group, chunk number, size)."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    removed = [0] * len(alive)
    pending: list[list[int]] = [[] for _ in alive]
    blocked = [False] * len(alive)
    chunks_taken = [0] * len(alive)
    chosen: set[int] = set()
    taken: list[tuple[int, int, int]] = []
    total = 0
    for i in order:
        g = group[i]
        if blocked[g] or total >= count:
            continue
        pending[g].append(i)
        done = removed[g] + len(pending[g])
        first = alive[g] % round_to or round_to
        chunk_end = first if removed[g] == 0 else removed[g] + round_to
        if done < min(chunk_end, alive[g]):
            continue  # the chunk is not complete yet
        if alive[g] - done < floors[g]:
            blocked[g] = True  # at its floor: skip the rest of this group
            continue
        if total + len(pending[g]) > count or skip == (g, chunks_taken[g]):
            blocked[g] = True  # does not fit (or skipped): close the group, go on
            continue
        chosen.update(pending[g])
        taken.append((g, chunks_taken[g], len(pending[g])))
        total += len(pending[g])
        chunks_taken[g] += 1
        removed[g] = done
        pending[g] = []
    return chosen, taken, total


def _select(keys, group, alive, floors, round_to, count):
    """The walk; if it ends short, retried with one taken chunk skipped, latest first."""
    chosen, taken, total = _walk(keys, group, alive, floors, round_to, count)
    if total < count:
        for g, j, _ in reversed(taken):
            again, _, total = _walk(keys, group, alive, floors, round_to, count, skip=(g, j))
            if total == count:
                chosen = again
                break
    return [i in chosen for i in range(len(keys))]


@st.composite
def _problem(draw):
    round_to = draw(st.sampled_from([1, 1, 2, 4]))
    n_groups = draw(st.integers(1, 5))
    alive = [draw(st.integers(1, 12)) for _ in range(n_groups)]
    floors = [min(a, draw(st.integers(1, 8))) for a in alive]
    floors = [
        min(a, math.ceil(f / round_to) * round_to) for f, a in zip(floors, alive, strict=True)
    ]
    group = [g for g, a in enumerate(alive) for _ in range(a)]
    keys = [draw(st.integers(0, 5)) / 2 for _ in group]
    count = draw(st.integers(0, sum(alive)))
    if round_to > 1:
        count = round_to * (count // round_to)
    return keys, group, alive, floors, round_to, count


@settings(max_examples=400, deadline=None)
@given(_problem())
def test_selection_equals_the_literal_walk(problem) -> None:
    keys, group, alive, floors, round_to, count = problem
    out = select_channels(
        torch.tensor(keys, dtype=torch.float64), torch.tensor(group), alive, floors, round_to, count
    )
    assert out.tolist() == _select(keys, group, alive, floors, round_to, count)
    removed = [sum(1 for i, g in enumerate(group) if g == j and out[i]) for j in range(len(alive))]
    assert sum(removed) <= count
    for a, f, r in zip(alive, floors, removed, strict=True):
        assert a - r >= f or r == 0
        if r and round_to > 1:
            assert (a - r) % round_to == 0


def test_selection_hits_the_count_when_floors_allow() -> None:
    g = torch.Generator().manual_seed(0)
    keys = torch.rand(64 + 32 + 16, generator=g, dtype=torch.float64)
    group = torch.tensor([0] * 64 + [1] * 32 + [2] * 16)
    out = select_channels(keys, group, [64, 32, 16], [16, 8, 4], 1, 50)
    assert int(out.sum()) == 50
    out = select_channels(keys, group, [64, 32, 16], [16, 8, 4], 8, 48)
    per_group = [int(out[group == i].sum()) for i in range(3)]
    assert sum(per_group) == 48 and all(p % 8 == 0 for p in per_group)


def test_scores_umm_ws_mmm() -> None:
    w = torch.zeros(3, 2, 2, 2)
    w[0] = 1.0  # dense, |w| = 1
    w[1, 0, 0, 0] = 4.0  # one weight of 4
    # channel 2 empty
    abs_sum, nonzero, fan = channel_stats([w])
    assert abs_sum.tolist() == [8.0, 4.0, 0.0] and nonzero.tolist() == [8, 1, 0] and fan == 8
    fans = torch.full((3,), 8.0, dtype=torch.float64)
    g = torch.Generator()
    assert prune_keys(abs_sum, nonzero, fans, "umm", g).tolist() == [1.0, 0.5, 0.0]
    assert prune_keys(abs_sum, nonzero, fans, "ws", g).tolist() == [-0.0, -7 / 8, -1.0]
    assert prune_keys(abs_sum, nonzero, fans, "mmm", g).tolist() == [1.0, 4.0, 0.0]
    # A stream: rows of several producers count as one filter.
    w2 = torch.ones(3, 4)
    abs_sum, nonzero, fan = channel_stats([w, w2])
    assert abs_sum.tolist() == [12.0, 8.0, 4.0] and fan == 12


@pytest.mark.parametrize("criterion", ["umm", "ws", "mmm"])
def test_reversed_criteria_pick_the_opposite_channels(criterion: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = (torch.rand(20, 72, generator=g) + 0.1) * torch.linspace(0.1, 2, 20).view(-1, 1)
    w *= torch.arange(72).view(1, -1) >= 3 * torch.randperm(20, generator=g).view(
        -1, 1
    )  # distinct WS
    w = w.view(20, 8, 3, 3)
    abs_sum, nonzero, fan = channel_stats([w])
    fans = torch.full((20,), float(fan), dtype=torch.float64)
    group = torch.zeros(20, dtype=torch.long)
    keys = prune_keys(abs_sum, nonzero, fans, criterion, g)
    rev = prune_keys(abs_sum, nonzero, fans, f"{criterion}_reverse", g)
    assert torch.unique(keys).numel() == 20  # no ties, so "opposite" is well defined
    first = select_channels(keys, group, [20], [1], 1, 5)
    last = select_channels(rev, group, [20], [1], 1, 5)
    assert set(first.nonzero().flatten().tolist()) == set(torch.argsort(keys)[:5].tolist())
    assert set(last.nonzero().flatten().tolist()) == set(torch.argsort(keys)[-5:].tolist())


def test_counts_and_floors() -> None:
    assert channel_floor(100, 0.3, 0.2, 1) == 14  # (1 - 0.3)·0.2·100 = 13.999... in floats
    assert channel_floor(64, 0.5, 0.5, 1) == 16
    assert channel_floor(64, 0.5, 0.2, 8) == 8
    assert channel_floor(10, 0.5, 0.0, 8) == 8  # at least one channel, raised to a multiple
    assert channel_floor(6, 0.5, 0.5, 8) == 6  # narrower than the alignment: never pruned
    assert removal_count(112, 112, 0.5, 1) == 56
    assert removal_count(100, 112, 0.5, 1) == 44
    assert removal_count(100, 112, 0.6, 1) == 55  # keep round(44.8) = 45
    assert removal_count(112, 112, 0.3, 8) == 32  # keep 78.4 → 80
    assert removal_count(50, 112, 0.1, 1) == 0


def test_plan_lists_only_layers_that_lost_channels() -> None:
    groups = [ChannelGroup("a", ("a",), (), 4), ChannelGroup("b", ("b", "c"), (), 3)]
    groups.append(ChannelGroup("d", ("d",), (), 2))
    alive = [
        torch.tensor([True, False, True, True]),
        torch.tensor([False, True, True]),
        torch.ones(2, dtype=torch.bool),
    ]
    plan = plan_from_groups(groups, alive).to_dict()
    assert plan == {
        "format": "chase-channel-plan",
        "version": 1,
        "layers": {
            "a": {"out_channels": 4, "kept": [0, 2, 3]},
            "b": {"out_channels": 3, "kept": [1, 2]},
            "c": {"out_channels": 3, "kept": [1, 2]},
        },
    }


def test_a_mapped_producer_lists_its_own_rows() -> None:
    """A gate writing each of a group's 3 channels twice (rows c and 3 + c, as over a Ghost
    concatenation) lists 6 out_channels and both rows of every kept channel; channel scores
    see its two rows of a channel as one filter."""
    twice = Member("gate", "producer", "conv", ChannelMap(outer=2))
    group = ChannelGroup(
        "p", ("p", "gate"), (), 3, members=(Member("p", "producer", "conv"), twice)
    )
    plan = plan_from_groups([group], [torch.tensor([True, False, True])])
    assert plan.layers["p"].out_channels == 3 and plan.layers["p"].kept == (0, 2)
    assert plan.layers["gate"].out_channels == 6 and plan.layers["gate"].kept == (0, 2, 3, 5)
    weight = torch.arange(6 * 2, dtype=torch.float32).view(6, 2, 1, 1)
    rows = producer_rows(torch.nn.Conv2d(2, 6, 1), twice, 3, weight)
    assert rows.tolist() == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]]
    assert twice.map.spread(torch.tensor([True, False, True])).tolist() == [
        True, False, True, True, False, True,
    ]  # fmt: skip


def test_grouped_conv_groups_lose_channels_evenly_per_slice() -> None:
    """A 16-channel group split in 4 slices loses whole units (one channel per slice, each the
    lowest of its slice); an 8-channel plain group makes up the remainder exactly."""
    g = torch.Generator().manual_seed(5)
    keys = torch.rand(16 + 8, generator=g, dtype=torch.float64)
    group = torch.tensor([0] * 16 + [1] * 8)
    channel = torch.cat([torch.arange(16), torch.arange(8)])
    for count in (1, 5, 9, 13):
        out = select_units(keys, channel, group, [16, 8], [4, 1], [16, 8], [4, 2], 1, count)
        assert int(out.sum()) == count
        removed = out[:16].view(4, 4).sum(1)
        assert len(set(removed.tolist())) == 1  # the same number in every slice
        for s in range(4):  # and within a slice, the lowest keys go first
            mine = keys[s * 4 : (s + 1) * 4]
            gone = mine[out[s * 4 : (s + 1) * 4]]
            if len(gone):
                assert gone.max() <= mine[~out[s * 4 : (s + 1) * 4]].min()


def test_pool_is_the_one_entry_point_and_removes_only_alive_channels() -> None:
    groups = [ChannelGroup("a", ("a",), (), 8), ChannelGroup("b", ("b",), (), 4, segments=2)]
    pool = Pool.of(groups, sparsity=0.5, beta=0.5, round_to=1)
    assert pool.widths == (8, 4) and pool.floors == (2, 2)  # b's floor: whole units of 2
    alive = [torch.tensor([False] + [True] * 7), torch.ones(4, dtype=torch.bool)]
    assert pool.count(11, 0.5) == 5
    # a's dead channel 0 has the lowest key and is not removed again; b's two slices lose one
    # channel each (its lowest), as one unit, down to its floor; a gives the rest.
    keys = torch.tensor([0, 10, 11, 12, 13, 14, 15, 16, 1, 2, 3, 4], dtype=torch.float64)
    dead = pool.select(keys, alive, 5)
    assert dead[0].tolist() == [False, True, True, True, False, False, False, False]
    assert dead[1].tolist() == [True, False, True, False]
    assert [d.tolist() for d in pool.select(keys, alive, 5, alive_counts=[7, 4])] == [
        d.tolist() for d in dead
    ]
