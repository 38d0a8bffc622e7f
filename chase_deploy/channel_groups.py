"""Channel groups read from the graph: which output channels Chase may prune in any CNN.

``derive_groups(model, sample_shape)`` exports the model once to ONNX on a batch of 2 samples
(``export.export_for_analysis``: nothing fused, so norms and per-channel tensors keep their
parameter names) and runs the channel pass ``slim`` uses (``channel_flow``) in probe mode: every
Conv/ConvTranspose/Linear starts a track of all its channels, as if all were pruned. The pass
then says, for each layer's channels, every op and layer they reach:

- layers whose tracks meet at an elementwise op are **coupled** (one group with several
  producers): a residual Add makes a *stream*, a squeeze-excitation Mul a gated block group;
- every constant the pass would slice is a **member** of the group: producer rows, consumer
  columns (with the concat offset, flatten block or grouped-conv slices it reads them through),
  and the **carriers** between them (norms, depthwise convs, per-channel tensors);
- a track that stops (an op the pass cannot follow, the graph output, a channel-axis Slice,
  a channel shuffle, ...) excludes its layers, with the pass's reason, and the pass runs again
  without them until it goes through.

Then the policy, one rule per line (``inspect`` prints the reason of each exclusion):

- Residual streams (channels a residual Add sums) are prunable only with ``prune_skip``, jointly
  across all their producers.
- The input of a residual block that no Add sums (a stem read by both branches of a block with a
  projection shortcut) is kept whole, with or without ``prune_skip``, like the stream it enters.
- A feature map read only by the output layer (the classifier after global pooling) is kept
  whole, so the classifier never changes.
- Everything else the pass can follow is prunable.

For the paper's models this yields: ResNet-50 bottleneck conv1 and conv2, basic-block conv1, VGG
every conv but the last (``tests/test_channel_groups.py`` checks every registry model against the
declarations the models used to carry). The result is plain data (``train.groups``): the trainer
needs no ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from torch import nn

from chase_deploy.channel_flow import ADDITIVE, ELEMENTWISE, SOURCE_BITS, ChannelPass, ChannelStop
from chase_deploy.channel_graph import (
    LAYER_OPS,
    constant_name,
    constant_values,
    import_graph,
    layer_name,
    layer_nodes,
    metadata_layer,
    with_shapes,
)
from train.groups import ChannelGroup, ChannelMap, Member, ModelGroups, lcm

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
)
_CHANNEL = (1 << SOURCE_BITS) - 1


def derive_groups(
    model: nn.Module, sample_shape: Sequence[int], prune_skip: bool = False
) -> ModelGroups:
    """The prunable channel groups of ``model`` for inputs of ``sample_shape`` ([C, H, W])."""
    return analyze(model, sample_shape).groups(prune_skip)


def checkpoint_groups(
    ckpt: dict, prune_skip: bool | None = None, model: nn.Module | None = None
) -> ModelGroups:
    """The groups of a checkpoint's model, for its recorded input shape (and, unless given, its
    recipe's ``chase.prune_skip``)."""
    from train.checkpoint import build_model_from_checkpoint
    from train.errors import BadInput

    shape = ckpt.get("input_shape")
    if not isinstance(shape, (list, tuple)) or not shape:
        raise BadInput("the checkpoint has no input_shape [C, H, W] to trace its model with")
    if prune_skip is None:
        recipe = ckpt.get("recipe") or {}
        prune_skip = bool((recipe.get("chase") or {}).get("prune_skip", False))
    if model is None:
        model = build_model_from_checkpoint(ckpt, apply_masks=False)
    return derive_groups(model, [int(d) for d in shape], prune_skip)


def analyze(model: nn.Module, sample_shape: Sequence[int]) -> ChannelAnalysis:
    """Export ``model`` once and follow every layer's channels; ``.groups(prune_skip)`` applies
    the policy (both settings from one trace)."""
    from chase_deploy.export import export_for_analysis

    proto = export_for_analysis(model, tuple(sample_shape))
    return ChannelAnalysis(proto, model, tuple(int(d) for d in sample_shape))


