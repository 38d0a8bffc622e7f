"""Where a group member's channels live in PyTorch tensors: the PyTorch twin of ONNX's
``weight_axes`` (``chase_deploy.graph.reading``), written once for every caller.

Conv weights are [out, in/groups, k...], ConvTranspose weights [in, out/groups, k...], Linear
weights [out, in]. So a member's channels sit on

- a producer's (or a depthwise carrier's) weight along its output axis, and its bias along 0;
- a consumer's weight along its input axis;
- a norm's weight, bias, running mean and running variance along 0;
- a per-channel tensor (``kind="tensor"``) along the axis the member names.

A grouped (non-depthwise) conv reading the channels splits its input axis: its weight's
``in/groups`` columns are per conv group, and input channel ``i`` is column ``i % per`` of the
rows of conv group ``i // per``. Each conv group keeps its own columns (``grouped_columns``,
``grouped_mask``), the same number in each.

The slicer (``train.slicing``), the controller's masks (``train.channel_layout``) and the
scores (``output_rows``, ``producer_rows``) all ask here.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from train.groups import Member

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")

Index = TypeVar("Index")  # a 1-D numpy array or torch tensor of indices


class ChannelAxis(NamedTuple):
    """Tensor ``name`` holds the group's channels along ``dim``; with ``segments`` > 1 the dim is
    a grouped conv's input columns, ``segments`` conv groups of them."""

    name: str
    dim: int
    segments: int = 1


def output_dim(module: nn.Module) -> int:
    """The weight axis of a layer's output channels."""
    return 1 if isinstance(module, CONV_TRANSPOSE) else 0


def input_dim(module: nn.Module) -> int:
    """The weight axis of a layer's input channels (per conv group)."""
    return 0 if isinstance(module, CONV_TRANSPOSE) else 1


def channel_axes(module: nn.Module | None, member: Member) -> list[ChannelAxis]:
    """Every tensor of ``member`` (``module`` is its module; unused for a tensor member) that
    holds the group's channels, and along which dim."""
    if member.kind == "tensor":
        return [ChannelAxis(member.name, member.axis)]
    if member.role == "consumer":
        return [ChannelAxis(f"{member.name}.weight", input_dim(module), member.segments)]
    if member.kind == "norm":
        return [
            ChannelAxis(f"{member.name}.{leaf}", 0)
            for leaf in NORM_TENSORS
            if isinstance(getattr(module, leaf, None), Tensor)
        ]
    axes = [ChannelAxis(f"{member.name}.weight", output_dim(module))]
    if getattr(module, "bias", None) is not None:
        axes.append(ChannelAxis(f"{member.name}.bias", 0))
    return axes


def weight_channels(module: nn.Module, dim: int) -> int:
    """Channels a layer's weight spans along ``dim``: dim 1 of a conv's weight holds one conv
    group's share (Conv: input channels, ConvTranspose: output channels)."""
    share = getattr(module, "groups", 1) if dim == 1 else 1
    return module.weight.shape[dim] * share


def output_rows(module: nn.Module, weight: Tensor | None = None) -> Tensor:
    """A layer's weight (or ``weight``, shaped like it) with its output channels on dim 0."""
    weight = module.weight.detach() if weight is None else weight
    return weight.transpose(0, 1) if output_dim(module) else weight


def producer_rows(
    module: nn.Module, member: Member, width: int, weight: Tensor | None = None
) -> Tensor:
    """A producer's weight (or ``weight``) with the group's channel c on row c, for a group of
    ``width`` channels: ``output_rows``, except that a producer writing each channel at several
    rows (its map's ``outer``/``inner``: a gate over a Ghost concatenation) has them side by side
    in one row, so the scores see one filter per channel."""
    rows = output_rows(module, weight)
    cmap = member.map
    if cmap.is_plain:
        return rows
    order = cmap.positions(torch.arange(width, device=rows.device), width)
    order = order.view(cmap.outer, width, cmap.inner).transpose(0, 1).reshape(-1)
    return rows.index_select(0, order).reshape(width, -1)


def grouped_columns(channels: Index, groups: int, per: int) -> list[Index]:
    """For each conv group, the columns (``0 <= c < per``) of its rows that read ``channels``
    (sorted input-channel indices of a grouped conv)."""
    return [
        channels[(channels >= g * per) & (channels < (g + 1) * per)] - g * per
        for g in range(groups)
    ]


def grouped_mask(channels: Tensor, groups: int, rows: int) -> Tensor:
    """A grouped conv's weight mask [groups·rows, per] from a bool per input channel: the rows
    of each conv group see only their own group's columns."""
    per = channels.numel() // groups
    return channels.view(groups, 1, per).expand(groups, rows, per).reshape(groups * rows, per)
