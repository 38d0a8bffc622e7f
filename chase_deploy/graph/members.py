"""The members of each channel group, read off the probe walk's slice edits.

Every constant the walk would slice for a layer's channels is a member of that layer's group:
another layer's weight columns (a *consumer*), a norm's parameters, a depthwise conv's filters or
a per-channel tensor (*carriers*). The edit's labels say which channel sits at which position,
and ``ChannelMap.fit`` turns those pairs into the map the trainer uses. A group whose members
cannot be written as channel maps is *broken*: it is excluded with the reason.
"""

from __future__ import annotations

import numpy as np

from chase_deploy.graph.matching import Layers, norm_module
from chase_deploy.graph.reading import LAYER_OPS, constant_name, constant_values
from chase_deploy.graph.rules.pointwise import ELEMENTWISE
from chase_deploy.graph.tracks import CHANNEL_BITS, SOURCE_BITS, Flow, SliceEdit
from train.groups import ChannelMap, Member

Members = dict[tuple[str, str], Member]  # (name, role) -> member, of one group
Found = dict[str, Members]  # group root -> its members


def find_members(
    flow: Flow, root: dict[str, str], layers: Layers, tensors: dict
) -> tuple[Found, dict[str, str]]:
    """The members of each group (keyed by its root layer), and the groups that cannot be
    expressed, with why."""
    names = {i: s for s, i in flow.source_ids.items()}
    found: Found = {}
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
            entry = _member(
                edit, str(source), indices[mine], labels[mine] & CHANNEL_BITS, layers, tensors
            )
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


def _member(
    edit: SliceEdit,
    source: str,
    positions: np.ndarray,
    channels: np.ndarray,
    layers: Layers,
    tensors: dict,
) -> Member | str | None:
    """The member an edit describes (None: covered by another edit; str: why it cannot)."""
    node = edit.node
    width = layers.width(source)
    if node.op in LAYER_OPS:
        name = layers.layer_of.get(id(node))
        if name is None:
            return f"its channels are read by ONNX node {node.name}, which matches no module"
        if name == source or edit.index != 1:
            return None  # the producer's own rows/bias, or a bias read with the rows
        weight = constant_values(node.inputs[1])
        if name in layers.depthwise:
            size = weight.shape[0] if node.op == "Conv" else weight.shape[1]
            role, kind, segments = "carrier", "depthwise", 1
        elif edit.segments > 1:
            size = weight.shape[1] * edit.segments
            role, kind, segments = "consumer", layers.kind(name), edit.segments
        else:
            size = weight.shape[edit.axis]
            role, kind, segments = "consumer", layers.kind(name), 1
        cmap = ChannelMap.fit(positions, channels, size, width)
        if cmap is None:
            return f"{name} reads its channels in an order the controller cannot map"
        return Member(name, role, kind, cmap, segments=segments)
    if node.op in ("BatchNormalization", "InstanceNormalization"):
        if edit.index != 1:
            return None
        name = norm_module(node, layers.modules)
        if name is None:
            return f"ONNX node {node.name} ({node.op}) matches no norm module of the model"
        size = constant_values(node.inputs[1]).shape[0]
        cmap = ChannelMap.fit(positions, channels, size, width)
        if cmap is None:
            return f"{name} normalizes its channels in an order the controller cannot map"
        return Member(name, "carrier", "norm", cmap)
    if node.op in ELEMENTWISE:
        tensor = node.inputs[edit.index]
        name = constant_name(tensor)
        owner, _, leaf = name.rpartition(".")
        if leaf == "bias" and owner in layers.node_of:
            return None  # a Linear's bias added after its MatMul: the producer's own bias
        param = tensors.get(name)
        values = constant_values(tensor)
        if param is None or tuple(param.shape) != tuple(values.shape):
            return (
                f"node {node.name} ({node.op}) applies a per-channel constant {name!r} that "
                f"is not a parameter or buffer of the model"
            )
        cmap = ChannelMap.fit(positions, channels, values.shape[edit.axis], width)
        if cmap is None:
            return f"{name} holds its channels in an order the controller cannot map"
        return Member(name, "carrier", "tensor", cmap, axis=edit.axis)
    return f"node {node.name} ({node.op}) slices its channels in a way the trainer cannot follow"