def groups_from_onnx(
    proto: onnx.ModelProto,
    model: nn.Module,
    *,
    prune_skip: bool = False,
    sample_shape: Sequence[int] = (),
) -> ModelGroups:
    """The analysis on an already exported (unfused) graph of ``model``."""
    return ChannelAnalysis(proto, model, tuple(int(d) for d in sample_shape)).groups(prune_skip)


class ChannelAnalysis:
    """One probe of a model's graph; ``groups`` turns it into prunable groups."""

    def __init__(self, proto: onnx.ModelProto, model: nn.Module, sample_shape: tuple) -> None:
        self.graph = import_graph(with_shapes(proto))
        self.model = model
        self.sample_shape = sample_shape
        self.modules = dict(model.named_modules())
        self.order = {name: i for i, name in enumerate(self.modules)}
        self.tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        self.excluded: dict[str, str] = {}
        self.layer_of: dict[int, str] = {}  # id(node) -> module name
        self.node_of: dict[str, gs.Node] = {}
        self.depthwise: set[str] = set()
        self._probe()

    # -- driver -------------------------------------------------------------------------------

    def _probe(self) -> None:
        self._match_layers()
        starts = {
            id(node): (name, np.arange(self._width(name), dtype=np.int64))
            for name, node in self.node_of.items()
            if name not in self.depthwise and name not in self.excluded
        }
        while True:
            try:
                cpass = ChannelPass(self.graph, starts, probe=True)
                flow = cpass.run()
                break
            except ChannelStop as stop:
                keys = {k for k, _ in starts.values()} & set(stop.sources)
                if not keys:
                    raise
                for key in sorted(keys):
                    self.excluded.setdefault(key, stop.reason)
                starts = {i: s for i, s in starts.items() if s[0] not in keys}
        self.flow = flow
        self.tracks = cpass.tracks
        self.keys = {k for k, _ in starts.values()}
        self.root = {k: k for k in self.keys}
        for coupled in flow.coupled:
            first = min(coupled, key=self._rank)
            for k in coupled:
                self.root[k] = first
        self.members, self.broken = self._members(self.root)

    def groups(self, prune_skip: bool = False) -> ModelGroups:
        excluded = dict(self.excluded)
        groups = self._groups(prune_skip, excluded)
        carried = {m.name for g in groups for m in g.carriers}
        for name in sorted(self.depthwise - carried):
            excluded.setdefault(
                name,
                "a depthwise conv: its channels are its input's, and the layer that feeds it "
                "is not prunable",
            )
        ordered = {k: excluded[k] for k in sorted(excluded, key=self._rank)}
        return ModelGroups(tuple(groups), ordered, prune_skip, self.sample_shape)

    def _rank(self, name: str) -> tuple[int, str]:
        return (self.order.get(name, len(self.order)), name)

    # -- layers ---------------------------------------------------------------------------------

    def _match_layers(self) -> None:
        """Map every Conv/Gemm/MatMul node to its module; a layer used twice is not prunable."""
        seen: dict[str, int] = {}
        for node in layer_nodes(self.graph):
            name = self._module_of_layer(node)
            if name is None:
                self.excluded.setdefault(
                    layer_name(node),
                    f"ONNX node {node.name} ({node.op}) matches no Conv/Linear module of the model",
                )
                continue
            seen[name] = seen.get(name, 0) + 1
            self.layer_of[id(node)] = name
            self.node_of[name] = node
            module = self.modules[name]
            groups = getattr(module, "groups", 1)
            if groups > 1 and isinstance(module, CONV_T):
                self.excluded[name] = f"a grouped ConvTranspose (groups={groups})"
            elif groups > 1 and module.in_channels == groups:
                self.depthwise.add(name)
        for name, count in seen.items():
            if count > 1:
                self.excluded[name] = f"called {count} times in forward (shared weights)"

    def _module_of_layer(self, node: gs.Node) -> str | None:
        weight = constant_name(node.inputs[1])
        candidates = [weight[: -len(".weight")]] if weight.endswith(".weight") else []
        meta = metadata_layer(node)
        if meta:
            candidates.append(meta)
        values = constant_values(node.inputs[1])
        for name in candidates:
            module = self.modules.get(name)
            if not isinstance(module, CONV + CONV_T + (nn.Linear,)):
                continue
            shape = tuple(module.weight.shape)
            onnx_shape = tuple(values.shape)
            if node.op == "MatMul":
                onnx_shape = onnx_shape[::-1]
            elif node.op == "Gemm" and not node.attrs.get("transB", 0):
                onnx_shape = onnx_shape[::-1]
            if onnx_shape == shape:
                return name
        return None

    def _width(self, name: str) -> int:
        module = self.modules[name]
        if isinstance(module, nn.Linear):
            return module.out_features
        return module.out_channels

    @staticmethod
    def _kind(module: nn.Module) -> str:
        if isinstance(module, nn.Linear):
            return "linear"
        if isinstance(module, CONV_T):
            return "conv_transpose"
        return "conv"

    # -- groups ---------------------------------------------------------------------------------

    def _groups(self, prune_skip: bool, excluded: dict[str, str]) -> list[ChannelGroup]:
        sets: dict[str, list[str]] = {}
        for k in self.keys:
            sets.setdefault(self.root[k], []).append(k)
        outputs = self._output_layers()
        depth = self._layer_depths()
        out: list[tuple[tuple, ChannelGroup]] = []
        for r, producers in sets.items():
            producers.sort(key=lambda k: (depth.get(k, 0), self._rank(k)))
            head = producers[0]
            found = self.members.get(r, {})
            reason = self.broken.get(r) or self._policy(producers, found, outputs, prune_skip)
            if reason is not None:
                for k in producers:
                    excluded.setdefault(k, reason)
                continue
            stream = self._is_stream(producers)
            out.append(((stream, self._rank(head)), self._group(head, producers, found, stream)))
        out.sort(key=lambda item: item[0])
        return [g for _, g in out]

    def _group(self, head: str, producers: list[str], found: dict, stream: bool) -> ChannelGroup:
        width = self._width(head)
        prod = []
        for k in producers:  # nearest the input first (a stream's stem or projection shortcut)
            module = self.modules[k]
            segments = getattr(module, "groups", 1)
            prod.append(Member(k, "producer", self._kind(module), segments=segments))
        rest = sorted(found.values(), key=lambda m: (m.role != "carrier", self._rank(m.name)))
        segments = lcm(self.flow.segments.get(k, 1) for k in producers)
        return ChannelGroup(
            name=f"stream.{head}" if stream else head,
            producers=tuple(m.name for m in prod),
            consumers=tuple(m.name for m in rest if m.role == "consumer"),
            width=width,
            kind="stream" if stream else "block",
            members=tuple(prod) + tuple(rest),
            segments=segments,
        )

    def _is_stream(self, producers: list[str]) -> bool:
        mine = set(producers)
        return any(op in ADDITIVE and mine & set(src) for src, op, _ in self.flow.couplings)

    def _policy(self, producers: list[str], found: dict, outputs: set[str], prune_skip: bool):
        if self._is_stream(producers):
            if not prune_skip:
                node = self._coupling_node(producers)
                return f"a residual stream (summed {node}); prunable with chase.prune_skip"
            return None
        if self._width(producers[0]) < 2:
            return "has a single output channel"
        entry = self._residual_entry(producers, found)
        if entry is not None:
            return (
                f"the input of a residual block (both branches of node {entry} read it); kept "
                f"whole like the residual streams"
            )
        consumers = {m.name for m in found.values() if m.role == "consumer"}
        rank = self._rank_of(producers[0])
        if consumers and consumers <= outputs and rank > 2:
            return (
                f"the last feature map, read only by the output layer "
                f"{', '.join(sorted(consumers))}: kept whole so the classifier never changes"
            )
        return None

    def _coupling_node(self, producers: list[str]) -> str:
        mine = set(producers)
        nodes = [n for src, op, n in self.flow.couplings if op in ADDITIVE and mine & set(src)]
        return f"at {nodes[0]}" + (f" and {len(nodes) - 1} more" if len(nodes) > 1 else "")

    def _rank_of(self, name: str) -> int:
        node = self.node_of[name]
        shape = node.outputs[0].shape
        return len(shape) if shape is not None else 0

    # -- members --------------------------------------------------------------------------------

    def _members(self, root: dict[str, str]) -> tuple[dict[str, dict], dict[str, str]]:
        """Per group root: {(name, role): Member}; and groups that cannot be expressed."""
        flow = self.flow
        names = {i: s for s, i in flow.source_ids.items()}
        found: dict[str, dict] = {}
        broken: dict[str, str] = {}
        for edit in flow.slices:
            if edit.labels is None:
                continue
            tracked = edit.labels >= 0
            if not tracked.any():
                continue
            labels = edit.labels[tracked]
            indices = edit.indices[tracked]
            sources = np.array([names[int(v)] for v in labels >> SOURCE_BITS])
            for source in np.unique(sources):
                r = root.get(str(source))
                if r is None or r in broken:
                    continue
                mine = sources == source
                entry = self._member(edit, str(source), indices[mine], labels[mine] & _CHANNEL)
                if entry is None:
                    continue
                if isinstance(entry, str):
                    broken[r] = entry
                    continue
                key = (entry.name, entry.role)
                have = found.setdefault(r, {}).get(key)
                if have is not None and have != entry:
                    broken[r] = f"{entry.name} reads its channels twice"
                    continue
                found[r][key] = entry
        return found, broken

    def _member(self, edit, source: str, positions: np.ndarray, channels: np.ndarray):
        """The member an edit describes (None: covered by another edit; str: why it cannot)."""
        node = edit.node
        width = self._width(source)
        if node.op in LAYER_OPS:
            name = self.layer_of.get(id(node))
            if name is None:
                return f"its channels are read by ONNX node {node.name}, which matches no module"
            if name == source or edit.index != 1:
                return None  # the producer's own rows/bias, or a bias read with the rows
            module = self.modules[name]
            weight = constant_values(node.inputs[1])
            if name in self.depthwise:
                size = weight.shape[0] if node.op == "Conv" else weight.shape[1]
                role, kind, segments = "carrier", "depthwise", 1
            elif edit.segments > 1:
                size = weight.shape[1] * edit.segments
                role, kind, segments = "consumer", self._kind(module), edit.segments
            else:
                size = weight.shape[edit.axis]
                role, kind, segments = "consumer", self._kind(module), 1
            cmap = _fit(positions, channels, size, width)
            if cmap is None:
                return f"{name} reads its channels in an order the controller cannot map"
            return Member(name, role, kind, cmap, segments=segments)
        if node.op in ("BatchNormalization", "InstanceNormalization"):
            if edit.index != 1:
                return None
            name = self._norm_module(node)
            if name is None:
                return f"ONNX node {node.name} ({node.op}) matches no norm module of the model"
            size = constant_values(node.inputs[1]).shape[0]
            cmap = _fit(positions, channels, size, width)
            if cmap is None:
                return f"{name} normalizes its channels in an order the controller cannot map"
            return Member(name, "carrier", "norm", cmap)
        if node.op in ELEMENTWISE:
            tensor = node.inputs[edit.index]
            name = constant_name(tensor)
            owner, _, leaf = name.rpartition(".")
            if leaf == "bias" and owner in self.node_of:
                return None  # a Linear's bias added after its MatMul: the producer's own bias
            param = self.tensors.get(name)
            values = constant_values(tensor)
            if param is None or tuple(param.shape) != tuple(values.shape):
                return (
                    f"node {node.name} ({node.op}) applies a per-channel constant {name!r} that "
                    f"is not a parameter or buffer of the model"
                )
            cmap = _fit(positions, channels, values.shape[edit.axis], width)
            if cmap is None:
                return f"{name} holds its channels in an order the controller cannot map"
            return Member(name, "carrier", "tensor", cmap, axis=edit.axis)
        return (
            f"node {node.name} ({node.op}) slices its channels in a way the trainer cannot follow"
        )

    def _norm_module(self, node: gs.Node) -> str | None:
        candidates = []
        weight = constant_name(node.inputs[1])
        if weight.endswith(".weight"):
            candidates.append(weight[: -len(".weight")])
        meta = getattr(node, "torch_module", None)
        if meta is not None:
            candidates.append(meta[0])
        for name in candidates:
            module = self.modules.get(name)
            if isinstance(module, NORMS):
                if isinstance(module, nn.GroupNorm) and module.num_groups != module.num_channels:
                    continue
                return name
        return None

    # -- graph structure ------------------------------------------------------------------------

    def _output_layers(self) -> set[str]:
        """Layers whose output reaches a graph output through non-layer ops only."""
        found: set[str] = set()
        seen: set[str] = set()
        todo = list(self.graph.outputs)
        while todo:
            tensor = todo.pop()
            if tensor.name in seen or not tensor.inputs:
                continue
            seen.add(tensor.name)
            node = tensor.inputs[0]
            name = self.layer_of.get(id(node))
            if name is not None:
                found.add(name)
                continue
            todo.extend(t for t in node.inputs if not isinstance(t, gs.Constant))
        return found

    def _layer_depths(self) -> dict[str, int]:
        """Layers on the longest path from the input to each layer (the group's name is its
        producer nearest the input: a stream is named after its stem or projection shortcut)."""
        depth: dict[str, int] = {}
        for node in self.graph.nodes:
            d = max((depth.get(t.name, 0) for t in node.inputs), default=0)
            name = self.layer_of.get(id(node))
            if name is not None:
                d += 1
                depth[name] = d
            for t in node.outputs:
                depth[t.name] = d
        return depth

    def _residual_entry(self, producers: list[str], found: dict) -> str | None:
        """An Add whose inputs the group's channels reach through different consumers (without
        crossing another Add or coming back into the group): the group forks into both branches
        of a residual block, like a stem feeding a block with a projection shortcut."""
        mine = set(producers)
        region = {name for name, t in self.tracks.items() if t.sources & mine}
        exits = [m.name for m in found.values() if m.role == "consumer" and m.name not in mine]
        reach: dict[int, dict[str, set[int]]] = {}
        nodes: dict[int, gs.Node] = {}
        for name in exits:
            seen: set[str] = set()
            todo = list(self.node_of[name].outputs)
            while todo:
                tensor = todo.pop()
                if tensor.name in seen or tensor.name in region:
                    continue
                seen.add(tensor.name)
                for node in tensor.outputs:
                    live = [t for t in node.inputs if not isinstance(t, gs.Constant)]
                    if node.op in ADDITIVE and len(live) >= 2:
                        reach.setdefault(id(node), {}).setdefault(name, set()).add(
                            node.inputs.index(tensor)
                        )
                        nodes[id(node)] = node
                        continue
                    todo.extend(node.outputs)
        for key, by_exit in reach.items():
            inputs = set().union(*by_exit.values())
            if len(inputs) >= 2 and not any(s == inputs for s in by_exit.values()):
                return nodes[key].name
        return None


def _fit(positions: np.ndarray, channels: np.ndarray, size: int, width: int) -> ChannelMap | None:
    """The ``ChannelMap`` that places exactly these (position, channel) pairs, or None."""
    if len(positions) == 0 or set(np.unique(channels).tolist()) != set(range(width)):
        return None
    first = np.sort(positions[channels == 0])
    inner = 1
    while inner < len(first) and first[inner] == first[0] + inner:
        inner += 1
    if len(first) % inner:
        return None
    outer = len(first) // inner
    if first[0] % inner or size % (outer * inner):
        return None
    offset = int(first[0]) // inner
    total = size // (outer * inner)
    cmap = ChannelMap(offset, 0 if (total == width and offset == 0) else total, inner, outer)
    import torch

    expected = cmap.positions(torch.arange(width), width).numpy().reshape(outer, width, inner)
    expected_channels = np.broadcast_to(np.arange(width)[None, :, None], expected.shape)
    want = np.sort(
        expected.reshape(-1).astype(np.int64) * (width + 1) + expected_channels.reshape(-1)
    )
    have = np.sort(positions.astype(np.int64) * (width + 1) + channels.astype(np.int64))
    if want.shape != have.shape or not np.array_equal(want, have):
        return None
    return cmap
