"""The state of one channel pass, and the few things every rule asks of it.

The rules (``chase_deploy.graph.rules``) read tracks, record edits and couple tracks through a
``PassState``: which tensor carries which track, the ``Flow`` of edits so far, a union-find over
the plan layers that an elementwise op couples, and the shapes and axes rules read from nodes.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.reading import constant_values, static_shape
from chase_deploy.graph.stops import computed_constant, unknown_shape
from chase_deploy.graph.tracks import SOURCE_BITS, Coupling, Flow, SliceEdit, Tie, Track
from train.errors import BadInput

# A producing node's start: (plan key, kept output channels).
Start = tuple[str, np.ndarray]
# The inputs of a node that carry tracks: (input index, track).
Live = list[tuple[int, Track]]


class PassState:
    """Tracks, edits and couplings of one walk over ``graph``; with ``probe`` every start keeps
    all its channels but is treated as pruned (see ``chase_deploy.graph.walk``)."""

    def __init__(self, graph: gs.Graph, starts: dict[int, Start], probe: bool = False) -> None:
        self.graph = graph
        self.starts = starts
        self.probe = probe
        self.tracks: dict[str, Track] = {}
        self.flow = Flow()
        self._links: dict[str, str] = {}
        for key, _ in starts.values():
            self.flow.source_ids.setdefault(key, len(self.flow.source_ids))

    # -- tracks -------------------------------------------------------------------------------

    def set(self, tensor: gs.Tensor, track: Track) -> None:
        """``tensor`` carries ``track`` from here on."""
        self.tracks[tensor.name] = track

    def start_track(self, key: str, kept: np.ndarray, axis: int, rank: int, width: int) -> Track:
        """The track a plan layer ``key`` starts at its output, each index labelled."""
        sid = self.flow.source_ids[key]
        labels = (np.int64(sid) << SOURCE_BITS) + kept.astype(np.int64)
        return Track(axis, rank, width, kept, frozenset([key]), labels)

    # -- edits --------------------------------------------------------------------------------

    def slice(
        self,
        node: gs.Node,
        index: int,
        axis: int,
        indices: np.ndarray,
        labels: np.ndarray | None = None,
        segments: int = 1,
        track: Track | None = None,
    ) -> None:
        """Record that the constant at ``node.inputs[index]`` keeps ``indices`` along ``axis``
        (an absent optional input is skipped; a computed one stops the pass)."""
        if index < len(node.inputs) and node.inputs[index].name:
            if constant_values(node.inputs[index]) is None:
                raise computed_constant(node, index, track)
            self.flow.slices.append(SliceEdit(node, index, axis, indices, labels, segments))

    def add_segments(self, track: Track, groups: int) -> None:
        """A grouped conv with ``groups`` groups reads or writes ``track``'s channels."""
        for key in track.sources:
            self.flow.segments[key] = math.lcm(self.flow.segments.get(key, 1), groups)

    # -- couplings ----------------------------------------------------------------------------

    def couple(self, a: Track, b: Track, node: gs.Node) -> None:
        """``node`` combines ``a`` and ``b``: their layers keep one set of channels."""
        for x in a.sources | b.sources:
            self._union(next(iter(a.sources)), x)
        self.flow.couplings.append(Coupling(a.sources | b.sources, node.op, node.name))
        self.flow.ties.append(Tie(node.name, a.labels, b.labels))

    def coupled_sets(self) -> list[frozenset[str]]:
        """The plan layers that ended up coupled, one set per stream."""
        sets: dict[str, set[str]] = {}
        for key in set(self._links) | set(self._links.values()):
            sets.setdefault(self._find(key), set()).add(key)
        return [frozenset(s) for s in sets.values() if len(s) > 1]

    def _find(self, key: str) -> str:
        while self._links.get(key, key) != key:
            key = self._links[key]
        return key

    def _union(self, a: str, b: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._links[rb] = ra

    # -- shapes and axes ----------------------------------------------------------------------

    def shape(self, node: gs.Node, tensor: gs.Tensor, track: Track | None = None) -> list:
        """The static shape of ``tensor`` (an unknown rank stops the pass)."""
        shape = static_shape(tensor)
        if shape is None:
            raise unknown_shape(node, tensor, track)
        return shape

    def axes(self, node: gs.Node) -> list[int] | None:
        """A node's ``axes``, from its attribute (old opsets) or its constant input 1."""
        if "axes" in node.attrs:
            return [int(a) for a in node.attrs["axes"]]
        if len(node.inputs) > 1 and node.inputs[1].name:
            return _constant_axes(node, 1)
        return None

    def axes_input(self, node: gs.Node, index: int, rank: int) -> list[int]:
        """The axes a node's optional input ``index`` lists, normalized (default: every axis)."""
        if len(node.inputs) > index and node.inputs[index].name:
            return [a % rank for a in _constant_axes(node, index)]
        return list(range(rank))


def _constant_axes(node: gs.Node, index: int) -> list[int]:
    values = constant_values(node.inputs[index])
    if values is None:
        raise BadInput(f"node {node.name} ({node.op}): computed axes are not supported")
    return [int(a) for a in values.reshape(-1)]
