"""Physically smaller PyTorch modules: remove the pruned channels of a plan from a model, in place.

Pure PyTorch (no ONNX): the channel groups (``train.groups``) say which tensors hold each
group's channels and where; the channel plan says which channels survive, in ORIGINAL indices.
``slice_model`` replaces every affected parameter and buffer by a smaller one (new
``nn.Parameter`` objects) and fixes the module attributes that describe them
(``out_channels``/``in_channels``/``groups`` of convs, ``in_features``/``out_features`` of
Linear layers, ``num_features`` of norms). What it touches, per group member:

- producers: weight rows (dim 0; a ConvTranspose's dim 1) and bias;
- carriers: norm weight, bias, running mean and variance; depthwise conv filter rows and bias,
  with ``groups`` lowered to the new input width; per-channel tensors (a layer scale) on their
  channel axis;
- consumers: weight columns (dim 1; a ConvTranspose's dim 0), through the member's channel map
  (concat offset, a flatten's H·W block); a grouped conv keeps, in each conv group, that group's
  own columns (the same number in each).

The returned ``SliceResult`` maps every parameter/buffer name it replaced to its ``Cut``, so a
caller can cut anything shaped like it the same way: optimizer state (momentum buffers), Chase's
masks. ``mask_pruned`` is the masked counterpart (zero what slicing removes; the model keeps its
shapes): both compute the same function, which ``tests/test_slicing.py`` checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from train.channel_axes import CONV, CONV_TRANSPOSE, ChannelAxis, channel_axes, grouped_columns
from train.channel_layout import ChannelLayout
from train.groups import ChannelGroup, Member
from train.plan import ChannelPlan, LayerPlan


@dataclass(frozen=True)
class Cut:
    """How one tensor shrank. ``dims`` maps a dim to the ORIGINAL indices it keeps (sorted);
    ``grouped`` = (conv groups, [groups, m] column indices within each group) for a grouped
    conv's weight, whose dim 1 keeps each conv group's own columns. ``apply`` does the grouped
    gather first (on the original rows), then each ``index_select``."""

    dims: dict[int, Tensor] = field(default_factory=dict)
    grouped: tuple[int, Tensor] | None = None

    def apply(self, tensor: Tensor) -> Tensor:
        out = tensor
        if self.grouped is not None:
            groups, cols = self.grouped
            rows = out.shape[0] // groups
            blocks = [
                out[g * rows : (g + 1) * rows].index_select(1, cols[g].to(out.device))
                for g in range(groups)
            ]
            out = torch.cat(blocks, 0)
        for dim, index in sorted(self.dims.items()):
            out = out.index_select(dim, index.to(out.device))
        return out

    def restore(self, tensor: Tensor, shape: Sequence[int], fill: float = 0.0) -> Tensor:
        """The inverse of ``apply``: ``tensor`` (cut) put back at its original positions in a new
        tensor of the original ``shape``; the removed entries are ``fill``. Exact (a scatter)."""
        out = tensor
        grouped_cols = self.grouped[1].shape[1] if self.grouped is not None else None
        for dim, index in sorted(self.dims.items(), reverse=True):
            size = list(out.shape)
            size[dim] = grouped_cols if dim == 1 and grouped_cols is not None else shape[dim]
            full = out.new_full(size, fill)
            full.index_copy_(dim, index.to(out.device), out)
            out = full
        if self.grouped is not None:
            groups, cols = self.grouped
            full = out.new_full(tuple(shape), fill)
            rows = shape[0] // groups
            for g in range(groups):
                block = slice(g * rows, (g + 1) * rows)
                full[block].index_copy_(1, cols[g].to(out.device), out[block])
            out = full
        return out


@dataclass
class SliceResult:
    """What ``slice_model`` changed."""

    cuts: dict[str, Cut]  # parameter/buffer name -> how it was cut
    widths: dict[str, int]  # group name -> channels kept
    modules: list[str]  # modules whose tensors and attributes changed

    def kept_indices(self, name: str) -> dict[int, Tensor]:
        """dim -> kept original indices of parameter/buffer ``name`` (plain cuts)."""
        return dict(self.cuts[name].dims) if name in self.cuts else {}


def group_alive(groups: Sequence[ChannelGroup], plan: ChannelPlan) -> list[Tensor]:
    """Each group's bool keep vector from a plan (a group none of whose producers the plan lists
    keeps everything). All producers of a group must keep the same channels, each listed in its
    own rows (a mapped producer lists every row of a kept channel)."""
    alive = []
    for group in groups:
        entries = {
            m.name: _kept_channels(group, m, plan.layers[m.name])
            for m in group.role("producer")
            if m.name in plan.layers
        }
        keeps = list(entries.values())
        if any(not torch.equal(k, keeps[0]) for k in keeps[1:]):
            raise ValueError(
                f"channel group {group.name!r}: its producers {sorted(entries)} list different "
                f"kept sets; coupled layers must keep the same channels"
            )
        alive.append(keeps[0] if keeps else torch.ones(group.width, dtype=torch.bool))
    return alive


def _kept_channels(group: ChannelGroup, member: Member, entry: LayerPlan) -> Tensor:
    """The group channels one producer's plan entry keeps (its kept rows, mapped back)."""
    size = member.map.size(group.width)
    if entry.out_channels != size:
        raise ValueError(
            f"channel group {group.name!r}: the plan has {entry.out_channels} channels for "
            f"{member.name}, the model {size}"
        )
    rows = torch.zeros(size, dtype=torch.bool)
    rows[list(entry.kept)] = True
    if member.map.is_plain:
        return rows
    cmap = member.map
    at = cmap.positions(torch.arange(group.width), group.width)
    at = at.view(cmap.outer, group.width, cmap.inner)
    keep = rows[at].all(2).all(0)
    if not torch.equal(rows[at], keep.view(1, -1, 1).expand_as(at)):
        channel = int((rows[at] != keep.view(1, -1, 1)).any(2).any(0).nonzero()[0])
        raise ValueError(
            f"channel group {group.name!r}: the plan keeps some rows of {member.name} that hold "
            f"channel {channel} and not others; a channel's rows go together"
        )
    return keep


