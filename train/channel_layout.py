"""What removing a channel touches in the masked model, and the masks that remove it.

A channel's entries are its group's members (``train.groups``), each read through the table of
``train.channel_axes``: the producers' weight rows and biases, depthwise filters and biases that
carry the channel, every consumer's weight columns, through concat offsets, flatten blocks and
grouped-conv slices. The controller masks those entries, ablate zeroes them
(``train.slicing.zero_removed``), which is what physically slimming the channel computes
(``train.slicing.slice_model``, ``slim``); norms and per-channel tensors stay as they are in the
masked model (the zero consumer columns make them harmless) and are cut by the slicers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from train.channel_axes import CONV_TRANSPOSE, channel_axes, grouped_mask, weight_channels
from train.groups import ChannelGroup, ChannelMap, Member
from train.masks import MASKABLE


@dataclass(frozen=True)
class _Slot:
    """Group ``group`` occupies positions ``map`` along ``dim`` of a parameter; with
    ``segments`` > 1 the parameter is a grouped conv's weight and ``dim`` 1 holds each conv
    group's own input channels."""

    group: int
    dim: int
    map: ChannelMap
    width: int
    segments: int = 1


class ChannelLayout:
    """Where every group's channels sit in the model's Conv/Linear weights and biases: producer
    rows and biases, consumer columns (through concat offsets, flatten blocks and grouped-conv
    slices), depthwise filter rows and biases. Norms and per-channel tensors are left dense (a
    removed channel's consumers read it with zero weights; ``train.slicing`` removes them).

    Removing channels masks every entry they occupy (``allowed``); ``capacity`` counts a weight's
    positions inside alive channels with Python ints (no device sync)."""

    def __init__(self, modules: Mapping[str, nn.Module], groups: Sequence[ChannelGroup]) -> None:
        self.slots: dict[str, list[_Slot]] = {}
        for gi, group in enumerate(groups):
            for member in group.members:
                self._add(modules, gi, group, member)

    def _add(self, modules, gi: int, group: ChannelGroup, member: Member) -> None:
        module = modules.get(member.name)
        if member.kind in ("norm", "tensor"):
            return
        if not isinstance(module, MASKABLE + CONV_TRANSPOSE):
            raise ValueError(
                f"channel group {group.name!r}: {member.role} {member.name!r} is not a "
                f"Conv/Linear module"
            )
        if member.segments > 1 and getattr(module, "groups", 1) != member.segments:
            raise ValueError(
                f"channel group {group.name!r}: {member.name} has groups="
                f"{getattr(module, 'groups', 1)}, not {member.segments}"
            )
        axes = channel_axes(module, member)  # the weight first, then a producer's bias
        size = weight_channels(module, axes[0].dim)
        if member.map.size(group.width) != size:
            raise ValueError(
                f"channel group {group.name!r}: {member.role} {member.name!r} has {size} "
                f"channels where the group's map needs {member.map.size(group.width)}"
            )
        for axis in axes:
            slot = _Slot(gi, axis.dim, member.map, group.width, axis.segments)
            self.slots.setdefault(axis.name, []).append(slot)

    def params_of(self, group: int) -> list[str]:
        return [name for name, slots in self.slots.items() if any(s.group == group for s in slots)]

    def allowed(
        self, name: str, shape: Sequence[int], alive: Sequence[Tensor], widths: Sequence[int]
    ) -> Tensor | None:
        """Broadcastable bool over parameter ``name``: inside alive channels (None: all are)."""
        out = None
        for slot in self.slots.get(name, ()):
            if widths[slot.group] == slot.width:
                continue
            keep = alive[slot.group]
            dead = (~keep).nonzero().squeeze(1)
            if slot.segments > 1:
                per, g = shape[1], slot.segments
                cols = torch.ones(per * g, dtype=torch.bool, device=keep.device)
                cols[slot.map.positions(dead, slot.width)] = False
                grid = grouped_mask(cols, g, shape[0] // g)
                view = grid.view(shape[0], per, *([1] * (len(shape) - 2)))
            else:
                line = torch.ones(shape[slot.dim], dtype=torch.bool, device=keep.device)
                line[slot.map.positions(dead, slot.width)] = False
                dims = [1] * len(shape)
                dims[slot.dim] = -1
                view = line.view(dims)
            out = view if out is None else out & view
        return out

    def capacity(self, name: str, shape: Sequence[int], widths: Sequence[int]) -> int:
        """Positions of parameter ``name`` inside alive channels."""
        sizes = list(shape)
        for slot in self.slots.get(name, ()):
            dead = slot.width - widths[slot.group]
            lost = dead * slot.map.outer * slot.map.inner
            sizes[slot.dim] -= lost // slot.segments
        return math.prod(sizes)
