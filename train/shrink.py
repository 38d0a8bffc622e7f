"""Shrinking during training (``chase.shrink: true``): the model physically loses the channels
Chase removed, so every later step computes less.

The controller keeps reasoning about the ORIGINAL network: its masks, alive channels, budget B,
ERK counts and explorations stay in original shapes and indices. ``Shrinker`` owns the model's
smaller shapes and translates between the two:

- ``rebuild(alive)`` slices the model down to the alive channels with ``train.slicing.slice_model``
  (the one slicer; it runs on a meta-device skeleton of the original network, which yields each
  tensor's cut in original indices, and the model's tensors are re-gathered from their current
  shape through that cut). Every replaced parameter is swapped in the optimizer's parameter lists
  and its optimizer state (momentum) is cut the same way; module attributes (``in_channels``,
  ``groups``, ``num_features``, ...) follow the skeleton. The caller re-reads the parameters
  (``Chase.rebind``) and re-wraps DDP.
- ``inflate(name, tensor)`` puts a live tensor back into its original shape (removed entries 0)
  and ``cut(name, tensor)`` takes an original-shaped one (a mask) down to the live shape: the
  controller reads weights and gradients inflated at its events and re-masks with cut masks.
- ``dense_state_dict`` / ``dense_optimizer_state`` are what checkpoints hold (the checkpoint
  contract of ``docs/file-formats.md``: dense shapes); ``state_dict`` records which channels the model is built with, so a
  resumed run rebuilds exactly the same shapes from the dense checkpoint.

Removed entries come back as zeros in dense checkpoints: the masked weights are zero anyway, and a
removed channel's norm layer reads 0 (weight, bias, running mean and variance), so it outputs 0.

The rule (``due``): a channel event triggers a rebuild once the channels removed since the last
rebuild reach ``REBUILD_FRACTION`` of the prunable channels, and always at the last channel event
(so training after channel pruning runs fully shrunk). A rebuild costs a gather of the touched
tensors, an optimizer-state cut and, under torchrun, a new DDP wrapper (one broadcast), and on
CUDA new kernel choices for the new shapes; bounding the number of rebuilds (at most
1/REBUILD_FRACTION + 1 per run) keeps that cost fixed whatever ``channel_every`` is.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from train.groups import ChannelGroup
from train.plan import plan_from_groups
from train.slicing import Cut, slice_model

REBUILD_FRACTION = 0.05
# Module attributes the slicer may change (ints or tuples of ints); copied from the skeleton.
_SKIP_ATTRIBUTES = ("training",)


class Shrinker:
    """Keeps ``model`` as small as the alive channels of ``groups`` allow (see the module doc).

    ``groups`` are the prunable channel groups Chase was given (original widths), ``optimizer``
    the optimizer over the model's parameters. The model must still have its original shapes."""

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model = model
        self.groups = list(groups)
        self.optimizer = optimizer
        self._skeleton = _meta_copy(model)
        self._shapes = {n: tuple(t.shape) for n, t in _named_tensors(model).items()}
        self.cuts: dict[str, Cut] = {}  # tensor name -> its cut from the original shape
        self.built = [torch.ones(g.width, dtype=torch.bool) for g in self.groups]
        self.rebuilds = 0

    # ------------------------------------------------------------------------------------------
    # The rule

    @property
    def channels_total(self) -> int:
        return sum(g.width for g in self.groups)

    def built_channels(self) -> int:
        return sum(int(b.sum()) for b in self.built)

    def due(self, alive: Mapping[str, Tensor], last_event: bool) -> bool:
        """Whether to rebuild now, after a channel event (``last_event``: the last one)."""
        kept = sum(int(alive[g.name].sum()) for g in self.groups if g.name in alive)
        kept += sum(g.width for g in self.groups if g.name not in alive)
        gone = self.built_channels() - kept
        if gone <= 0:
            return False
        return last_event or gone >= REBUILD_FRACTION * self.channels_total

    # ------------------------------------------------------------------------------------------
    # Rebuilding

    @torch.no_grad()
    def rebuild(self, alive: Mapping[str, Tensor]) -> bool:
        """Slice the model down to ``alive`` (group name -> bool keep vector, original indices;
        groups not listed keep everything). False when the model already has these shapes."""
        keep = [
            alive[g.name].detach().to("cpu", torch.bool).clone() if g.name in alive else b.clone()
            for g, b in zip(self.groups, self.built, strict=True)
        ]
        if all(torch.equal(k, b) for k, b in zip(keep, self.built, strict=True)):
            return False
        for g, k, b in zip(self.groups, keep, self.built, strict=True):
            if bool((k & ~b).any()):
                raise ValueError(f"channel group {g.name!r}: a removed channel cannot come back")
        skeleton = copy.deepcopy(self._skeleton)
        plan = plan_from_groups(self.groups, keep)
        result = slice_model(skeleton, self.groups, plan)
        tensors = _named_tensors(self.model)
        moved: dict[int, tuple[nn.Parameter, nn.Parameter, Callable[[Tensor], Tensor]]] = {}
        for name, cut in result.cuts.items():
            if name in self.cuts and _same_cut(self.cuts[name], cut):
                continue  # this tensor keeps its shape
            old = tensors[name]
            move = self._mover(name, cut)
            new = _replace(self.model, name, move(old.detach()))
            if isinstance(old, nn.Parameter):
                moved[id(old)] = (old, new, move)
        skeleton_modules = dict(skeleton.named_modules())
        live_modules = dict(self.model.named_modules())
        for name in result.modules:
            _copy_attributes(skeleton_modules[name], live_modules[name])
        if self.optimizer is not None:
            _swap_in_optimizer(self.optimizer, moved)
        self.cuts = dict(result.cuts)
        self.built = keep
        self.rebuilds += 1
        return True

    def _mover(self, name: str, cut: Cut) -> Callable[[Tensor], Tensor]:
        """Takes a tensor shaped like ``name`` now to its new shape (through the original one)."""
        before = self.cuts.get(name)
        shape = self._shapes[name]

        def move(t: Tensor) -> Tensor:
            full = before.restore(t, shape) if before is not None else t
            return _same_layout(cut.apply(full), t)

        return move

    # ------------------------------------------------------------------------------------------
    # Original shapes <-> live shapes

    def shape(self, name: str) -> tuple[int, ...]:
        """The original shape of parameter/buffer ``name``."""
        return self._shapes[name]

    def inflate(self, name: str, tensor: Tensor) -> Tensor:
        """``tensor``, shaped like ``name`` now, in the original shape (removed entries 0)."""
        cut = self.cuts.get(name)
        return tensor if cut is None else cut.restore(tensor, self._shapes[name])

    def cut(self, name: str, tensor: Tensor) -> Tensor:
        """``tensor``, in the original shape of ``name``, cut to its shape now."""
        cut = self.cuts.get(name)
        return tensor if cut is None else cut.apply(tensor)

    def dense_state_dict(self) -> dict[str, Tensor]:
        """The model's ``state_dict`` in the original shapes (removed entries 0)."""
        return {k: self.inflate(k, v.detach()) for k, v in self.model.state_dict().items()}

    def dense_optimizer_state(self) -> dict:
        """``optimizer.state_dict()`` with every parameter-shaped state tensor in the original
        shape: it loads into the optimizer of the unshrunk model (and ``load_state_dict`` then
        cuts it again)."""
        assert self.optimizer is not None
        state = self.optimizer.state_dict()
        names = {id(p): n for n, p in self.model.named_parameters()}
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        out = {}
        for index, entry in state["state"].items():
            p = params[index]
            name = names.get(id(p))
            out[index] = {
                k: self.inflate(name, v)
                if name is not None and isinstance(v, Tensor) and v.shape == p.shape
                else v
                for k, v in entry.items()
            }
        return {**state, "state": out}

    # ------------------------------------------------------------------------------------------
    # State

    def state_dict(self) -> dict:
        """The channels the model is built with (original indices), per group."""
        return {"built": {g.name: b.clone() for g, b in zip(self.groups, self.built, strict=True)}}

    def load_state_dict(self, state: Mapping | None) -> bool:
        """Rebuild the (unshrunk) model to the shapes ``state`` records; True if it shrank."""
        if not state:
            return False
        built = state["built"]
        unknown = sorted(set(built) - {g.name for g in self.groups})
        if unknown:
            raise ValueError(f"shrink state names unknown channel group {unknown[0]!r}")
        return self.rebuild({k: v.to(torch.bool) for k, v in built.items()})

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _named_tensors(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


def _same_cut(a: Cut, b: Cut) -> bool:
    if a.dims.keys() != b.dims.keys() or (a.grouped is None) != (b.grouped is None):
        return False
    if any(not torch.equal(a.dims[d], b.dims[d]) for d in a.dims):
        return False
    return a.grouped is None or (
        a.grouped[0] == b.grouped[0] and torch.equal(a.grouped[1], b.grouped[1])
    )


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no memory)."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=t.requires_grad)
        memo[id(t)] = meta
    return copy.deepcopy(model, memo)


