"""The channel groups a run trained with, read back from its checkpoint.

Training derives the groups once (``graph.analysis.derive_groups``) and saves them with the run:
``channel_groups.json`` in the run directory and a ``channel_groups`` entry in every checkpoint
(``train.groups.ModelGroups.to_dict``). ``analyze``, ``ablate``, ``inspect`` and ``slim.pt2``
(``torch_export.physically_slim``) read them here, so every stage works on exactly the groups
training pruned, with the ``prune_skip`` training used. Only a checkpoint without them (trained
without channel pruning, or written before they were saved) has its model traced again.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from train.errors import BadInput
from train.groups import ModelGroups

KEY = "channel_groups"


def saved_groups(ckpt: dict[str, Any], model: nn.Module | None = None) -> ModelGroups | None:
    """The checkpoint's saved groups (None if it has none); with ``model``, checked to fit its
    modules (every member a module of the right width)."""
    raw = ckpt.get(KEY)
    if raw is None:
        return None
    try:
        groups = ModelGroups.from_dict(raw)
    except ValueError as e:
        raise BadInput(
            f"checkpoint entry {KEY} is malformed ({e}); is the checkpoint corrupt?"
        ) from None
    if model is not None:
        _check_fit(groups, model)
    return groups


def checkpoint_groups(
    ckpt: dict[str, Any], prune_skip: bool | None = None, model: nn.Module | None = None
) -> ModelGroups:
    """The groups training used (saved in the checkpoint), or, for a checkpoint without them or
    a ``prune_skip`` other than training's, the groups traced from its model
    (``graph.analysis.traced_checkpoint_groups``), kept to those that fit it as in training
    (``train.group_fit``)."""
    found = saved_groups(ckpt, model)
    if found is not None and (prune_skip is None or found.prune_skip == prune_skip):
        return found
    from chase_deploy.graph.analysis import traced_checkpoint_groups as traced
    from train.checkpoint import build_model_from_checkpoint
    from train.group_fit import fitted

    if model is None:
        model = build_model_from_checkpoint(ckpt, apply_masks=False)
    groups = traced(ckpt, prune_skip, model)
    return fitted(model, groups, groups.prune_skip, groups.input_shape)


def _check_fit(groups: ModelGroups, model: nn.Module) -> None:
    from train.channel_layout import ChannelLayout

    try:
        ChannelLayout(dict(model.named_modules()), list(groups))
    except ValueError as e:
        raise BadInput(
            f"checkpoint entry {KEY} does not fit its model ({e}); is the checkpoint corrupt?"
        ) from None