def mask_pruned(model: nn.Module, groups: Sequence[ChannelGroup], plan: ChannelPlan) -> nn.Module:
    """Zero, in place, every Conv/Linear entry the plan's removed channels occupy (producer rows
    and biases, consumer columns, depthwise filters): what Chase's masks leave behind."""
    groups = list(groups)
    return zero_removed(model, groups, group_alive(groups, plan))


@torch.no_grad()
def zero_removed(
    model: nn.Module, groups: Sequence[ChannelGroup], alive: Sequence[Tensor]
) -> nn.Module:
    """``mask_pruned`` with each group's bool keep vector instead of a plan."""
    groups = list(groups)
    widths = [int(a.sum()) for a in alive]
    layout = ChannelLayout(dict(model.named_modules()), groups)
    params = dict(model.named_parameters())
    for name in layout.slots:
        param = params[name]
        allowed = layout.allowed(name, param.shape, [a.to(param.device) for a in alive], widths)
        if allowed is not None:
            param.mul_(allowed.to(param.dtype))
    return model


@torch.no_grad()
def slice_model(model: nn.Module, groups: Sequence[ChannelGroup], plan: ChannelPlan) -> SliceResult:
    """Rebuild, in place, every module the plan's removed channels touch, physically smaller."""
    groups = list(groups)
    alive = group_alive(groups, plan)
    modules = dict(model.named_modules())
    removed: dict[str, dict[int, set[int]]] = {}  # tensor -> dim -> removed positions
    grouped: dict[str, tuple[int, set[int]]] = {}  # tensor -> (groups, removed input channels)
    depthwise_in: dict[str, int] = {}  # depthwise conv -> input channels removed
    touched: list[str] = []
    for group, keep in zip(groups, alive, strict=True):
        dead = (~keep).nonzero().squeeze(1)
        if not len(dead):
            continue
        for member in group.members:
            positions = member.map.positions(dead, group.width).tolist()
            for axis in _axes(modules, member):
                if axis.segments > 1:
                    entry = grouped.setdefault(axis.name, (axis.segments, set()))
                    entry[1].update(positions)
                else:
                    removed.setdefault(axis.name, {}).setdefault(axis.dim, set()).update(positions)
            if member.kind == "depthwise":
                mult = modules[member.name].out_channels // modules[member.name].in_channels
                depthwise_in[member.name] = depthwise_in.get(member.name, 0) + (
                    len(member.map.positions(dead, group.width)) // mult
                )
            owner = member.name if member.kind != "tensor" else member.name.rpartition(".")[0]
            if owner not in touched:
                touched.append(owner)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    cuts: dict[str, Cut] = {}
    for name in sorted(set(removed) | set(grouped)):
        old = tensors[name]
        dims = {}
        for dim, gone in removed.get(name, {}).items():
            keep_idx = [i for i in range(old.shape[dim]) if i not in gone]
            dims[dim] = torch.tensor(keep_idx, dtype=torch.long)
        cut_grouped = None
        if name in grouped:
            n_groups, gone = grouped[name]
            per = old.shape[1]
            kept = torch.tensor([i for i in range(per * n_groups) if i not in gone])
            cols = grouped_columns(kept.to(torch.long), n_groups, per)
            if len({len(c) for c in cols}) != 1:
                raise ValueError(
                    f"{name}: a grouped conv must keep the same number of input channels in "
                    f"each of its {n_groups} groups, the plan keeps {[len(c) for c in cols]}"
                )
            cut_grouped = (n_groups, torch.stack(cols))
        cut = Cut(dims, cut_grouped)
        cuts[name] = cut
        _replace(model, name, cut.apply(old.detach()))
    for name in touched:
        _fix_attributes(modules[name], depthwise_in.get(name, 0))
    widths = {g.name: int(a.sum()) for g, a in zip(groups, alive, strict=True)}
    return SliceResult(cuts, widths, touched)


def _axes(modules: dict[str, nn.Module], member: Member) -> list[ChannelAxis]:
    """The tensors of one member that hold its group's channels (``train.channel_axes``)."""
    module = None if member.kind == "tensor" else modules[member.name]
    return channel_axes(module, member)


def _replace(model: nn.Module, name: str, value: Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    old = getattr(owner, leaf)
    if isinstance(old, nn.Parameter):
        setattr(owner, leaf, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        owner._buffers[leaf] = value.contiguous()


def _fix_attributes(module: nn.Module, depthwise_removed: int) -> None:
    if isinstance(module, CONV):
        weight = module.weight
        if depthwise_removed:
            module.in_channels -= depthwise_removed
            module.groups = module.in_channels
        else:
            module.in_channels = weight.shape[1] * module.groups
        module.out_channels = weight.shape[0]
    elif isinstance(module, CONV_TRANSPOSE):
        module.in_channels = module.weight.shape[0]
        module.out_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = module.num_groups = module.weight.shape[0]
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        ref = module.weight if module.weight is not None else module.running_mean
        module.num_features = ref.shape[0]
