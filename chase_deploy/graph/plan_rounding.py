"""``--round-to``: widen a plan's kept sets to multiples of ``round_to`` on the graph.

Every pruned layer is widened (jointly per coupled set, by ``train.rounding``'s rule: the best
remaining channels by L1 magnitude of their weights, summed over the set's layers), and channels
a grouped conv reads or writes by the same count in each of its groups. Coupled layers of one
width keep the same indices; coupled layers of different widths (a squeeze-excitation gate over
a Ghost module's concatenation writes each of the primary conv's channels twice) are rounded in
their group's channel space (``graph_groups``, ``spaces``) and mapped back to each layer's rows.

Rounding can only keep more. When it keeps every channel of a pruned layer (a grouped conv
whose groups are narrower than the step), it says so (``notes``) and names the largest
``round_to`` that would keep the cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.graph_groups import GraphGroups
from chase_deploy.graph.reading import constant_values, weight_axes
from chase_deploy.graph.tracks import Flow
from train.errors import BadInput
from train.plan import ChannelPlan, LayerPlan
from train.rounding import round_kept


@dataclass
class _Set:
    """Coupled pruned layers rounded together, in one index space of ``width`` channels:
    ``rows[key][c]`` is where layer ``key`` holds channel c (None: channel c is row c)."""

    keys: list[str]
    width: int
    kept: tuple[int, ...]
    scores: np.ndarray
    segments: int
    rows: dict[str, np.ndarray] | None = None

    def rounded(self, round_to: int) -> tuple[int, ...]:
        return round_kept(self.kept, self.width, round_to, self.scores, self.segments)

    def entries(self, plan: ChannelPlan, kept: tuple[int, ...]) -> dict[str, LayerPlan]:
        if self.rows is None:
            return {k: LayerPlan(plan.layers[k].out_channels, kept) for k in self.keys}
        return {
            k: LayerPlan(len(chan), tuple(np.flatnonzero(np.isin(chan, kept)).tolist()))
            for k, chan in self.rows.items()
        }


def round_plan(
    plan: ChannelPlan,
    layers: dict[str, list[gs.Node]],
    flow: Flow,
    round_to: int,
    groups: Callable[[], GraphGroups],
) -> tuple[ChannelPlan, list[str]]:
    """``plan`` widened to multiples of ``round_to`` (``flow``: the plan's walk; ``groups``:
    the graph's groups, probed only for coupled layers of different widths), and what to tell
    the user about it."""
    sets = [_set(plan, layers, flow, keys, groups) for keys in _coupled(plan, flow)]
    new = dict(plan.layers)
    undone = []
    for s in sets:
        kept = s.rounded(round_to)
        if len(kept) == s.width:
            undone.append(s)
        new.update(s.entries(plan, kept))
    return ChannelPlan(new), _notes(sets, undone, round_to)


def _coupled(plan: ChannelPlan, flow: Flow) -> list[list[str]]:
    pruned = {k for k, v in plan.layers.items() if v.pruned}
    sets = [set(g) & pruned for g in flow.coupled]
    grouped = set().union(*sets) if sets else set()
    sets += [{k} for k in sorted(pruned - grouped)]
    return [sorted(s) for s in sets if s]


def _set(
    plan: ChannelPlan,
    layers: dict[str, list[gs.Node]],
    flow: Flow,
    keys: list[str],
    groups: Callable[[], GraphGroups],
) -> _Set:
    ref = plan.layers[keys[0]]
    if len({plan.layers[k].out_channels for k in keys}) == 1:
        scores = sum(_scores(node) for k in keys for node in layers[k])
        segments = math.lcm(*(flow.segments.get(k, 1) for k in keys))
        return _Set(keys, ref.out_channels, ref.kept, scores, segments)
    return _mapped_set(plan, layers, flow, keys, groups())


def _mapped_set(
    plan: ChannelPlan,
    layers: dict[str, list[gs.Node]],
    flow: Flow,
    keys: list[str],
    found: GraphGroups,
) -> _Set:
    """Coupled layers of different widths, in their group's channel space."""
    by_node = {id(n): k for k, n in found.nodes.items()}
    probe = {k: by_node.get(id(layers[k][0])) for k in keys}
    roots = {found.root_of(p) for p in probe.values() if p is not None}
    space = found.spaces.get(next(iter(roots))) if len(roots) == 1 else None
    if space is None or None in probe.values() or any(len(layers[k]) > 1 for k in keys):
        raise BadInput(
            f"--round-to cannot round the coupled plan layers {', '.join(keys)}: they have "
            f"different widths and the graph does not say which of their channels are one; "
            f"use --round-to 1"
        )
    rows = {k: space.channels[probe[k]] for k in keys}
    scores = np.zeros(space.width)
    for k in keys:
        np.add.at(scores, rows[k], _scores(layers[k][0]))
    plain = [k for k in keys if space.maps[probe[k]].is_plain]
    if any(flow.segments.get(k, 1) > 1 for k in keys if k not in plain):
        raise BadInput(
            f"--round-to cannot round the coupled plan layers {', '.join(keys)}: a grouped conv "
            f"splits channels that some of them write at mapped rows; use --round-to 1"
        )
    segments = math.lcm(*(flow.segments.get(k, 1) for k in plain))
    chan = rows[keys[0]]
    kept = tuple(np.unique(chan[list(plan.layers[keys[0]].kept)]).tolist())
    return _Set(keys, space.width, kept, scores, segments, rows)


def _scores(node: gs.Node) -> np.ndarray:
    """L1 norm of each output channel's weights: the next-best channels to keep when rounding."""
    weight = np.abs(constant_values(node.inputs[1]).astype(np.float64))
    axis = weight_axes(node, weight)[0]
    return weight.sum(axis=tuple(a for a in range(weight.ndim) if a != axis))


def _notes(sets: list[_Set], undone: list[_Set], round_to: int) -> list[str]:
    """One line when rounding kept every channel of some pruned layers, with the largest
    ``round_to`` that keeps their cut."""
    if not undone:
        return []
    best = next(
        (r for r in range(round_to - 1, 1, -1) if all(len(s.rounded(r)) < s.width for s in undone)),
        1,
    )
    first = undone[0]
    what = (
        "every channel the plan removes, so nothing is slimmed"
        if len(undone) == len(sets)
        else f"every channel of {len(undone)} of the plan's {len(sets)} pruned layer groups"
    )
    return [
        f"--round-to {round_to} keeps {what} ({_why(first, round_to)}); "
        f"--round-to {best} keeps the cut"
    ]


def _why(s: _Set, round_to: int) -> str:
    key = s.keys[0]
    if s.segments > 1:
        size = s.width // s.segments
        step = math.lcm(round_to, s.segments) // s.segments
        per = len(s.kept) // s.segments
        return (
            f"{key}: a grouped conv splits its {s.width} channels into {s.segments} groups of "
            f"{size}; each keeps {per} and must keep a multiple of {step}"
        )
    return f"{key} keeps {len(s.kept)} of {s.width} channels, which rounds up to all {s.width}"
