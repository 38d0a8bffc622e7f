"""Following kept channels through an ONNX graph, and deciding which constants shrink.

One forward pass in topological order. A *track* says which indices along one axis of a tensor
survive: a plan layer starts one at its output; channel-preserving ops pass it on; consumers
(Conv/ConvTranspose/Gemm/MatMul) slice their weight columns and end it; Flatten/Reshape and Concat
remap it; elementwise ops with two live inputs (a residual Add) *couple* them, which must then keep
the same indices. Anything else that reads a tracked axis stops the pass with a ``BadInput`` that
names the node. The pass only records edits; ``surgery`` applies them once everything is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from chase_deploy.channel_graph import constant_values, layer_name, static_shape, weight_axes
from train.errors import BadInput

UNARY = frozenset(
    "Relu LeakyRelu Sigmoid HardSigmoid HardSwish Tanh Clip Elu Selu Celu Softplus Softsign Gelu "
    "Mish Swish ThresholdedRelu Exp Log Abs Neg Sqrt Reciprocal Erf Floor Ceil Round Sign Sin Cos "
    "Identity Cast Dropout Not IsNaN IsInf Shrink".split()
)
ELEMENTWISE = frozenset("Add Sub Mul Div Pow Max Min Sum Mean PRelu Where And Or Xor Mod".split())
POOLS = frozenset("MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool".split())
REDUCES = frozenset(
    "ReduceMean ReduceMax ReduceMin ReduceSum ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare".split()
)
NORMALIZE_OVER = frozenset("Softmax LogSoftmax Hardmax".split())


@dataclass(frozen=True)
class Track:
    """Along ``axis`` of a rank-``rank`` tensor of size ``width``, indices ``kept`` survive;
    ``sources`` are the plan layers whose channels these are."""

    axis: int
    rank: int
    width: int
    kept: np.ndarray
    sources: frozenset[str]

    def same_channels(self, other: Track) -> bool:
        return self.width == other.width and np.array_equal(self.kept, other.kept)

    def moved(self, axis: int, rank: int) -> Track:
        return Track(axis, rank, self.width, self.kept, self.sources)

    def describe(self) -> str:
        return f"{', '.join(sorted(self.sources))} (keeps {len(self.kept)} of {self.width})"


@dataclass
class SliceEdit:
    """Keep ``indices`` along ``axis`` of the constant feeding ``node.inputs[index]``."""

    node: gs.Node
    index: int
    axis: int
    indices: np.ndarray


@dataclass
class ValueEdit:
    """Replace the constant feeding ``node.inputs[index]`` (a shape or sizes vector)."""

    node: gs.Node
    index: int
    values: np.ndarray


@dataclass
class Flow:
    """The result of the pass: edits to apply and which plan layers ended up coupled."""

    slices: list[SliceEdit] = field(default_factory=list)
    values: list[ValueEdit] = field(default_factory=list)
    groups: list[tuple[gs.Node, int]] = field(default_factory=list)
    coupled: list[frozenset[str]] = field(default_factory=list)


def expand(kept: np.ndarray, width: int, outer: int, inner: int) -> np.ndarray:
    """Indices along an axis laid out as (outer, width, inner) that belong to ``kept`` channels."""
    idx = (
        np.arange(outer)[:, None, None] * (width * inner)
        + kept[None, :, None] * inner
        + np.arange(inner)[None, None, :]
    )
    return idx.reshape(-1).astype(np.int64)


class ChannelPass:
    """Walks the graph once; ``starts`` maps ``id(node)`` of each producing node to (plan key,
    kept indices)."""

    def __init__(self, graph: gs.Graph, starts: dict[int, tuple[str, np.ndarray]]) -> None:
        self.graph = graph
        self.starts = starts
        self.tracks: dict[str, Track] = {}
        self.flow = Flow()
        self._links: dict[str, str] = {}

    # -- driver -------------------------------------------------------------------------------

    def run(self) -> Flow:
        for node in self.graph.nodes:
            start = self.starts.get(id(node))
            live = [
                (i, self.tracks[t.name]) for i, t in enumerate(node.inputs) if t.name in self.tracks
            ]
            if start is None and not live:
                continue
            rule = _RULES.get(node.op)
            if node.op in UNARY:
                rule = ChannelPass._unary
            if rule is None:
                _, track = live[0]
                raise self._unsupported(node, track, "is an op chase-deploy does not slim through")
            if start is None and node.op in _LAYER_RULES and live[0][0] != 0:
                raise self._unsupported(node, live[0][1], "takes pruned channels as a weight")
            rule(self, node, live, start)
        self._check_outputs()
        self.flow.coupled = self._coupled_sets()
        return self.flow

    def _check_outputs(self) -> None:
        for out in self.graph.outputs:
            track = self.tracks.get(out.name)
            if track is not None and len(track.kept) < track.width:
                raise BadInput(
                    f"pruning {track.describe()} would change the graph output {out.name!r}; "
                    f"leave the layers that feed the output out of the plan"
                )

    # -- helpers ------------------------------------------------------------------------------

    def _set(self, tensor: gs.Tensor, track: Track) -> None:
        self.tracks[tensor.name] = track

    def _slice(self, node: gs.Node, index: int, axis: int, indices: np.ndarray) -> None:
        if index < len(node.inputs) and node.inputs[index].name:
            if constant_values(node.inputs[index]) is None:
                raise BadInput(
                    f"node {node.name} ({node.op}): input {node.inputs[index].name!r} must be a "
                    f"constant to slice it for pruned channels, but it is computed"
                )
            self.flow.slices.append(SliceEdit(node, index, axis, indices))

    def _couple(self, a: Track, b: Track) -> None:
        for x in a.sources | b.sources:
            self._union(next(iter(a.sources)), x)

    def _find(self, key: str) -> str:
        while self._links.get(key, key) != key:
            key = self._links[key]
        return key

    def _union(self, a: str, b: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._links[rb] = ra

    def _coupled_sets(self) -> list[frozenset[str]]:
        sets: dict[str, set[str]] = {}
        for key in set(self._links) | set(self._links.values()):
            sets.setdefault(self._find(key), set()).add(key)
        return [frozenset(s) for s in sets.values() if len(s) > 1]

    def _shape(self, node: gs.Node, tensor: gs.Tensor) -> list:
        shape = static_shape(tensor)
        if shape is None:
            raise BadInput(
                f"node {node.name} ({node.op}): the shape of {tensor.name!r} is unknown after ONNX "
                f"shape inference, so its channel axis cannot be followed; export with static shapes"
            )
        return shape

    def _unsupported(self, node: gs.Node, track: Track, why: str) -> BadInput:
        return BadInput(
            f"node {node.name} ({node.op}) {why} on the channel axis of {track.describe()}; "
            f"chase-deploy cannot slim through it: leave those layers out of the plan"
        )

    def _mismatch(self, node: gs.Node, a: Track, other: str) -> BadInput:
        return BadInput(
            f"node {node.name} ({node.op}) couples {a.describe()} with {other}: layers feeding "
            f"the same stream must list the same kept set in the plan (or none of them)"
        )

    def _differs(self, node: gs.Node, a: Track, b: Track) -> BadInput:
        first = int(np.setxor1d(a.kept, b.kept)[0]) if a.width == b.width else None
        where = f"; they disagree on channel {first}" if first is not None else ""
        return self._mismatch(node, a, b.describe() + where)

    def _upstream_layers(self, tensor: gs.Tensor, limit: int = 4) -> str:
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
                if not isinstance(t, gs.Constant) and t in self.graph.inputs:
                    found.append(f"graph input {t.name}")
                continue
            node = t.inputs[0]
            if node.op in _LAYER_RULES:
                found.append(layer_name(node))
                continue
            todo.extend(i for i in node.inputs if not isinstance(i, gs.Constant))
        names = ", ".join(dict.fromkeys(found)) or tensor.name
        return f"{names} (not in the plan: keeps every channel)"

    # -- rules: pass-through ------------------------------------------------------------------

    def _unary(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0:
            raise self._unsupported(node, track, "takes pruned channels as a parameter")
        self._set(node.outputs[0], track)
        if node.op == "Dropout" and len(node.outputs) > 1:
            self._set(node.outputs[1], track)

    def _pool(self, node: gs.Node, live: list, start) -> None:
        _, track = live[0]
        if track.axis != 1:
            raise self._unsupported(node, track, "pools over the channel axis")
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            raise self._unsupported(node, track, "returns pooling indices")
        self._set(node.outputs[0], track)

    def _batchnorm(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0 or track.axis != 1:
            raise self._unsupported(node, track, "normalizes over a non-channel axis")
        for i in range(1, 5):
            self._slice(node, i, 0, track.kept)
        self._set(node.outputs[0], track)

    def _instancenorm(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0 or track.axis != 1:
            raise self._unsupported(node, track, "normalizes over a non-channel axis")
        self._slice(node, 1, 0, track.kept)
        self._slice(node, 2, 0, track.kept)
        self._set(node.outputs[0], track)

    def _layernorm(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        axis = node.attrs.get("axis", -1) % track.rank
        if index != 0 or track.axis >= axis:
            raise self._unsupported(node, track, "normalizes over the channel axis")
        self._set(node.outputs[0], track)

    def _softmax(self, node: gs.Node, live: list, start) -> None:
        _, track = live[0]
        if self.graph.opset >= 13:
            touches = node.attrs.get("axis", -1) % track.rank == track.axis
        else:  # before opset 13 the op flattens every dim from ``axis`` on
            touches = node.attrs.get("axis", 1) % track.rank <= track.axis
        if touches:
            raise self._unsupported(node, track, "normalizes over the channel axis")
        self._set(node.outputs[0], track)

    def _shape_of(self, node: gs.Node, live: list, start) -> None:
        """``Shape`` reads dims, not values: nothing to propagate (re-inference checks the rest)."""

    # -- rules: elementwise and concat --------------------------------------------------------

    def _elementwise(self, node: gs.Node, live: list, start) -> None:
        ref = live[0][1]
        ranks = [len(self._shape(node, t)) for t in node.inputs if t.name]
        out_rank = max(ranks)
        out_axis = ref.axis + out_rank - ref.rank
        sources = set(ref.sources)
        for i, t in enumerate(node.inputs):
            if not t.name:
                continue
            shape = self._shape(node, t)
            axis = out_axis - (out_rank - len(shape))
            if axis < 0:
                continue
            track = self.tracks.get(t.name)
            if track is not None:
                if track.axis != axis:
                    raise self._unsupported(node, track, "mixes channel axes")
                if not track.same_channels(ref):
                    raise self._differs(node, ref, track)
                self._couple(ref, track)
                sources |= track.sources
            elif shape[axis] == 1:
                continue
            elif constant_values(t) is not None and shape[axis] == ref.width:
                self._slice(node, i, axis, ref.kept)
            else:
                raise self._mismatch(node, ref, self._upstream_layers(t))
        track = Track(out_axis, out_rank, ref.width, ref.kept, frozenset(sources))
        for out in node.outputs:
            self._set(out, track)

    def _concat(self, node: gs.Node, live: list, start) -> None:
        ref = live[0][1]
        axis = node.attrs["axis"] % ref.rank
        if any(track.axis != axis for _, track in live):
            return self._elementwise(node, live, start)
        parts: list[np.ndarray] = []
        offset = 0
        sources: set[str] = set()
        for t in node.inputs:
            track = self.tracks.get(t.name)
            if track is not None:
                parts.append(track.kept + offset)
                sources |= track.sources
                offset += track.width
                continue
            dim = self._shape(node, t)[axis]
            if not isinstance(dim, int):
                raise self._unsupported(node, ref, f"concatenates {t.name!r} of unknown size")
            parts.append(np.arange(dim) + offset)
            offset += dim
        kept = np.concatenate(parts).astype(np.int64)
        self._set(node.outputs[0], Track(axis, ref.rank, offset, kept, frozenset(sources)))

    # -- rules: shape ops ---------------------------------------------------------------------

    def _flatten(self, node: gs.Node, live: list, start) -> None:
        _, track = live[0]
        shape = self._shape(node, node.inputs[0])
        f = node.attrs.get("axis", 1) % track.rank if track.rank else 0
        if track.axis < f:
            raise self._unsupported(node, track, "merges the channel axis into the batch axis")
        self._set(node.outputs[0], self._merged(node, track, shape, f, track.rank).moved(1, 2))

    def _merged(self, node: gs.Node, track: Track, shape: list, lo: int, hi: int) -> Track:
        """The track after dims ``lo..hi-1`` (which hold the channel axis) merge into one."""
        outer_dims, inner_dims = shape[lo : track.axis], shape[track.axis + 1 : hi]
        if not all(isinstance(d, int) for d in outer_dims + inner_dims):
            raise self._unsupported(node, track, "flattens dims of unknown size with")
        outer, inner = int(np.prod(outer_dims)), int(np.prod(inner_dims))
        kept = expand(track.kept, track.width, outer, inner)
        return Track(
            lo, track.rank - (hi - lo) + 1, outer * track.width * inner, kept, track.sources
        )

    def _reshape(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0:
            raise self._unsupported(node, track, "uses pruned channels as a shape")
        ins, outs = self._shape(node, node.inputs[0]), self._shape(node, node.outputs[0])
        target = self._reshape_target(ins, outs, track)
        if target is None and not all(isinstance(d, int) for d in ins[1:] + outs[1:]):
            raise BadInput(
                f"node {node.name} ({node.op}) reshapes {ins} to {outs} on the channel axis of "
                f"{track.describe()}: dims of unknown size, as in an export with dynamic "
                f"height/width, hide how channels map to features; export with a fixed "
                f"height/width (a flattening classifier reads one size only)"
            )
        if target is None:
            raise self._unsupported(node, track, f"reshapes {ins} to {outs}, which splits or moves")
        axis, merged_to = target
        new = self._merged(node, track, ins, track.axis, merged_to).moved(axis, len(outs))
        self._set(node.outputs[0], new)
        spec = constant_values(node.inputs[1])
        if spec is None:
            raise self._unsupported(node, track, "reshapes to a computed shape")
        spec = spec.astype(np.int64).copy()
        if spec[axis] == 0 and not (axis == track.axis and merged_to == track.axis + 1):
            raise self._unsupported(node, track, "reshapes with a copied (0) dim")
        if spec[axis] > 0:
            spec[axis] = len(new.kept)
            self.flow.values.append(ValueEdit(node, 1, spec))

    @staticmethod
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

    def _squeeze(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        axes = self._axes(node)
        if axes is None:
            shape = self._shape(node, node.inputs[0])
            axes = [i for i, d in enumerate(shape) if d == 1]
        axes = [a % track.rank for a in axes]
        if index != 0 or track.axis in axes:
            raise self._unsupported(node, track, "squeezes")
        new_axis = track.axis - sum(a < track.axis for a in axes)
        self._set(node.outputs[0], track.moved(new_axis, track.rank - len(axes)))

    def _unsqueeze(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        axes = self._axes(node)
        if index != 0 or axes is None:
            raise self._unsupported(node, track, "unsqueezes")
        rank = track.rank + len(axes)
        axes = sorted(a % rank for a in axes)
        kept_positions = [i for i in range(rank) if i not in axes]
        self._set(node.outputs[0], track.moved(kept_positions[track.axis], rank))

    def _transpose(self, node: gs.Node, live: list, start) -> None:
        _, track = live[0]
        perm = list(node.attrs.get("perm", range(track.rank)[::-1]))
        if perm.index(track.axis) != track.axis:
            raise self._unsupported(node, track, "moves the channel axis")
        self._set(node.outputs[0], track)

    def _axes(self, node: gs.Node) -> list[int] | None:
        if "axes" in node.attrs:
            return [int(a) for a in node.attrs["axes"]]
        if len(node.inputs) > 1 and node.inputs[1].name:
            values = constant_values(node.inputs[1])
            if values is None:
                raise BadInput(f"node {node.name} ({node.op}): computed axes are not supported")
            return [int(a) for a in values.reshape(-1)]
        return None

    def _reduce(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        axes = self._axes(node)
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return self._set(node.outputs[0], track)
            raise self._unsupported(node, track, "reduces over all axes, including")
        axes = [a % track.rank for a in axes]
        if index != 0 or track.axis in axes:
            raise self._unsupported(node, track, "reduces")
        if node.attrs.get("keepdims", 1):
            return self._set(node.outputs[0], track)
        new_axis = track.axis - sum(a < track.axis for a in axes)
        self._set(node.outputs[0], track.moved(new_axis, track.rank - len(axes)))

    def _slice_op(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        axes = None
        if len(node.inputs) > 3 and node.inputs[3].name:
            values = constant_values(node.inputs[3])
            axes = None if values is None else [int(a) % track.rank for a in values]
        elif len(node.inputs) > 1:
            starts = constant_values(node.inputs[1])
            axes = None if starts is None else list(range(len(starts)))
        if index != 0 or axes is None or track.axis in axes:
            raise self._unsupported(node, track, "slices")
        self._set(node.outputs[0], track)

    def _split(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0 or node.attrs.get("axis", 0) % track.rank == track.axis:
            raise self._unsupported(node, track, "splits")
        for out in node.outputs:
            self._set(out, track)

    def _pad(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        pads = node.attrs.get("pads")
        if pads is None and len(node.inputs) > 1:
            pads = constant_values(node.inputs[1])
        axes = self._axes_input(node, 3, track.rank)
        if index != 0 or pads is None:
            raise self._unsupported(node, track, "pads with computed pads")
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        n = len(axes)
        if track.axis in axes:
            i = axes.index(track.axis)
            if pads[i] or pads[i + n]:
                raise self._unsupported(node, track, "pads")
        self._set(node.outputs[0], track)

    def _axes_input(self, node: gs.Node, index: int, rank: int) -> list[int]:
        if len(node.inputs) > index and node.inputs[index].name:
            values = constant_values(node.inputs[index])
            if values is None:
                raise BadInput(f"node {node.name} ({node.op}): computed axes are not supported")
            return [int(a) % rank for a in values.reshape(-1)]
        return list(range(rank))

    def _resize(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0:
            raise self._unsupported(node, track, "uses pruned channels as resize parameters")
        axes = [int(a) % track.rank for a in node.attrs.get("axes", range(track.rank))]
        if track.axis in axes:
            i = axes.index(track.axis)
            scales = (
                constant_values(node.inputs[2])
                if len(node.inputs) > 2 and node.inputs[2].name
                else None
            )
            sizes = (
                constant_values(node.inputs[3])
                if len(node.inputs) > 3 and node.inputs[3].name
                else None
            )
            if sizes is not None and sizes.size:
                if int(sizes[i]) != track.width:
                    raise self._unsupported(node, track, "resizes")
                sizes = sizes.astype(np.int64).copy()
                sizes[i] = len(track.kept)
                self.flow.values.append(ValueEdit(node, 3, sizes))
            elif scales is None or not scales.size or float(scales[i]) != 1.0:
                raise self._unsupported(node, track, "resizes")
        self._set(node.outputs[0], track)

    # -- rules: layers ------------------------------------------------------------------------

    def _conv(self, node: gs.Node, live: list, start) -> None:
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
                raise self._unsupported(node, x, "convolves over a non-channel axis")
            if group == 1:
                self._slice(node, 1, in_axis, x.kept)
            elif group == x.width and weight.shape[in_axis] == (1 if not transpose else x.width):
                mult = weight.shape[out_axis] if transpose else weight.shape[0] // group
                out_kept = expand(x.kept, x.width, 1, mult)
                self._slice(node, 1, 0, out_kept if not transpose else x.kept)
                self._slice(node, 2, 0, out_kept)
                self.flow.groups.append((node, len(x.kept)))
                out_track = Track(1, x.rank, x.width * mult, out_kept, x.sources)
            else:
                raise self._unsupported(
                    node, x, f"is a grouped conv (group={group}) and reads pruned channels"
                )
        if start is not None:
            key, kept = start
            if group != 1:
                raise BadInput(
                    f"plan layer {key!r} is a grouped/depthwise {node.op} (group={group}); prune "
                    f"the layer that feeds it instead"
                )
            self._slice(node, 1, out_axis, kept)
            self._slice(node, 2, 0, kept)
            rank = len(self._shape(node, node.outputs[0]))
            out_track = Track(1, rank, weight.shape[out_axis], kept, frozenset([key]))
        if out_track is not None:
            self._set(node.outputs[0], out_track)

    def _gemm(self, node: gs.Node, live: list, start) -> None:
        weight = constant_values(node.inputs[1])
        out_axis, in_axis = weight_axes(node, weight)
        x = live[0][1] if live else None
        if x is not None:
            if node.attrs.get("transA", 0) or x.axis != 1:
                raise self._unsupported(node, x, "multiplies along a transposed axis")
            self._slice(node, 1, in_axis, x.kept)
        if start is not None:
            key, kept = start
            width = weight.shape[out_axis]
            self._slice(node, 1, out_axis, kept)
            if len(node.inputs) > 2 and node.inputs[2].name:
                bias = static_shape(node.inputs[2]) or []
                if bias and bias[-1] == width:
                    self._slice(node, 2, len(bias) - 1, kept)
            self._set(node.outputs[0], Track(1, 2, width, kept, frozenset([key])))

    def _matmul(self, node: gs.Node, live: list, start) -> None:
        weight = constant_values(node.inputs[1])
        x = live[0][1] if live else None
        if x is not None:
            if x.axis != x.rank - 1 or weight is None or weight.ndim < 2:
                raise self._unsupported(node, x, "multiplies along a non-channel axis")
            self._slice(node, 1, weight_axes(node, weight)[1], x.kept)
        if start is not None:
            key, kept = start
            out_axis = weight_axes(node, weight)[0]
            self._slice(node, 1, out_axis, kept)
            rank = len(self._shape(node, node.outputs[0]))
            self._set(
                node.outputs[0],
                Track(rank - 1, rank, weight.shape[out_axis], kept, frozenset([key])),
            )


_LAYER_RULES = {
    "Conv": ChannelPass._conv,
    "ConvTranspose": ChannelPass._conv,
    "Gemm": ChannelPass._gemm,
    "MatMul": ChannelPass._matmul,
}

_RULES = {
    **_LAYER_RULES,
    **{op: ChannelPass._pool for op in POOLS},
    **{op: ChannelPass._reduce for op in REDUCES},
    **{op: ChannelPass._elementwise for op in ELEMENTWISE},
    **{op: ChannelPass._softmax for op in NORMALIZE_OVER},
    "BatchNormalization": ChannelPass._batchnorm,
    "InstanceNormalization": ChannelPass._instancenorm,
    "LayerNormalization": ChannelPass._layernorm,
    "Concat": ChannelPass._concat,
    "Flatten": ChannelPass._flatten,
    "Reshape": ChannelPass._reshape,
    "Squeeze": ChannelPass._squeeze,
    "Unsqueeze": ChannelPass._unsqueeze,
    "Transpose": ChannelPass._transpose,
    "Slice": ChannelPass._slice_op,
    "Split": ChannelPass._split,
    "Pad": ChannelPass._pad,
    "Resize": ChannelPass._resize,
    "Shape": ChannelPass._shape_of,
}
