"""Where the channel pass stops, and what it says.

A ``ChannelStop`` is a ``BadInput`` with two texts: the message ``slim`` prints (it names the
node and the fix) and a short ``reason`` the group analysis records for every layer the stop
excludes (``inspect`` prints it). The builders below write both, so every rule words the same
situation the same way.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.reading import LAYER_OPS, layer_name
from chase_deploy.graph.tracks import Track
from train.errors import BadInput


class ChannelStop(BadInput):
    """The pass cannot follow the channels of ``sources`` through ``node`` (``reason`` says why)."""

    def __init__(self, message: str, node: gs.Node | None, sources: frozenset[str], reason: str):
        super().__init__(message)
        self.node = node
        self.sources = sources
        self.reason = reason


def unsupported(node: gs.Node, track: Track, why: str, note: str = "") -> ChannelStop:
    """``node`` does something to the channel axis of ``track`` that cannot be followed."""
    where = "" if "channel axis" in why else " on the channel axis"
    return ChannelStop(
        f"node {node.name} ({node.op}) {why}{where} of {track.describe()}{note}; "
        f"chase-deploy cannot slim through it: leave those layers out of the plan",
        node,
        track.sources,
        f"node {node.name} ({node.op}) {why}{where}{note}",
    )


def mismatch(node: gs.Node, a: Track, other: str, reason: str = "") -> ChannelStop:
    """``node`` combines ``a`` with channels (described by ``other``) that keep another set."""
    return ChannelStop(
        f"node {node.name} ({node.op}) couples {a.describe()} with {other}: layers feeding "
        f"the same stream must list the same kept set in the plan (or none of them)",
        node,
        a.sources,
        reason or f"node {node.name} ({node.op}) combines its channels with {other}",
    )


def differs(node: gs.Node, a: Track, b: Track) -> ChannelStop:
    """Two tracks meet at ``node`` with different kept sets."""
    first = int(np.setxor1d(a.kept, b.kept)[0]) if a.width == b.width else None
    where = f"; they disagree on channel {first}" if first is not None else ""
    return mismatch(node, a, b.describe() + where)


def untracked(graph: gs.Graph, node: gs.Node, a: Track, tensor: gs.Tensor) -> ChannelStop:
    """``a`` meets ``tensor``, whose channels no plan layer prunes."""
    names = upstream_names(graph, tensor)
    return mismatch(
        node,
        a,
        f"{names} (not in the plan: keeps every channel)",
        f"node {node.name} ({node.op}) combines its channels with those of {names}, which "
        f"are not prunable",
    )


def unknown_shape(node: gs.Node, tensor: gs.Tensor, track: Track | None) -> ChannelStop:
    """Shape inference left the rank of ``tensor`` unknown."""
    return ChannelStop(
        f"node {node.name} ({node.op}): the shape of {tensor.name!r} is unknown after ONNX "
        f"shape inference, so its channel axis cannot be followed; export with static "
        f"shapes",
        node,
        track.sources if track is not None else frozenset(),
        f"node {node.name} ({node.op}): the shape of {tensor.name!r} is unknown",
    )


def computed_constant(node: gs.Node, index: int, track: Track | None) -> ChannelStop:
    """A tensor the pass would slice is computed, not a constant."""
    name = node.inputs[index].name
    return ChannelStop(
        f"node {node.name} ({node.op}): input {name!r} must be a "
        f"constant to slice it for pruned channels, but it is computed",
        node,
        track.sources if track is not None else frozenset(),
        f"node {node.name} ({node.op}) scales the channels by a computed tensor {name!r}",
    )


def graph_output(track: Track, output: str) -> ChannelStop:
    """Pruning ``track`` would change the model's output ``output``."""
    return ChannelStop(
        f"pruning {track.describe()} would change the graph output {output!r}; "
        f"leave the layers that feed the output out of the plan",
        None,
        track.sources,
        f"its channels are the model's output {output!r}",
    )


def upstream_names(graph: gs.Graph, tensor: gs.Tensor, limit: int = 4) -> str:
    """Names of the layers that produce ``tensor`` (for error messages)."""
    found: list[str] = []
    seen: set[str] = set()
    todo = [tensor]
    while todo and len(found) < limit:
        t = todo.pop()
        if t.name in seen:
            continue
        seen.add(t.name)
        if not t.inputs:
            if not isinstance(t, gs.Constant) and t in graph.inputs:
                found.append(f"graph input {t.name}")
            continue
        node = t.inputs[0]
        if node.op in LAYER_OPS:
            found.append(layer_name(node))
            continue
        todo.extend(i for i in node.inputs if not isinstance(i, gs.Constant))
    return ", ".join(dict.fromkeys(found)) or tensor.name
