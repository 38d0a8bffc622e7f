"""Channel groups read from the graph: which output channels Chase may prune in any CNN.

``derive_groups(model, sample_shape)`` exports the model once to ONNX on a batch of 2 samples
(``export.export_for_analysis``: nothing fused, so norms and per-channel tensors keep their
parameter names) and runs the walk ``slim`` uses (``chase_deploy.graph.walk``) in probe mode:
every Conv/ConvTranspose/Linear starts a track of all its channels, as if all were pruned. The
walk then says, for each layer's channels, every op and layer they reach:

- layers whose tracks meet at an elementwise op are **coupled** (one group with several
  producers): a residual Add makes a *stream*, a squeeze-excitation Mul a gated block group; the
  ties at those ops give the group its channel space (``spaces``), and each producer the map
  from its rows to the group's channels (a gate over a Ghost concatenation writes each twice);
- every constant the walk would slice is a **member** of the group (``members``): producer rows,
  consumer columns (with the concat offset, flatten block or grouped-conv slices it reads them
  through), and the **carriers** between them (norms, depthwise convs, per-channel tensors);
- a track that stops (an op the walk cannot follow, the graph output, a channel-axis Slice,
  a channel shuffle, ...) excludes its layers, with the walk's reason, and the walk runs again
  without them until it goes through.

Then ``policy`` decides which of the groups are prunable, and every group is checked against
the model's modules (``train.group_fit``): one that does not fit is kept whole with the reason. For the paper's models this yields:
ResNet-50 bottleneck conv1 and conv2, basic-block conv1, VGG every conv but the last
(``tests/graph/test_analysis.py`` checks every registry model against the declarations the models
used to carry). The result is plain data (``train.groups``): the trainer needs no ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from torch import nn

from chase_deploy.graph.matching import match_layers
from chase_deploy.graph.members import Members, find_members
from chase_deploy.graph.policy import Policy
from chase_deploy.graph.reading import import_graph, with_shapes
from chase_deploy.graph.spaces import channel_spaces
from chase_deploy.graph.state import Start
from chase_deploy.graph.walk import probe
from train.errors import BadInput
from train.group_fit import fitting_groups
from train.groups import ChannelGroup, Member, ModelGroups


def derive_groups(
    model: nn.Module, sample_shape: Sequence[int], prune_skip: bool = False
) -> ModelGroups:
    """The prunable channel groups of ``model`` for inputs of ``sample_shape`` ([C, H, W])."""
    return analyze(model, sample_shape).groups(prune_skip)


def traced_checkpoint_groups(
    ckpt: dict, prune_skip: bool | None = None, model: nn.Module | None = None
) -> ModelGroups:
    """The groups of a checkpoint's model, for its recorded input shape (and, unless given, its
    recipe's ``chase.prune_skip``)."""
    from train.checkpoint import build_model_from_checkpoint

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
        self.sample_shape = sample_shape
        modules = dict(model.named_modules())
        self.order = {name: i for i, name in enumerate(modules)}
        self.layers = match_layers(self.graph, modules)
        self.model = model
        self._probe()
        self.sets = self._sets()
        self.spaces, broken = channel_spaces(self.flow, self.sets, self.layers.width)
        placed = {
            k: (r, self.spaces[r]) for r, ks in self.sets.items() if r in self.spaces for k in ks
        }
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        self.members, self.broken = find_members(self.flow, placed, self.layers, tensors)
        self.broken.update(broken)
        self.policy = Policy(self.graph, self.flow, self.tracks, self.layers)

    def _probe(self) -> None:
        """Walk from every layer; a stop excludes the layers it names and the walk runs again."""
        layers = self.layers
        starts: dict[int, Start] = {
            id(node): (name, np.arange(layers.width(name), dtype=np.int64))
            for name, node in layers.node_of.items()
            if name not in layers.depthwise and name not in layers.excluded
        }
        state, excluded = probe(self.graph, starts)
        for key, reason in excluded.items():
            layers.excluded.setdefault(key, reason)
        starts = {i: s for i, s in starts.items() if s[0] not in excluded}
        self.flow = state.flow
        self.tracks = state.tracks
        self.keys = {k for k, _ in starts.values()}
        self.root = {k: k for k in self.keys}
        for coupled in self.flow.coupled:
            first = min(coupled, key=self._rank)
            for k in coupled:
                self.root[k] = first

    def groups(self, prune_skip: bool = False) -> ModelGroups:
        """The prunable groups, and why every other layer stays whole."""
        excluded = dict(self.layers.excluded)
        groups = fitting_groups(self.model, self._groups(prune_skip, excluded), excluded)
        carried = {m.name for g in groups for m in g.carriers}
        for name in sorted(self.layers.depthwise - carried):
            excluded.setdefault(
                name,
                "a depthwise conv: its channels are its input's, and the layer that feeds it "
                "is not prunable",
            )
        ordered = {k: excluded[k] for k in sorted(excluded, key=self._rank)}
        return ModelGroups(tuple(groups), ordered, prune_skip, self.sample_shape)

    def _rank(self, name: str) -> tuple[int, str]:
        return (self.order.get(name, len(self.order)), name)

    def _sets(self) -> dict[str, list[str]]:
        """The producers of each coupled set, by root; nearest the input first (a stream's stem
        or projection shortcut)."""
        sets: dict[str, list[str]] = {}
        for k in self.keys:
            sets.setdefault(self.root[k], []).append(k)
        depth = self._layer_depths()
        for producers in sets.values():
            producers.sort(key=lambda k: (depth.get(k, 0), self._rank(k)))
        return sets

    def _groups(self, prune_skip: bool, excluded: dict[str, str]) -> list[ChannelGroup]:
        out: list[tuple[tuple, ChannelGroup]] = []
        for r, producers in self.sets.items():
            head = producers[0]
            found = self.members.get(r, {})
            reason = self.broken.get(r) or self.policy.exclusion(
                producers, found, prune_skip, self.spaces[r].width
            )
            if reason is None:
                reason = self._segments_reason(r)
            if reason is not None:
                for k in producers:
                    excluded.setdefault(k, reason)
                continue
            stream = self.policy.is_stream(producers)
            out.append(((stream, self._rank(head)), self._group(r, found, stream)))
        out.sort(key=lambda item: item[0])
        return [g for _, g in out]

    def _segments_reason(self, root: str) -> str | None:
        """A grouped conv slices the channels of a group whose producers write them through a
        map: the equal-slices rule is not followed there."""
        space, producers = self.spaces[root], self.sets[root]
        mapped = [k for k in producers if not space.maps[k].is_plain]
        grouped = [k for k in producers if self.flow.segments.get(k, 1) > 1]
        if mapped and grouped:
            return (
                f"a grouped conv splits the channels of {grouped[0]}, and {mapped[0]} writes "
                f"them at mapped positions; the equal-slices rule is not followed there"
            )
        return None

    def _group(self, root: str, found: Members, stream: bool) -> ChannelGroup:
        layers, space, producers = self.layers, self.spaces[root], self.sets[root]
        head = producers[0]
        prod = []
        for k in producers:
            segments = getattr(layers.modules[k], "groups", 1)
            prod.append(Member(k, "producer", layers.kind(k), space.maps[k], segments=segments))
        rest = sorted(found.values(), key=lambda m: (m.role != "carrier", self._rank(m.name)))
        segments = math.lcm(*(self.flow.segments.get(k, 1) for k in producers))
        return ChannelGroup(
            name=f"stream.{head}" if stream else head,
            producers=tuple(m.name for m in prod),
            consumers=tuple(m.name for m in rest if m.role == "consumer"),
            width=space.width,
            kind="stream" if stream else "block",
            members=tuple(prod) + tuple(rest),
            segments=segments,
        )

    def _layer_depths(self) -> dict[str, int]:
        """Layers on the longest path from the input to each layer (the group's name is its
        producer nearest the input: a stream is named after its stem or projection shortcut)."""
        depth: dict[str, int] = {}
        for node in self.graph.nodes:
            d = max((depth.get(t.name, 0) for t in node.inputs), default=0)
            name = self.layers.layer_of.get(id(node))
            if name is not None:
                d += 1
                depth[name] = d
            for t in node.outputs:
                depth[t.name] = d
        return depth
