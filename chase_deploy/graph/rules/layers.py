"""Rules for the layers: Conv, ConvTranspose, Gemm and MatMul with a constant weight.

A layer the plan names *starts* a track at its output and slices its weight rows (and bias); a
layer reading a track slices its weight columns and ends it. A depthwise conv carries the track
through (its filters and bias shrink, its ``group`` drops to the new width); a grouped conv
keeps, in each conv group, that group's own columns, so every group must keep as many channels
as the others (the track's sources then record the groups as ``segments``). Which weight axis
holds which channels is ``reading.weight_axes``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.reading import constant_values, static_shape, weight_axes
from chase_deploy.graph.registry import rule
from chase_deploy.graph.state import Live, PassState, Start
from chase_deploy.graph.stops import ChannelStop, unsupported
from chase_deploy.graph.tracks import AttrEdit, Track, expand, expand_labels
from train.errors import BadInput


def _check_data_input(node: gs.Node, live: Live, start: Start | None) -> None:
    """A layer reads tracked channels through its data input (0) only, never as a weight."""
    if start is None and live[0][0] != 0:
        raise unsupported(node, live[0][1], "takes pruned channels as a weight")


@rule("Conv", "ConvTranspose")
def conv(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    _check_data_input(node, live, start)
    weight = constant_values(node.inputs[1])
    if weight is None:
        raise BadInput(f"node {node.name} ({node.op}): its weight is computed, not a constant")
    transpose = node.op == "ConvTranspose"
    group = int(node.attrs.get("group", 1))
    out_axis, in_axis = weight_axes(node, weight)
    out_track = None
    x = live[0][1] if live else None
    if x is not None:
        if x.axis != 1:
            raise unsupported(node, x, "convolves over a non-channel axis")
        if group == 1:
            state.slice(node, 1, in_axis, x.kept, x.labels, track=x)
        elif group == x.width and weight.shape[in_axis] == (1 if not transpose else x.width):
            mult = weight.shape[out_axis] if transpose else weight.shape[0] // group
            out_kept = expand(x.kept, x.width, 1, mult)
            out_labels = expand_labels(x.labels, 1, mult)
            state.slice(node, 1, 0, out_kept if not transpose else x.kept, out_labels, track=x)
            state.slice(node, 2, 0, out_kept, out_labels, track=x)
            state.flow.attrs.append(AttrEdit(node, "group", len(x.kept)))
            out_track = Track(1, x.rank, x.width * mult, out_kept, x.sources, out_labels)
        elif not transpose:
            _grouped_columns(state, node, x, group)
        else:
            raise unsupported(
                node, x, f"is a grouped ConvTranspose (group={group}) and reads pruned channels"
            )
    if start is not None:
        key, kept = start
        width = weight.shape[out_axis]
        if group != 1 and (transpose or weight.shape[in_axis] == 1):
            raise ChannelStop(
                f"plan layer {key!r} is a depthwise or grouped transposed {node.op} "
                f"(group={group}): its output channels are its input's; prune the layer "
                f"that feeds it instead",
                node,
                frozenset([key]),
                f"a depthwise {node.op}: its channels are its input's (they go with the "
                f"layer that feeds it)",
            )
        rank = len(state.shape(node, node.outputs[0]))
        track = state.start_track(key, kept, 1, rank, width)
        if group != 1:
            _even(node, track, group)
            state.add_segments(track, group)
        state.slice(node, 1, out_axis, kept, track.labels, track=track)
        state.slice(node, 2, 0, kept, track.labels, track=track)
        out_track = track
    if out_track is not None:
        state.set(node.outputs[0], out_track)


def _even(node: gs.Node, track: Track, group: int) -> None:
    """A grouped conv needs the same number of channels in each of its groups."""
    counts = np.bincount(track.kept // (track.width // group), minlength=group)
    if len(set(counts.tolist())) > 1:
        raise ChannelStop(
            f"node {node.name} ({node.op}) is a grouped conv (group={group}) and the plan "
            f"keeps {counts.tolist()} channels of {track.describe()} in its groups; keep the "
            f"same number in every group",
            node,
            track.sources,
            f"node {node.name} is a grouped conv with uneven groups",
        )


def _grouped_columns(state: PassState, node: gs.Node, x: Track, group: int) -> None:
    """A grouped conv reading tracked channels: every conv group keeps the same count."""
    if x.width % group:
        raise unsupported(node, x, f"is a grouped conv (group={group}) that")
    _even(node, x, group)
    state.add_segments(x, group)
    state.slice(node, 1, 1, x.kept, x.labels, segments=group, track=x)


@rule("Gemm")
def gemm(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    _check_data_input(node, live, start)
    weight = constant_values(node.inputs[1])
    out_axis, in_axis = weight_axes(node, weight)
    x = live[0][1] if live else None
    if x is not None:
        if node.attrs.get("transA", 0) or x.axis != 1:
            raise unsupported(node, x, "multiplies along a transposed axis")
        state.slice(node, 1, in_axis, x.kept, x.labels, track=x)
    if start is not None:
        key, kept = start
        width = weight.shape[out_axis]
        track = state.start_track(key, kept, 1, 2, width)
        state.slice(node, 1, out_axis, kept, track.labels, track=track)
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = static_shape(node.inputs[2]) or []
            if bias and bias[-1] == width:
                state.slice(node, 2, len(bias) - 1, kept, track.labels, track=track)
        state.set(node.outputs[0], track)


@rule("MatMul")
def matmul(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    _check_data_input(node, live, start)
    weight = constant_values(node.inputs[1])
    x = live[0][1] if live else None
    if x is not None:
        if x.axis != x.rank - 1 or weight is None or weight.ndim < 2:
            raise unsupported(node, x, "multiplies along a non-channel axis")
        state.slice(node, 1, weight_axes(node, weight)[1], x.kept, x.labels, track=x)
    if start is not None:
        key, kept = start
        out_axis = weight_axes(node, weight)[0]
        rank = len(state.shape(node, node.outputs[0]))
        track = state.start_track(key, kept, rank - 1, rank, weight.shape[out_axis])
        state.slice(node, 1, out_axis, kept, track.labels, track=track)
        state.set(node.outputs[0], track)
