"""The members of each channel group, read off the probe walk's slice edits.

Every constant the walk would slice for a layer's channels is a member of that layer's group:
another layer's weight columns (a *consumer*), a norm's parameters, a depthwise conv's filters or
a per-channel tensor (*carriers*). The edit's labels say which channel sits at which position,
translated into the group's channel space (``spaces``: a gate over a Ghost concatenation writes
each group channel twice), and ``ChannelMap.fit`` turns those pairs into the map the trainer
uses. A group whose members
cannot be written as channel maps is *broken*: it is excluded with the reason.
"""

from __future__ import annotations

import numpy as np

from chase_deploy.graph.matching import Layers, norm_module
from chase_deploy.graph.reading import LAYER_OPS, constant_name, constant_values
from chase_deploy.graph.rules.pointwise import ELEMENTWISE
from chase_deploy.graph.spaces import Space
from chase_deploy.graph.tracks import CHANNEL_BITS, SOURCE_BITS, Flow, SliceEdit
from train.groups import ChannelMap, Member

Members = dict[tuple[str, str], Member]  # (name, role) -> member, of one group
Found = dict[str, Members]  # group root -> its members


def find_members(
    flow: Flow, spaces: dict[str, tuple[str, Space]], layers: Layers, tensors: dict
) -> tuple[Found, dict[str, str]]:
    """The members of each group (keyed by its root layer; ``spaces`` gives each producer's
    root and its group's channel space), and the groups that cannot be expressed, with why."""
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
        own = layers.layer_of.get(id(edit.node)) if edit.node.op in LAYER_OPS else None
        seen: dict[str, tuple[Space, list[np.ndarray], list[np.ndarray]]] = {}
        for source in np.unique(sources).tolist():
            if source == own or source not in spaces:
                continue  # the producer's own rows, or a layer in no group
            r, space = spaces[source]
            mine = sources == source
            _, positions, channels = seen.setdefault(r, (space, [], []))
            positions.append(indices[mine])
            channels.append(space.translate(source, labels[mine] & CHANNEL_BITS))
        for r, (space, positions, channels) in seen.items():
            if r in broken:
                continue
            entry = _member(
                edit, np.concatenate(positions), np.concatenate(channels), space.width,
                layers, tensors,
            )  # fmt: skip
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
    positions: np.ndarray,
    channels: np.ndarray,
    width: int,
    layers: Layers,
    tensors: dict,
) -> Member | str | None:
    """The member an edit describes (``channels``: the group's channel at each of
    ``positions``; None: covered by another edit; str: why it cannot)."""
    node = edit.node
    if node.op in LAYER_OPS:
        name = layers.layer_of.get(id(node))
        if name is None:
            return f"its channels are read by ONNX node {node.name}, which matches no module"
        if edit.index != 1:
            return None  # a bias read with the rows
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
