"""The channel groups of an ONNX graph alone: which layers the graph couples, and how.

``slim`` on a plan has no PyTorch model, yet asks what the group analysis answers for training:
which layers a pruned layer is coupled to (``completion`` adds them to the plan), where coupled
layers hold each other's channels (``plan_rounding`` rounds such a group in one index space) and
which channels are exactly zero wherever they are read (``zeros``: a plan from the model
itself). It probes the graph the way the analysis does: every Conv/ConvTranspose/Gemm/MatMul
with a constant weight (but a depthwise conv, which carries its input's channels) starts a track
of all its channels, keyed by its plan name (``reading.layer_name``); each stop excludes the
layers it names; the ties of the walk give every coupled set its channel space
(``spaces``). No pruning policy applies here: a residual stream is a group like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.reading import constant_values, layer_name, layer_nodes, weight_axes
from chase_deploy.graph.spaces import Space, channel_spaces
from chase_deploy.graph.state import Start
from chase_deploy.graph.stops import ChannelStop
from chase_deploy.graph.tracks import Flow
from chase_deploy.graph.walk import probe


@dataclass
class GraphGroups:
    """One probe of a graph: its layers by plan name, their coupled sets and channel spaces."""

    flow: Flow
    nodes: dict[str, gs.Node]  # plan name -> layer node, for every layer the probe followed
    sets: dict[str, list[str]]  # root -> the coupled layers, in graph order
    spaces: dict[str, Space]  # root -> its channel space (absent: the set is broken)
    broken: dict[str, str]
    excluded: dict[str, str]  # layer -> why the probe could not follow it

    def root_of(self, key: str) -> str | None:
        """The coupled set ``key`` belongs to, if the probe followed it."""
        return self._roots.get(key)

    def __post_init__(self) -> None:
        self._roots = {k: r for r, ks in self.sets.items() for k in ks}

    def coupling_node(self, root: str) -> str:
        """A node where the layers of ``root``'s set meet (for messages)."""
        mine = set(self.sets[root])
        return next((c.node for c in self.flow.couplings if c.sources & mine), "?")


def layer_width(node: gs.Node) -> int:
    """Output channels of a layer node."""
    weight = constant_values(node.inputs[1])
    return int(weight.shape[weight_axes(node, weight)[0]])


def graph_groups(graph: gs.Graph) -> GraphGroups:
    """Probe ``graph`` from every layer that writes channels of its own."""
    nodes: dict[str, gs.Node] = {}
    twice: set[str] = set()
    excluded: dict[str, str] = {}
    for node in layer_nodes(graph):
        key = layer_name(node)
        if carries(node):
            continue
        if key in nodes:
            twice.add(key)
        nodes[key] = node
    for key in twice:
        del nodes[key]
        excluded[key] = "its weight is used by several nodes"
    starts: dict[int, Start] = {
        id(n): (k, np.arange(layer_width(n), dtype=np.int64)) for k, n in nodes.items()
    }
    try:
        state, stopped = probe(graph, starts)
    except ChannelStop as stop:  # a stop that names no layer: nothing can be followed
        empty = Flow()
        return GraphGroups(empty, {}, {}, {}, {}, {k: stop.reason for k in nodes})
    excluded.update(stopped)
    nodes = {k: n for k, n in nodes.items() if k not in stopped}
    order = {k: i for i, k in enumerate(nodes)}
    root = {k: k for k in nodes}
    for coupled in state.flow.coupled:
        first = min(coupled, key=order.__getitem__)
        for k in coupled:
            root[k] = first
    sets: dict[str, list[str]] = {}
    for k in nodes:
        sets.setdefault(root[k], []).append(k)
    widths = {k: layer_width(n) for k, n in nodes.items()}
    spaces, broken = channel_spaces(state.flow, sets, widths.__getitem__)
    return GraphGroups(state.flow, nodes, sets, spaces, broken, excluded)


def carries(node: gs.Node) -> bool:
    """A depthwise conv (or grouped ConvTranspose) carries its input's channels: no start."""
    group = int(node.attrs.get("group", 1))
    if node.op not in ("Conv", "ConvTranspose") or group == 1:
        return False
    weight = constant_values(node.inputs[1])
    return node.op == "ConvTranspose" or weight.shape[weight_axes(node, weight)[1]] == 1
