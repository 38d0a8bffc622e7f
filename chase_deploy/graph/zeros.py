"""A plan from the model itself: the channels that are exactly zero wherever they are read.

A model pruned by any tool (Chase's masks, a magnitude pruner, by hand) carries its pruned
channels as zeros: the producing layer's weight row is zero, and so is every column that reads
the channel in the layers after it. Such a channel adds nothing to any output, so removing it is
lossless. The graph's groups (``graph_groups``) say, for every channel, which rows write it (all
coupled producers: a residual stream's convs, a gate and the channels it multiplies) and which
columns read it (through concatenations, flattens and grouped convs); a channel is removable
when all of them are zero. Each group keeps at least one channel.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.graph_groups import GraphGroups, carries
from chase_deploy.graph.reading import LAYER_OPS, constant_values, weight_axes
from chase_deploy.graph.tracks import CHANNEL_BITS, SOURCE_BITS, SliceEdit
from train.plan import ChannelPlan, LayerPlan


def plan_from_zeros(found: GraphGroups) -> ChannelPlan:
    """Every producer of a group with exactly-zero channels, keeping the others (an empty plan
    when no channel is zero)."""
    read = _read_channels(found)
    layers: dict[str, LayerPlan] = {}
    for root, producers in found.sets.items():
        space = found.spaces.get(root)
        if space is None:
            continue
        live = np.zeros(space.width, dtype=bool)
        for key in producers:
            rows = _nonzero_rows(found.nodes[key])
            live[space.channels[key][rows]] = True
        for key in producers:
            for label_channel in read.get(key, ()):
                live[space.channels[key][label_channel]] = True
        if live.all():
            continue
        if not live.any():
            live[0] = True  # a layer keeps at least one channel
        kept = np.flatnonzero(live)
        for key in producers:
            chan = space.channels[key]
            layers[key] = LayerPlan(len(chan), tuple(np.flatnonzero(np.isin(chan, kept)).tolist()))
    return ChannelPlan(layers)


def _nonzero_rows(node: gs.Node) -> np.ndarray:
    """The output channels of a layer whose weights are not all zero."""
    weight = constant_values(node.inputs[1])
    axis = weight_axes(node, weight)[0]
    other = tuple(a for a in range(weight.ndim) if a != axis)
    return np.flatnonzero(np.any(weight != 0, axis=other))


def _read_channels(found: GraphGroups) -> dict[str, list[int]]:
    """Producer -> its channels that some layer reads with a non-zero column."""
    names = {i: s for s, i in found.flow.source_ids.items()}
    own = {id(n): k for k, n in found.nodes.items()}
    read: dict[str, set[int]] = {}
    for edit in found.flow.slices:
        node = edit.node
        if edit.labels is None or node.op not in LAYER_OPS or edit.index != 1 or carries(node):
            continue
        tracked = edit.labels >= 0
        nonzero = _nonzero_positions(edit)[tracked]
        labels = edit.labels[tracked][nonzero]
        for label in labels.tolist():
            source = names[label >> SOURCE_BITS]
            if source != own.get(id(node)):  # not the producer's own rows
                read.setdefault(source, set()).add(label & CHANNEL_BITS)
    return {k: sorted(v) for k, v in read.items()}


def _nonzero_positions(edit: SliceEdit) -> np.ndarray:
    """For each of an edit's positions (a layer's input channels), whether its column holds a
    non-zero weight; a grouped conv's input channel i is column i % per of its group's rows."""
    weight = constant_values(edit.node.inputs[edit.index])
    if edit.segments <= 1:
        other = tuple(a for a in range(weight.ndim) if a != edit.axis)
        return np.any(weight != 0, axis=other)[edit.indices]
    groups, per = edit.segments, weight.shape[1]
    rows = weight.shape[0] // groups
    blocks = weight.reshape(groups, rows, per, -1)
    by_channel = np.any(blocks != 0, axis=(1, 3)).reshape(-1)  # [groups * per]
    return by_channel[edit.indices]
