"""Rules for ops that move channels to other positions: the track is remapped.

Flatten and Reshape merge the channel axis with the dims after it (a channel becomes a block of
features) and rewrite a constant target shape; Squeeze, Unsqueeze and Transpose move the axis;
Concat places each input's channels at its offset; a Slice or Split on the channel axis keeps
the part it selects and rewrites its bounds or sizes; a channel shuffle (Reshape, Transpose,
Reshape) permutes the kept channels when every shuffle group keeps the same offsets.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.reading import constant_values
from chase_deploy.graph.registry import rule
from chase_deploy.graph.rules.pointwise import elementwise
from chase_deploy.graph.state import Live, PassState, Start
from chase_deploy.graph.stops import ChannelStop, unsupported
from chase_deploy.graph.tracks import AttrEdit, Track, ValueEdit, expand, expand_labels
from train.errors import BadInput


@rule("Concat")
def concat(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    ref = live[0][1]
    axis = node.attrs["axis"] % ref.rank
    if any(track.axis != axis for _, track in live):
        return elementwise(state, node, live, start)
    parts: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    offset = 0
    sources: set[str] = set()
    for t in node.inputs:
        track = state.tracks.get(t.name)
        if track is not None:
            parts.append(track.kept + offset)
            labels.append(track.labels)
            sources |= track.sources
            offset += track.width
            continue
        dim = state.shape(node, t, ref)[axis]
        if not isinstance(dim, int):
            raise unsupported(node, ref, f"concatenates {t.name!r} of unknown size")
        parts.append(np.arange(dim) + offset)
        labels.append(np.full(dim, -1, dtype=np.int64))
        offset += dim
    kept = np.concatenate(parts).astype(np.int64)
    track = Track(axis, ref.rank, offset, kept, frozenset(sources), np.concatenate(labels))
    state.set(node.outputs[0], track)


@rule("Flatten")
def flatten(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    _, track = live[0]
    shape = state.shape(node, node.inputs[0], track)
    f = node.attrs.get("axis", 1) % track.rank if track.rank else 0
    if track.axis < f:
        raise unsupported(node, track, "merges the channel axis into the batch axis")
    state.set(node.outputs[0], _merged(node, track, shape, f, track.rank).moved(1, 2))


def _merged(node: gs.Node, track: Track, shape: list, lo: int, hi: int) -> Track:
    """The track after dims ``lo..hi-1`` (which hold the channel axis) merge into one."""
    outer_dims, inner_dims = shape[lo : track.axis], shape[track.axis + 1 : hi]
    if not all(isinstance(d, int) for d in outer_dims + inner_dims):
        raise unsupported(node, track, "flattens dims of unknown size with")
    outer, inner = int(np.prod(outer_dims)), int(np.prod(inner_dims))
    kept = expand(track.kept, track.width, outer, inner)
    labels = expand_labels(track.labels, outer, inner)
    width = outer * track.width * inner
    return Track(lo, track.rank - (hi - lo) + 1, width, kept, track.sources, labels)


@rule("Reshape")
def reshape(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    if index != 0:
        raise unsupported(node, track, "uses pruned channels as a shape")
    ins = state.shape(node, node.inputs[0], track)
    outs = state.shape(node, node.outputs[0], track)
    pattern = _shuffle_pattern(state, node, ins, outs, track)
    if pattern is not None:
        return _shuffle(state, node, track, *pattern)
    target = _reshape_target(ins, outs, track)
    if target is None and not all(isinstance(d, int) for d in ins[1:] + outs[1:]):
        raise BadInput(
            f"node {node.name} ({node.op}) reshapes {ins} to {outs} on the channel axis of "
            f"{track.describe()}: dims of unknown size, as in an export with dynamic "
            f"height/width, hide how channels map to features; export with a fixed "
            f"height/width (a flattening classifier reads one size only)"
        )
    if target is None:
        raise unsupported(node, track, f"reshapes {ins} to {outs}, which splits or moves")
    axis, merged_to = target
    new = _merged(node, track, ins, track.axis, merged_to).moved(axis, len(outs))
    state.set(node.outputs[0], new)
    spec = constant_values(node.inputs[1])
    if spec is None:
        raise unsupported(node, track, "reshapes to a computed shape")
    spec = spec.astype(np.int64).copy()
    if spec[axis] == 0 and not (axis == track.axis and merged_to == track.axis + 1):
        raise unsupported(node, track, "reshapes with a copied (0) dim")
    if spec[axis] > 0:
        spec[axis] = len(new.kept)
        state.flow.values.append(ValueEdit(node, 1, spec))


def _reshape_target(ins: list, outs: list, track: Track) -> tuple[int, int] | None:
    """(output axis, end of merged input dims) when the reshape only regroups dims before the
    channel axis and merges it with the dims right after it; else None."""

    def prod(dims: list) -> int | None:
        return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else None

    same_batch = (
        ins
        and outs
        and (ins[0] == outs[0] or not isinstance(ins[0], int) and not isinstance(outs[0], int))
    )
    if not same_batch:
        return None
    before = prod(ins[1 : track.axis])
    for axis in range(1, len(outs)):
        if prod(outs[1:axis]) != before or not isinstance(outs[axis], int):
            continue
        for end in range(track.axis + 1, len(ins) + 1):
            merged = prod(ins[track.axis : end])
            if merged == outs[axis] and prod(ins[end:]) == prod(outs[axis + 1 :]):
                return axis, end
    return None


def _shuffle_pattern(
    state: PassState, node: gs.Node, ins: list, outs: list, track: Track
) -> tuple[int, gs.Node, gs.Node] | None:
    """A channel shuffle: Reshape splitting the channel axis C into (g, C/g), a Transpose
    swapping those two axes, a Reshape merging them back. Returns (g, transpose, reshape)."""
    a = track.axis
    if len(outs) != len(ins) + 1 or outs[:a] != ins[:a] or outs[a + 2 :] != ins[a + 1 :]:
        return None
    g, n = outs[a], outs[a + 1]
    if not (isinstance(g, int) and isinstance(n, int) and g * n == track.width and g > 1):
        return None
    users = node.outputs[0].outputs
    if len(users) != 1 or users[0].op != "Transpose":
        return None
    transpose = users[0]
    perm = list(transpose.attrs.get("perm", []))
    swapped = list(range(len(outs)))
    swapped[a], swapped[a + 1] = a + 1, a
    if perm != swapped:
        return None
    after = transpose.outputs[0].outputs
    if len(after) != 1 or after[0].op != "Reshape":
        return None
    back = state.shape(after[0], after[0].outputs[0], track)
    if back != ins:
        return None
    return g, transpose, after[0]


def _shuffle(
    state: PassState, node: gs.Node, track: Track, g: int, transpose: gs.Node, back: gs.Node
) -> None:
    """Channel c = i·n + j lands at j·g + i. Lossless on the slim tensor only when every one
    of the g slices keeps the same offsets (the shuffle then permutes exactly the kept ones)."""
    if state.probe:
        raise unsupported(node, track, f"shuffles the channels in {g} groups")
    n = track.width // g
    slices = [set((track.kept[track.kept // n == i] % n).tolist()) for i in range(g)]
    if any(s != slices[0] for s in slices[1:]):
        raise ChannelStop(
            f"node {node.name} (Reshape) is a channel shuffle over {g} groups of {n} and the "
            f"plan keeps different channels in each group ({track.describe()}); a shuffle "
            f"stays exact only when every group keeps the same offsets: keep a symmetric set "
            f"or leave those layers out of the plan",
            node,
            track.sources,
            f"node {node.name} (Reshape) shuffles the channels in {g} groups",
        )
    m = len(slices[0])
    for reshape_node, axis, value in ((node, track.axis + 1, m), (back, track.axis, g * m)):
        spec = constant_values(reshape_node.inputs[1])
        if spec is None:
            raise unsupported(reshape_node, track, "shuffles channels with a computed shape")
        spec = spec.astype(np.int64).copy()
        if spec[axis] == 0:
            raise unsupported(reshape_node, track, "shuffles channels with a copied (0) dim")
        if spec[axis] > 0:
            spec[axis] = value
            state.flow.values.append(ValueEdit(reshape_node, 1, spec))
    position = (track.kept % n) * g + track.kept // n
    order = np.argsort(position, kind="stable")
    new = Track(
        track.axis,
        track.rank,
        track.width,
        position[order].astype(np.int64),
        track.sources,
        track.labels[order],
    )
    state.set(back.outputs[0], new)


@rule("Squeeze")
def squeeze(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    axes = state.axes(node)
    if axes is None:
        shape = state.shape(node, node.inputs[0], track)
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = [a % track.rank for a in axes]
    if index != 0 or track.axis in axes:
        raise unsupported(node, track, "squeezes")
    new_axis = track.axis - sum(a < track.axis for a in axes)
    state.set(node.outputs[0], track.moved(new_axis, track.rank - len(axes)))


@rule("Unsqueeze")
def unsqueeze(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    axes = state.axes(node)
    if index != 0 or axes is None:
        raise unsupported(node, track, "unsqueezes")
    rank = track.rank + len(axes)
    axes = sorted(a % rank for a in axes)
    kept_positions = [i for i in range(rank) if i not in axes]
    state.set(node.outputs[0], track.moved(kept_positions[track.axis], rank))


@rule("Transpose")
def transpose(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    _, track = live[0]
    perm = list(node.attrs.get("perm", range(track.rank)[::-1]))
    state.set(node.outputs[0], track.moved(perm.index(track.axis), track.rank))


def _part(node: gs.Node, track: Track, lo: int, hi: int) -> Track | None:
    """The track of channels [lo, hi) of ``track`` re-indexed from 0 (None: nothing pruned
    there, the part is unchanged)."""
    inside = (track.kept >= lo) & (track.kept < hi)
    if not inside.any():
        raise unsupported(node, track, f"selects channels {lo}..{hi - 1}, all pruned,")
    kept = track.kept[inside] - lo
    if len(kept) == hi - lo:
        return None
    return Track(track.axis, track.rank, hi - lo, kept, track.sources, track.labels[inside])


@rule("Slice")
def slice_op(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    if index != 0:
        raise unsupported(node, track, "uses pruned channels as slice bounds")
    values = [
        constant_values(node.inputs[i]) if len(node.inputs) > i and node.inputs[i].name else None
        for i in range(5)
    ]
    starts, ends = values[1], values[2]
    if starts is None or ends is None:
        raise unsupported(node, track, "slices with computed bounds")
    axes = values[3] if values[3] is not None else np.arange(len(starts))
    axes = [int(a) % track.rank for a in np.asarray(axes).reshape(-1)]
    if track.axis not in axes:
        return state.set(node.outputs[0], track)
    if state.probe:
        raise unsupported(node, track, "slices")
    i = axes.index(track.axis)
    steps = values[4] if values[4] is not None else np.ones(len(axes), dtype=np.int64)
    lo, hi, step = slice(int(starts[i]), int(ends[i]), int(steps[i])).indices(track.width)
    if step != 1:
        raise unsupported(node, track, f"slices with step {step}")
    part = _part(node, track, lo, max(lo, hi))
    if part is None:
        return
    new_lo = int(np.sum(track.kept < lo))
    new_hi = int(np.sum(track.kept < hi))
    for j, value in ((1, new_lo), (2, new_hi)):
        spec = np.asarray(values[j]).astype(np.int64).copy()
        spec[i] = value
        state.flow.values.append(ValueEdit(node, j, spec))
    state.set(node.outputs[0], part)


@rule("Split")
def split(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    if index != 0:
        raise unsupported(node, track, "uses pruned channels as split sizes")
    if node.attrs.get("axis", 0) % track.rank != track.axis:
        for out in node.outputs:
            state.set(out, track)
        return
    if state.probe:
        raise unsupported(node, track, "splits")
    if len(node.inputs) > 1 and node.inputs[1].name:
        sizes = constant_values(node.inputs[1])
        if sizes is None:
            raise unsupported(node, track, "splits with computed sizes")
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    elif "split" in node.attrs:
        raise unsupported(node, track, "splits (opset < 13 split attribute)")
    else:
        count = len(node.outputs)
        size = -(-track.width // count)
        sizes = [min(size, track.width - k * size) for k in range(count)]
    bounds = np.cumsum([0, *sizes])
    new_sizes = []
    for k, out in enumerate(node.outputs):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        part = _part(node, track, lo, hi)
        new_sizes.append(hi - lo if part is None else len(part.kept))
        if part is not None:
            state.set(out, part)
    sizes_value = np.asarray(new_sizes, dtype=np.int64)
    if len(node.inputs) > 1 and node.inputs[1].name:
        state.flow.values.append(ValueEdit(node, 1, sizes_value))
    else:
        state.flow.values.append(ValueEdit(node, len(node.inputs), sizes_value))
        state.flow.attrs.append(AttrEdit(node, "num_outputs", None))