def _replace(model: nn.Module, name: str, value: Tensor) -> Tensor:
    """Put ``value`` in place of parameter/buffer ``name``; returns the new tensor."""
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    old = getattr(owner, leaf)
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(value, requires_grad=old.requires_grad)
        setattr(owner, leaf, new)
        return new
    owner._buffers[leaf] = value
    return value


def _same_layout(value: Tensor, like: Tensor) -> Tensor:
    """``value`` (contiguous) in ``like``'s memory format (channels_last stays channels_last)."""
    if like.dim() == 4 and not like.is_contiguous():
        if like.is_contiguous(memory_format=torch.channels_last):
            return value.contiguous(memory_format=torch.channels_last)
    if like.dim() == 5 and not like.is_contiguous():
        if like.is_contiguous(memory_format=torch.channels_last_3d):
            return value.contiguous(memory_format=torch.channels_last_3d)
    return value.contiguous()


def _copy_attributes(source: nn.Module, target: nn.Module) -> None:
    """The slicer's changes to a module's plain attributes (widths, ``groups``)."""
    for key, value in vars(source).items():
        if key.startswith("_") or key in _SKIP_ATTRIBUTES:
            continue
        if _is_int_like(value) and vars(target).get(key) != value:
            setattr(target, key, value)


def _is_int_like(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, tuple) and all(_is_int_like(v) for v in value)


def _swap_in_optimizer(
    optimizer: torch.optim.Optimizer,
    moved: Mapping[int, tuple[nn.Parameter, nn.Parameter, Callable[[Tensor], Tensor]]],
) -> None:
    """Replace each old parameter by its new one in the parameter lists, and cut its state."""
    for group in optimizer.param_groups:
        group["params"] = [moved[id(p)][1] if id(p) in moved else p for p in group["params"]]
    for old, new, move in moved.values():
        entry = optimizer.state.pop(old, None)
        if entry is None:
            continue
        optimizer.state[new] = {
            k: move(v) if isinstance(v, Tensor) and v.shape == old.shape else v
            for k, v in entry.items()
        }
