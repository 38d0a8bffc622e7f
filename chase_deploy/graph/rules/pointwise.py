"""Rules for ops that treat each channel on its own: the channel axis passes through unchanged.

Activations, norms, pools and reductions over other axes pass the track on; per-channel
constants (a norm's parameters, a scale added or multiplied in) are sliced with it. Elementwise
ops with two tracked inputs *couple* them: a residual Add or a squeeze-excitation Mul makes the
layers behind both inputs keep one set of channels. Any of these that reads or mixes the channel
axis itself stops the pass.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.graph.reading import constant_values
from chase_deploy.graph.registry import rule
from chase_deploy.graph.state import Live, PassState, Start
from chase_deploy.graph.stops import differs, unsupported, untracked
from chase_deploy.graph.tracks import Track, ValueEdit

UNARY = frozenset(
    "Relu LeakyRelu Sigmoid HardSigmoid HardSwish Tanh Clip Elu Selu Celu Softplus Softsign Gelu "
    "Mish Swish ThresholdedRelu Exp Log Abs Neg Sqrt Reciprocal Erf Floor Ceil Round Sign Sin Cos "
    "Identity Cast Dropout Not IsNaN IsInf Shrink".split()
)
ELEMENTWISE = frozenset("Add Sub Mul Div Pow Max Min Sum Mean PRelu Where And Or Xor Mod".split())
ADDITIVE = frozenset("Add Sub Sum".split())  # a coupling by one of these is a residual stream
POOLS = frozenset("MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool".split())
REDUCES = frozenset(
    "ReduceMean ReduceMax ReduceMin ReduceSum ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare".split()
)
NORMALIZE_OVER = frozenset("Softmax LogSoftmax Hardmax".split())


@rule(*sorted(UNARY))
def unary(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    if index != 0:
        raise unsupported(node, track, "takes pruned channels as a parameter")
    state.set(node.outputs[0], track)
    if node.op == "Dropout" and len(node.outputs) > 1:
        state.set(node.outputs[1], track)


@rule(*sorted(POOLS))
def pool(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    _, track = live[0]
    if track.axis != 1:
        raise unsupported(node, track, "pools over the channel axis")
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        raise unsupported(node, track, "returns pooling indices")
    state.set(node.outputs[0], track)


@rule("BatchNormalization")
def batchnorm(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    if index != 0 or track.axis != 1:
        raise unsupported(node, track, "normalizes over a non-channel axis")
    for i in range(1, 5):
        state.slice(node, i, 0, track.kept, track.labels, track=track)
    state.set(node.outputs[0], track)


@rule("InstanceNormalization")
def instancenorm(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    if index != 0 or track.axis != 1:
        raise unsupported(node, track, "normalizes over a non-channel axis")
    state.slice(node, 1, 0, track.kept, track.labels, track=track)
    state.slice(node, 2, 0, track.kept, track.labels, track=track)
    state.set(node.outputs[0], track)


@rule("LayerNormalization")
def layernorm(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    axis = node.attrs.get("axis", -1) % track.rank
    if index != 0 or track.axis >= axis:
        raise unsupported(
            node,
            track,
            "normalizes over the channel axis",
            " (removing channels would change its statistics)",
        )
    state.set(node.outputs[0], track)


@rule(*sorted(NORMALIZE_OVER))
def softmax(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    _, track = live[0]
    if state.graph.opset >= 13:
        touches = node.attrs.get("axis", -1) % track.rank == track.axis
    else:  # before opset 13 the op flattens every dim from ``axis`` on
        touches = node.attrs.get("axis", 1) % track.rank <= track.axis
    if touches:
        raise unsupported(node, track, "normalizes over the channel axis")
    state.set(node.outputs[0], track)


@rule("Shape")
def shape_of(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    """``Shape`` reads dims, not values: nothing to propagate (re-inference checks the rest)."""


@rule(*sorted(ELEMENTWISE))
def elementwise(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    """Broadcasting inputs: a second track couples, a per-channel constant is sliced, a
    broadcast (size-1) channel axis passes."""
    ref = live[0][1]
    ranks = [len(state.shape(node, t, ref)) for t in node.inputs if t.name]
    out_rank = max(ranks)
    out_axis = ref.axis + out_rank - ref.rank
    sources = set(ref.sources)
    for i, t in enumerate(node.inputs):
        if not t.name:
            continue
        shape = state.shape(node, t, ref)
        axis = out_axis - (out_rank - len(shape))
        if axis < 0:
            continue
        track = state.tracks.get(t.name)
        if track is not None:
            if track.axis != axis:
                raise unsupported(node, track, "mixes channel axes")
            if not track.same_channels(ref):
                raise differs(node, ref, track)
            if track is not ref:
                state.couple(ref, track, node)
            sources |= track.sources
        elif shape[axis] == 1:
            continue
        elif constant_values(t) is not None and shape[axis] == ref.width:
            state.slice(node, i, axis, ref.kept, ref.labels, track=ref)
        else:
            raise untracked(state.graph, node, ref, t)
    track = Track(out_axis, out_rank, ref.width, ref.kept, frozenset(sources), ref.labels)
    for out in node.outputs:
        state.set(out, track)


@rule(*sorted(REDUCES))
def reduce(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    axes = state.axes(node)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return state.set(node.outputs[0], track)
        raise unsupported(node, track, "reduces over all axes, including")
    axes = [a % track.rank for a in axes]
    if index != 0 or track.axis in axes:
        raise unsupported(node, track, "reduces")
    if node.attrs.get("keepdims", 1):
        return state.set(node.outputs[0], track)
    new_axis = track.axis - sum(a < track.axis for a in axes)
    state.set(node.outputs[0], track.moved(new_axis, track.rank - len(axes)))


@rule("Pad")
def pad(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    pads = node.attrs.get("pads")
    if pads is None and len(node.inputs) > 1:
        pads = constant_values(node.inputs[1])
    axes = state.axes_input(node, 3, track.rank)
    if index != 0 or pads is None:
        raise unsupported(node, track, "pads with computed pads")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    n = len(axes)
    if track.axis in axes:
        i = axes.index(track.axis)
        if pads[i] or pads[i + n]:
            raise unsupported(node, track, "pads")
    state.set(node.outputs[0], track)


@rule("Resize")
def resize(state: PassState, node: gs.Node, live: Live, start: Start | None) -> None:
    index, track = live[0]
    if index != 0:
        raise unsupported(node, track, "uses pruned channels as resize parameters")
    axes = [int(a) % track.rank for a in node.attrs.get("axes", range(track.rank))]
    if track.axis in axes:
        i = axes.index(track.axis)
        scales = _optional_constant(node, 2)
        sizes = _optional_constant(node, 3)
        if sizes is not None and sizes.size:
            if int(sizes[i]) != track.width:
                raise unsupported(node, track, "resizes")
            sizes = sizes.astype(np.int64).copy()
            sizes[i] = len(track.kept)
            state.flow.values.append(ValueEdit(node, 3, sizes))
        elif scales is None or not scales.size or float(scales[i]) != 1.0:
            raise unsupported(node, track, "resizes")
    state.set(node.outputs[0], track)


def _optional_constant(node: gs.Node, index: int) -> np.ndarray | None:
    if len(node.inputs) > index and node.inputs[index].name:
        return constant_values(node.inputs[index])
    return None
