"""Following kept channels through an ONNX graph, and deciding which constants shrink.

One forward pass in topological order. A *track* says which indices along one axis of a tensor
survive: a plan layer starts one at its output; channel-preserving ops pass it on; consumers
(Conv/ConvTranspose/Gemm/MatMul) slice their weight columns and end it; Flatten/Reshape and Concat
remap it; a Slice/Split on the channel axis keeps the part it selects; a channel shuffle permutes
it; elementwise ops with two live inputs (a residual Add, a squeeze-excitation Mul) *couple* them,
which must then keep the same indices. Anything else that reads a tracked axis stops the pass with
a ``ChannelStop`` (a ``BadInput``) that names the node. The pass only records edits; ``surgery``
applies them once everything is known.

The same pass serves two callers. ``surgery`` starts it from a plan's kept sets. The group
analysis (``channel_groups``) starts it in *probe* mode from every layer at once with every channel
kept, as if all were to be pruned: each kept index carries a *label* (which layer's channel it is),
so the recorded edits say which member of which group reads or writes each channel, and every
stop names the layers it excludes.
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
ADDITIVE = frozenset("Add Sub Sum".split())  # a coupling by one of these is a residual stream
POOLS = frozenset("MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool".split())
REDUCES = frozenset(
    "ReduceMean ReduceMax ReduceMin ReduceSum ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare".split()
)
NORMALIZE_OVER = frozenset("Softmax LogSoftmax Hardmax".split())
SOURCE_BITS = 32  # label = source id << SOURCE_BITS | channel; -1 for untracked positions


class ChannelStop(BadInput):
    """The pass cannot follow the channels of ``sources`` through ``node`` (``reason`` says why)."""

    def __init__(self, message: str, node: gs.Node | None, sources: frozenset[str], reason: str):
        super().__init__(message)
        self.node = node
        self.sources = sources
        self.reason = reason


@dataclass(frozen=True)
class Track:
    """Along ``axis`` of a rank-``rank`` tensor of size ``width``, indices ``kept`` survive;
    ``sources`` are the plan layers whose channels these are, ``labels`` (aligned with ``kept``)
    say which channel of which source each kept index carries (-1: not a tracked channel)."""

    axis: int
    rank: int
    width: int
    kept: np.ndarray
    sources: frozenset[str]
    labels: np.ndarray

    def same_channels(self, other: Track) -> bool:
        return self.width == other.width and np.array_equal(self.kept, other.kept)

    def moved(self, axis: int, rank: int) -> Track:
        return Track(axis, rank, self.width, self.kept, self.sources, self.labels)

    @property
    def full(self) -> bool:
        return len(self.kept) == self.width

    def describe(self) -> str:
        return f"{', '.join(sorted(self.sources))} (keeps {len(self.kept)} of {self.width})"


@dataclass
class SliceEdit:
    """Keep ``indices`` along ``axis`` of the constant feeding ``node.inputs[index]``.

    ``labels`` (aligned with ``indices``) say which tracked channel each kept index holds. With
    ``segments`` > 1 the constant is a grouped conv's weight and ``indices`` are positions in
    its *input channels*: each conv group keeps its own columns (the same number in each).
    """

    node: gs.Node
    index: int
    axis: int
    indices: np.ndarray
    labels: np.ndarray | None = None
    segments: int = 1


@dataclass
class ValueEdit:
    """Replace the constant feeding ``node.inputs[index]`` (a shape, sizes or split vector);
    ``index == len(node.inputs)`` appends it."""

    node: gs.Node
    index: int
    values: np.ndarray


@dataclass
class Flow:
    """The result of the pass: edits to apply and which plan layers ended up coupled."""

    slices: list[SliceEdit] = field(default_factory=list)
    values: list[ValueEdit] = field(default_factory=list)
    groups: list[tuple[gs.Node, int]] = field(default_factory=list)
    attrs: list[tuple[gs.Node, str, object]] = field(default_factory=list)  # value None: delete
    coupled: list[frozenset[str]] = field(default_factory=list)
    couplings: list[tuple[frozenset[str], str, str]] = field(
        default_factory=list
    )  # sources, op, node
    segments: dict[str, int] = field(default_factory=dict)  # source -> grouped conv groups (lcm)
    source_ids: dict[str, int] = field(default_factory=dict)

    def source_of(self, label: int) -> str:
        names = {i: s for s, i in self.source_ids.items()}
        return names[int(label) >> SOURCE_BITS]


def expand(kept: np.ndarray, width: int, outer: int, inner: int) -> np.ndarray:
    """Indices along an axis laid out as (outer, width, inner) that belong to ``kept`` channels."""
    idx = (
        np.arange(outer)[:, None, None] * (width * inner)
        + kept[None, :, None] * inner
        + np.arange(inner)[None, None, :]
    )
    return idx.reshape(-1).astype(np.int64)


def expand_labels(labels: np.ndarray, outer: int, inner: int) -> np.ndarray:
    """The labels of ``expand``'s indices, in the same order."""
    return np.broadcast_to(labels[None, :, None], (outer, len(labels), inner)).reshape(-1).copy()


