"""Completing a plan with what the graph forces.

Layers whose channels meet at an elementwise op (a squeeze-excitation gate and the channels it
multiplies, the convs summed into a residual stream) must keep the same channels. A plan that
lists one of them and not the others is completed: each coupled layer the plan leaves out is
added, keeping the rows that hold the kept channels in its own index space (a gate over a Ghost
module's concatenation writes each of the primary conv's channels twice, so it keeps both rows).
The graph's groups (``graph_groups``) say which layers are coupled and where each holds which
channel. Only a plan that contradicts itself is refused: two coupled layers listed with
different channels, or a layer keeping one row of a channel and dropping another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.graph_groups import GraphGroups
from chase_deploy.graph.reading import find_layers
from chase_deploy.graph.spaces import Space
from train.errors import BadInput
from train.plan import ChannelPlan, LayerPlan


class Disagree(BadInput):
    """Two listed layers of one coupled set keep different channels (the walk's own stop, which
    names the node where they meet, says it best)."""


@dataclass(frozen=True)
class Added:
    """A layer the plan left out and the graph forced in: coupled with plan layer ``partner``
    at node ``node``."""

    key: str
    entry: LayerPlan
    partner: str
    node: str

    def describe(self) -> str:
        return (
            f"{self.key} (keeps {len(self.entry.kept)} of {self.entry.out_channels}: coupled "
            f"with {self.partner} at node {self.node})"
        )


def complete(
    graph: gs.Graph, plan: ChannelPlan, layers: dict[str, list[gs.Node]], found: GraphGroups
) -> tuple[ChannelPlan, list[Added]]:
    """``plan`` with every layer coupled to a pruned plan layer, and the layers added."""
    by_node = {id(n): k for k, n in found.nodes.items()}
    listed: dict[str, dict[str, str]] = {}  # root -> probe name -> plan key
    for key, nodes in layers.items():
        for node in nodes:
            name = by_node.get(id(node))
            root = found.root_of(name) if name is not None else None
            if root is not None:
                listed.setdefault(root, {})[name] = key
    new = dict(plan.layers)
    added: list[Added] = []
    for root, mine in listed.items():
        space = found.spaces.get(root)
        if space is None or not any(plan.layers[k].pruned for k in mine.values()):
            continue
        node = found.coupling_node(root)
        channels = _agreed(space, mine, plan, node)
        partner = next(k for k in mine.values() if plan.layers[k].pruned)
        for name in found.sets[root]:
            if name in mine:
                continue
            chan = space.channels[name]
            rows = tuple(np.flatnonzero(np.isin(chan, channels)).tolist())
            _check_name(graph, name, found.nodes[name], node)
            entry = LayerPlan(len(chan), rows)
            new[name] = entry
            added.append(Added(name, entry, partner, node))
    return ChannelPlan(new), added


def _agreed(space: Space, mine: dict[str, str], plan: ChannelPlan, node: str) -> np.ndarray:
    """The group channels every listed layer of one coupled set keeps (they must agree)."""
    first: tuple[str, str, np.ndarray] | None = None
    for name, key in mine.items():
        chan = space.channels[name]
        rows = np.asarray(plan.layers[key].kept, dtype=np.int64)
        kept = np.unique(chan[rows])
        whole = np.flatnonzero(np.isin(chan, kept))
        if not np.array_equal(whole, rows):
            extra = int(np.setdiff1d(whole, rows)[0])
            held = int(chan[extra])
            row = int(rows[chan[rows] == held][0])
            raise BadInput(
                f"plan layer {key!r} keeps row {row} and drops row {extra}, which hold the same "
                f"channel (the graph ties them at node {node}); keep both or neither"
            )
        if first is None:
            first = (name, key, kept)
            continue
        if not np.array_equal(kept, first[2]):
            raise Disagree(f"plan layers {first[1]!r} and {key!r} keep different channels")
    return first[2]


def _check_name(graph: gs.Graph, name: str, node: gs.Node, where: str) -> None:
    """An added layer is named as a plan names it: the name must find this node again."""
    try:
        nodes = find_layers(graph, [name])[name]
    except BadInput:
        nodes = []
    if [id(n) for n in nodes] != [id(node)]:
        raise BadInput(
            f"the plan's layers are coupled at node {where} with {node.op} {node.name}, which "
            f"has no name a plan can use; list its weight's owner or leave the coupled layers "
            f"out of the plan"
        )
