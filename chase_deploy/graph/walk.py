"""Following kept channels through an ONNX graph: one forward walk in topological order.

A plan layer starts a track at its output; every node a track reaches runs the rule registered
for its op type (``chase_deploy.graph.registry``; the built-in ones are in
``chase_deploy.graph.rules``), which passes the track on, remaps it, couples it with another or
ends it, and records the edits. A node with no rule, or a rule that cannot follow the channels,
stops the walk with a ``ChannelStop`` that names the node. The walk only records; ``surgery``
applies the edits once everything is known.

The same walk serves two callers. ``surgery`` starts it from a plan's kept sets. The group
analysis (``chase_deploy.graph.analysis``) starts it in *probe* mode from every layer at once
with every channel kept, as if all were to be pruned: each kept index carries a label (which
layer's channel it is), so the recorded edits say which member of which group reads or writes
each channel, and every stop names the layers it excludes. In probe mode reaching a graph
output, a channel-axis Slice/Split or a channel shuffle stops a track, and any error a rule
raises becomes a stop of the layers involved.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from chase_deploy.graph import rules  # noqa: F401 - registers the built-in rules
from chase_deploy.graph.registry import RULES
from chase_deploy.graph.state import Live, PassState, Start
from chase_deploy.graph.stops import ChannelStop, graph_output, unsupported
from train.errors import one_line


def walk(graph: gs.Graph, starts: dict[int, Start], probe: bool = False) -> PassState:
    """Walk ``graph`` once from ``starts`` (``id(node)`` of each producing node -> (plan key,
    kept indices)); the returned state holds the ``flow`` of edits and every tensor's track."""
    state = PassState(graph, starts, probe)
    for node in graph.nodes:
        start = starts.get(id(node))
        live = [
            (i, state.tracks[t.name]) for i, t in enumerate(node.inputs) if t.name in state.tracks
        ]
        if start is None and not live:
            continue
        rule = RULES.get(node.op)
        if rule is None:
            _, track = live[0]
            raise unsupported(node, track, "is an op chase-deploy does not slim through")
        try:
            rule(state, node, live, start)
        except ChannelStop as e:
            if e.sources or not probe:
                raise
            raise ChannelStop(str(e), node, _involved(live, start), e.reason) from None
        except Exception as e:  # noqa: BLE001 - probing any model: name the layers, go on
            if not probe:
                raise
            why = one_line(e, 160)
            raise ChannelStop(
                why, node, _involved(live, start), f"node {node.name} ({node.op}): {why}"
            ) from None
    _check_outputs(state)
    state.flow.coupled = state.coupled_sets()
    return state


def probe(graph: gs.Graph, starts: dict[int, Start]) -> tuple[PassState, dict[str, str]]:
    """Walk in probe mode from ``starts``; each stop excludes the layers it names (returned with
    its reason) and the walk runs again without them, until it goes through."""
    excluded: dict[str, str] = {}
    while True:
        try:
            return walk(graph, starts, probe=True), excluded
        except ChannelStop as stop:
            keys = {k for k, _ in starts.values()} & set(stop.sources)
            if not keys:
                raise
            for key in sorted(keys):
                excluded.setdefault(key, stop.reason)
            starts = {i: s for i, s in starts.items() if s[0] not in keys}


def _check_outputs(state: PassState) -> None:
    for out in state.graph.outputs:
        track = state.tracks.get(out.name)
        if track is not None and (state.probe or not track.full):
            raise graph_output(track, out.name)


def _involved(live: Live, start: Start | None) -> frozenset[str]:
    sources: set[str] = {start[0]} if start is not None else set()
    for _, track in live:
        sources |= track.sources
    return frozenset(sources)