def _lcm(a: int, b: int) -> int:
    return a * b // int(np.gcd(a, b))


class ChannelPass:
    """Walks the graph once; ``starts`` maps ``id(node)`` of each producing node to (plan key,
    kept indices). With ``probe`` every start keeps all its channels but is treated as pruned:
    reaching a graph output, a channel-axis Slice/Split or a channel shuffle stops it."""

    def __init__(
        self, graph: gs.Graph, starts: dict[int, tuple[str, np.ndarray]], probe: bool = False
    ) -> None:
        self.graph = graph
        self.starts = starts
        self.probe = probe
        self.tracks: dict[str, Track] = {}
        self.flow = Flow()
        self._links: dict[str, str] = {}
        for key, _ in starts.values():
            self.flow.source_ids.setdefault(key, len(self.flow.source_ids))

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
            try:
                rule(self, node, live, start)
            except ChannelStop as e:
                if e.sources or not self.probe:
                    raise
                raise ChannelStop(str(e), node, self._involved(live, start), e.reason) from None
            except Exception as e:  # noqa: BLE001 - probing any model: name the layers, go on
                if not self.probe:
                    raise
                why = " ".join(str(e).split())[:160] or type(e).__name__
                raise ChannelStop(
                    why, node, self._involved(live, start), f"node {node.name} ({node.op}): {why}"
                ) from None
        self._check_outputs()
        self.flow.coupled = self._coupled_sets()
        return self.flow

    def _check_outputs(self) -> None:
        for out in self.graph.outputs:
            track = self.tracks.get(out.name)
            if track is not None and (self.probe or not track.full):
                raise ChannelStop(
                    f"pruning {track.describe()} would change the graph output {out.name!r}; "
                    f"leave the layers that feed the output out of the plan",
                    None,
                    track.sources,
                    f"its channels are the model's output {out.name!r}",
                )

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _involved(live: list, start) -> frozenset[str]:
        sources: set[str] = {start[0]} if start is not None else set()
        for _, track in live:
            sources |= track.sources
        return frozenset(sources)

    def _set(self, tensor: gs.Tensor, track: Track) -> None:
        self.tracks[tensor.name] = track

    def _start_track(self, key: str, kept: np.ndarray, axis: int, rank: int, width: int) -> Track:
        sid = self.flow.source_ids[key]
        labels = (np.int64(sid) << SOURCE_BITS) + kept.astype(np.int64)
        return Track(axis, rank, width, kept, frozenset([key]), labels)

    def _slice(
        self,
        node: gs.Node,
        index: int,
        axis: int,
        indices: np.ndarray,
        labels: np.ndarray | None = None,
        segments: int = 1,
        track: Track | None = None,
    ) -> None:
        if index < len(node.inputs) and node.inputs[index].name:
            if constant_values(node.inputs[index]) is None:
                sources = track.sources if track is not None else frozenset()
                raise ChannelStop(
                    f"node {node.name} ({node.op}): input {node.inputs[index].name!r} must be a "
                    f"constant to slice it for pruned channels, but it is computed",
                    node,
                    sources,
                    f"node {node.name} ({node.op}) scales the channels by a computed tensor "
                    f"{node.inputs[index].name!r}",
                )
            self.flow.slices.append(SliceEdit(node, index, axis, indices, labels, segments))

    def _couple(self, a: Track, b: Track, node: gs.Node) -> None:
        for x in a.sources | b.sources:
            self._union(next(iter(a.sources)), x)
        self.flow.couplings.append((a.sources | b.sources, node.op, node.name))

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

    def _segments(self, track: Track, groups: int) -> None:
        for key in track.sources:
            self.flow.segments[key] = _lcm(self.flow.segments.get(key, 1), groups)

    def _shape(self, node: gs.Node, tensor: gs.Tensor, track: Track | None = None) -> list:
        shape = static_shape(tensor)
        if shape is None:
            raise ChannelStop(
                f"node {node.name} ({node.op}): the shape of {tensor.name!r} is unknown after ONNX "
                f"shape inference, so its channel axis cannot be followed; export with static "
                f"shapes",
                node,
                track.sources if track is not None else frozenset(),
                f"node {node.name} ({node.op}): the shape of {tensor.name!r} is unknown",
            )
        return shape

    def _unsupported(self, node: gs.Node, track: Track, why: str, note: str = "") -> ChannelStop:
        where = "" if "channel axis" in why else " on the channel axis"
        return ChannelStop(
            f"node {node.name} ({node.op}) {why}{where} of {track.describe()}{note}; "
            f"chase-deploy cannot slim through it: leave those layers out of the plan",
            node,
            track.sources,
            f"node {node.name} ({node.op}) {why}{where}{note}",
        )

    def _mismatch(self, node: gs.Node, a: Track, other: str, reason: str = "") -> ChannelStop:
        return ChannelStop(
            f"node {node.name} ({node.op}) couples {a.describe()} with {other}: layers feeding "
            f"the same stream must list the same kept set in the plan (or none of them)",
            node,
            a.sources,
            reason or f"node {node.name} ({node.op}) combines its channels with {other}",
        )

    def _differs(self, node: gs.Node, a: Track, b: Track) -> ChannelStop:
        first = int(np.setxor1d(a.kept, b.kept)[0]) if a.width == b.width else None
        where = f"; they disagree on channel {first}" if first is not None else ""
        return self._mismatch(node, a, b.describe() + where)

    def _untracked(self, node: gs.Node, a: Track, tensor: gs.Tensor) -> ChannelStop:
        names = self._upstream_names(tensor)
        return self._mismatch(
            node,
            a,
            f"{names} (not in the plan: keeps every channel)",
            f"node {node.name} ({node.op}) combines its channels with those of {names}, which "
            f"are not prunable",
        )

    def _upstream_layers(self, tensor: gs.Tensor, limit: int = 4) -> str:
        return f"{self._upstream_names(tensor, limit)} (not in the plan: keeps every channel)"

    def _upstream_names(self, tensor: gs.Tensor, limit: int = 4) -> str:
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
        return ", ".join(dict.fromkeys(found)) or tensor.name

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
            self._slice(node, i, 0, track.kept, track.labels, track=track)
        self._set(node.outputs[0], track)

    def _instancenorm(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0 or track.axis != 1:
            raise self._unsupported(node, track, "normalizes over a non-channel axis")
        self._slice(node, 1, 0, track.kept, track.labels, track=track)
        self._slice(node, 2, 0, track.kept, track.labels, track=track)
        self._set(node.outputs[0], track)

    def _layernorm(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        axis = node.attrs.get("axis", -1) % track.rank
        if index != 0 or track.axis >= axis:
            raise self._unsupported(
                node,
                track,
                "normalizes over the channel axis",
                " (removing channels would change its statistics)",
            )
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
        ranks = [len(self._shape(node, t, ref)) for t in node.inputs if t.name]
        out_rank = max(ranks)
        out_axis = ref.axis + out_rank - ref.rank
        sources = set(ref.sources)
        for i, t in enumerate(node.inputs):
            if not t.name:
                continue
            shape = self._shape(node, t, ref)
            axis = out_axis - (out_rank - len(shape))
            if axis < 0:
                continue
            track = self.tracks.get(t.name)
            if track is not None:
                if track.axis != axis:
                    raise self._unsupported(node, track, "mixes channel axes")
                if not track.same_channels(ref):
                    raise self._differs(node, ref, track)
                if track is not ref:
                    self._couple(ref, track, node)
                sources |= track.sources
            elif shape[axis] == 1:
                continue
            elif constant_values(t) is not None and shape[axis] == ref.width:
                self._slice(node, i, axis, ref.kept, ref.labels, track=ref)
            else:
                raise self._untracked(node, ref, t)
        track = Track(out_axis, out_rank, ref.width, ref.kept, frozenset(sources), ref.labels)
        for out in node.outputs:
            self._set(out, track)

    def _concat(self, node: gs.Node, live: list, start) -> None:
        ref = live[0][1]
        axis = node.attrs["axis"] % ref.rank
        if any(track.axis != axis for _, track in live):
            return self._elementwise(node, live, start)
        parts: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        offset = 0
        sources: set[str] = set()
        for t in node.inputs:
            track = self.tracks.get(t.name)
            if track is not None:
                parts.append(track.kept + offset)
                labels.append(track.labels)
                sources |= track.sources
                offset += track.width
                continue
            dim = self._shape(node, t, ref)[axis]
            if not isinstance(dim, int):
                raise self._unsupported(node, ref, f"concatenates {t.name!r} of unknown size")
            parts.append(np.arange(dim) + offset)
            labels.append(np.full(dim, -1, dtype=np.int64))
            offset += dim
        kept = np.concatenate(parts).astype(np.int64)
        track = Track(axis, ref.rank, offset, kept, frozenset(sources), np.concatenate(labels))
        self._set(node.outputs[0], track)

    # -- rules: shape ops ---------------------------------------------------------------------

    def _flatten(self, node: gs.Node, live: list, start) -> None:
        _, track = live[0]
        shape = self._shape(node, node.inputs[0], track)
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
        labels = expand_labels(track.labels, outer, inner)
        width = outer * track.width * inner
        return Track(lo, track.rank - (hi - lo) + 1, width, kept, track.sources, labels)

    def _reshape(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0:
            raise self._unsupported(node, track, "uses pruned channels as a shape")
        ins = self._shape(node, node.inputs[0], track)
        outs = self._shape(node, node.outputs[0], track)
        shuffle = self._shuffle_pattern(node, ins, outs, track)
        if shuffle is not None:
            return self._shuffle(node, track, *shuffle)
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

    def _shuffle_pattern(
        self, node: gs.Node, ins: list, outs: list, track: Track
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
        back = self._shape(after[0], after[0].outputs[0], track)
        if back != ins:
            return None
        return g, transpose, after[0]

    def _shuffle(self, node: gs.Node, track: Track, g: int, transpose: gs.Node, back: gs.Node):
        """Channel c = i·n + j lands at j·g + i. Lossless on the slim tensor only when every one
        of the g slices keeps the same offsets (the shuffle then permutes exactly the kept ones)."""
        if self.probe:
            raise self._unsupported(node, track, f"shuffles the channels in {g} groups")
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
        for reshape, axis, value in ((node, track.axis + 1, m), (back, track.axis, g * m)):
            spec = constant_values(reshape.inputs[1])
            if spec is None:
                raise self._unsupported(reshape, track, "shuffles channels with a computed shape")
            spec = spec.astype(np.int64).copy()
            if spec[axis] == 0:
                raise self._unsupported(reshape, track, "shuffles channels with a copied (0) dim")
            if spec[axis] > 0:
                spec[axis] = value
                self.flow.values.append(ValueEdit(reshape, 1, spec))
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
        self._set(back.outputs[0], new)

    def _squeeze(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        axes = self._axes(node)
        if axes is None:
            shape = self._shape(node, node.inputs[0], track)
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
        self._set(node.outputs[0], track.moved(perm.index(track.axis), track.rank))

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

    def _part(self, node: gs.Node, track: Track, lo: int, hi: int) -> Track | None:
        """The track of channels [lo, hi) of ``track`` re-indexed from 0 (None: nothing pruned
        there, the part is unchanged)."""
        inside = (track.kept >= lo) & (track.kept < hi)
        if not inside.any():
            raise self._unsupported(node, track, f"selects channels {lo}..{hi - 1}, all pruned,")
        kept = track.kept[inside] - lo
        if len(kept) == hi - lo:
            return None
        return Track(track.axis, track.rank, hi - lo, kept, track.sources, track.labels[inside])

    def _slice_op(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0:
            raise self._unsupported(node, track, "uses pruned channels as slice bounds")
        values = [
            constant_values(node.inputs[i])
            if len(node.inputs) > i and node.inputs[i].name
            else None
            for i in range(5)
        ]
        starts, ends = values[1], values[2]
        if starts is None or ends is None:
            raise self._unsupported(node, track, "slices with computed bounds")
        axes = values[3] if values[3] is not None else np.arange(len(starts))
        axes = [int(a) % track.rank for a in np.asarray(axes).reshape(-1)]
        if track.axis not in axes:
            return self._set(node.outputs[0], track)
        if self.probe:
            raise self._unsupported(node, track, "slices")
        i = axes.index(track.axis)
        steps = values[4] if values[4] is not None else np.ones(len(axes), dtype=np.int64)
        lo, hi, step = slice(int(starts[i]), int(ends[i]), int(steps[i])).indices(track.width)
        if step != 1:
            raise self._unsupported(node, track, f"slices with step {step}")
        part = self._part(node, track, lo, max(lo, hi))
        if part is None:
            return
        new_lo = int(np.sum(track.kept < lo))
        new_hi = int(np.sum(track.kept < hi))
        for j, value in ((1, new_lo), (2, new_hi)):
            spec = np.asarray(values[j]).astype(np.int64).copy()
            spec[i] = value
            self.flow.values.append(ValueEdit(node, j, spec))
        self._set(node.outputs[0], part)

    def _split(self, node: gs.Node, live: list, start) -> None:
        index, track = live[0]
        if index != 0:
            raise self._unsupported(node, track, "uses pruned channels as split sizes")
        if node.attrs.get("axis", 0) % track.rank != track.axis:
            for out in node.outputs:
                self._set(out, track)
            return
        if self.probe:
            raise self._unsupported(node, track, "splits")
        if len(node.inputs) > 1 and node.inputs[1].name:
            sizes = constant_values(node.inputs[1])
            if sizes is None:
                raise self._unsupported(node, track, "splits with computed sizes")
            sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        elif "split" in node.attrs:
            raise self._unsupported(node, track, "splits (opset < 13 split attribute)")
        else:
            count = len(node.outputs)
            size = -(-track.width // count)
            sizes = [min(size, track.width - k * size) for k in range(count)]
        bounds = np.cumsum([0, *sizes])
        new_sizes = []
        for k, out in enumerate(node.outputs):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            part = self._part(node, track, lo, hi)
            new_sizes.append(hi - lo if part is None else len(part.kept))
            if part is not None:
                self._set(out, part)
        if len(node.inputs) > 1 and node.inputs[1].name:
            self.flow.values.append(ValueEdit(node, 1, np.asarray(new_sizes, dtype=np.int64)))
        else:
            self.flow.values.append(
                ValueEdit(node, len(node.inputs), np.asarray(new_sizes, dtype=np.int64))
            )
            self.flow.attrs.append((node, "num_outputs", None))

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
                self._slice(node, 1, in_axis, x.kept, x.labels, track=x)
            elif group == x.width and weight.shape[in_axis] == (1 if not transpose else x.width):
                mult = weight.shape[out_axis] if transpose else weight.shape[0] // group
                out_kept = expand(x.kept, x.width, 1, mult)
                out_labels = expand_labels(x.labels, 1, mult)
                self._slice(node, 1, 0, out_kept if not transpose else x.kept, out_labels, track=x)
                self._slice(node, 2, 0, out_kept, out_labels, track=x)
                self.flow.groups.append((node, len(x.kept)))
                out_track = Track(1, x.rank, x.width * mult, out_kept, x.sources, out_labels)
            elif not transpose:
                self._grouped_columns(node, x, group)
            else:
                raise self._unsupported(
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
            rank = len(self._shape(node, node.outputs[0]))
            track = self._start_track(key, kept, 1, rank, width)
            if group != 1:
                self._even(node, track, group, "keeps")
                self._segments(track, group)
            self._slice(node, 1, out_axis, kept, track.labels, track=track)
            self._slice(node, 2, 0, kept, track.labels, track=track)
            out_track = track
        if out_track is not None:
            self._set(node.outputs[0], out_track)

    def _even(self, node: gs.Node, track: Track, group: int, verb: str) -> None:
        """A grouped conv needs the same number of channels in each of its groups."""
        counts = np.bincount(track.kept // (track.width // group), minlength=group)
        if len(set(counts.tolist())) > 1:
            raise ChannelStop(
                f"node {node.name} ({node.op}) is a grouped conv (group={group}) and the plan "
                f"{verb} {counts.tolist()} channels of {track.describe()} in its groups; keep the "
                f"same number in every group",
                node,
                track.sources,
                f"node {node.name} is a grouped conv with uneven groups",
            )

    def _grouped_columns(self, node: gs.Node, x: Track, group: int) -> None:
        """A grouped conv reading tracked channels: every conv group keeps the same count."""
        if x.width % group:
            raise self._unsupported(node, x, f"is a grouped conv (group={group}) that")
        self._even(node, x, group, "keeps")
        self._segments(x, group)
        self._slice(node, 1, 1, x.kept, x.labels, segments=group, track=x)

    def _gemm(self, node: gs.Node, live: list, start) -> None:
        weight = constant_values(node.inputs[1])
        out_axis, in_axis = weight_axes(node, weight)
        x = live[0][1] if live else None
        if x is not None:
            if node.attrs.get("transA", 0) or x.axis != 1:
                raise self._unsupported(node, x, "multiplies along a transposed axis")
            self._slice(node, 1, in_axis, x.kept, x.labels, track=x)
        if start is not None:
            key, kept = start
            width = weight.shape[out_axis]
            track = self._start_track(key, kept, 1, 2, width)
            self._slice(node, 1, out_axis, kept, track.labels, track=track)
            if len(node.inputs) > 2 and node.inputs[2].name:
                bias = static_shape(node.inputs[2]) or []
                if bias and bias[-1] == width:
                    self._slice(node, 2, len(bias) - 1, kept, track.labels, track=track)
            self._set(node.outputs[0], track)

    def _matmul(self, node: gs.Node, live: list, start) -> None:
        weight = constant_values(node.inputs[1])
        x = live[0][1] if live else None
        if x is not None:
            if x.axis != x.rank - 1 or weight is None or weight.ndim < 2:
                raise self._unsupported(node, x, "multiplies along a non-channel axis")
            self._slice(node, 1, weight_axes(node, weight)[1], x.kept, x.labels, track=x)
        if start is not None:
            key, kept = start
            out_axis = weight_axes(node, weight)[0]
            rank = len(self._shape(node, node.outputs[0]))
            track = self._start_track(key, kept, rank - 1, rank, weight.shape[out_axis])
            self._slice(node, 1, out_axis, kept, track.labels, track=track)
            self._set(node.outputs[0], track)


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
