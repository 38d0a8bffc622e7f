"""Channel spaces: which channels of coupled layers are one channel of their group.

An elementwise op that combines two tracks (a residual Add, a squeeze-excitation Mul) ties the
channel at each position of one input to the channel at the same position of the other
(``tracks.Tie``). Usually position i holds channel i of both layers, and every producer of a
group writes channel c in row c. Not always: a Ghost module concatenates its primary conv's C
channels with a depthwise copy of them, and a squeeze-excitation gate multiplies the whole
concatenation, so the gate's expand conv writes 2·C rows and its rows j and C + j both meet the
primary conv's channel j.

The ties of the probe walk split the coupled layers' channels into classes; each class is one
channel of the group. The group's index space is that of its first producer (nearest the input)
that writes each class exactly once, the *owner*; every other producer gets a ``ChannelMap``
from its rows to the group's channels (the Ghost gate's is ``outer=2``). A group whose ties
cannot be written that way is *broken*: it is kept whole with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chase_deploy.graph.tracks import SOURCE_BITS, Flow
from train.groups import ChannelMap


@dataclass(frozen=True)
class Space:
    """One group's channel index space: ``width`` channels, numbered as ``owner`` numbers its
    own; ``channels[p][j]`` is the group channel row j of producer ``p`` writes, ``maps[p]``
    the same as a ``ChannelMap``."""

    width: int
    owner: str
    channels: dict[str, np.ndarray]
    maps: dict[str, ChannelMap]

    def translate(self, source: str, channels: np.ndarray) -> np.ndarray:
        """The group channels of ``source``'s channels ``channels``."""
        return self.channels[source][channels]


def channel_spaces(
    flow: Flow, sets: Mapping[str, Sequence[str]], width: Callable[[str], int]
) -> tuple[dict[str, Space], dict[str, str]]:
    """The space of each coupled set of producers (keyed by its root; producers nearest the
    input first), and the roots whose ties no space expresses, with why."""
    labels = {k: _labels(flow, k, width(k)) for ks in sets.values() for k in ks}
    universe = np.sort(np.concatenate(list(labels.values()))) if labels else np.zeros(0, np.int64)
    comp, pinned = _classes(flow, universe)
    spaces: dict[str, Space] = {}
    broken: dict[str, str] = {}
    for root, producers in sets.items():
        comps = {k: comp[np.searchsorted(universe, labels[k])] for k in producers}
        found = _space(producers, comps, pinned)
        if isinstance(found, str):
            broken[root] = found
        else:
            spaces[root] = found
    return spaces, broken


def _labels(flow: Flow, key: str, width: int) -> np.ndarray:
    return (np.int64(flow.source_ids[key]) << SOURCE_BITS) + np.arange(width, dtype=np.int64)


def _classes(flow: Flow, universe: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Connected classes of ``universe`` (sorted labels) under the flow's ties: each label's
    class id; and the classes tied to a channel no tracked layer writes (label -1), with the
    node where that happens."""
    comp = np.arange(len(universe))
    if not flow.ties or not len(universe):
        return comp, {}
    us, vs, loose = [], [], []
    for tie in flow.ties:
        both = (tie.a >= 0) & (tie.b >= 0)
        us.append(np.searchsorted(universe, tie.a[both]))
        vs.append(np.searchsorted(universe, tie.b[both]))
        for one, other in ((tie.a, tie.b), (tie.b, tie.a)):
            alone = one[(one >= 0) & (other < 0)]
            loose.extend((int(i), tie.node) for i in np.searchsorted(universe, alone))
    u, v = np.concatenate(us), np.concatenate(vs)
    while True:  # min-label propagation with pointer jumping
        low = np.minimum(comp[u], comp[v])
        if np.array_equal(comp[u], low) and np.array_equal(comp[v], low):
            break
        np.minimum.at(comp, u, low)
        np.minimum.at(comp, v, low)
        while not np.array_equal(comp[comp], comp):
            comp = comp[comp]
    pinned: dict[int, str] = {}
    for i, node in loose:
        pinned.setdefault(int(comp[i]), node)
    return comp, pinned


def _space(
    producers: Sequence[str], comps: dict[str, np.ndarray], pinned: dict[int, str]
) -> Space | str:
    """The space of one coupled set, or why there is none."""
    for k in producers:
        hit = [pinned[c] for c in np.unique(comps[k]).tolist() if c in pinned]
        if hit:
            return (
                f"node {hit[0]} combines its channels with channels that no prunable layer "
                f"writes (kept whole), so they cannot be removed"
            )
    classes = np.unique(np.concatenate([comps[k] for k in producers]))
    owner = next(
        (k for k in producers if len(np.unique(comps[k])) == len(comps[k]) == len(classes)),
        None,
    )
    if owner is None:
        return (
            f"its coupled layers ({', '.join(producers)}) write its {len(classes)} channels in "
            f"overlapping patterns: none of them writes each channel once"
        )
    number = np.full(int(classes.max()) + 1, -1, dtype=np.int64)
    number[comps[owner]] = np.arange(len(comps[owner]))
    channels = {k: number[comps[k]] for k in producers}
    maps: dict[str, ChannelMap] = {}
    for k in producers:
        rows = np.arange(len(channels[k]))
        cmap = ChannelMap.fit(rows, channels[k], len(rows), len(classes))
        if cmap is None:
            return f"{k} writes the group's channels in an order the controller cannot map"
        maps[k] = cmap
    return Space(len(classes), owner, channels, maps)
