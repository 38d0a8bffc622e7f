"""Chase in your own training loop: the small public API.

    from chase_deploy.library import Chase, ChaseConfig, channel_groups, save_checkpoint

    groups = channel_groups(model, (3, 32, 32))          # traced once through ONNX
    chase = Chase(model, groups, ChaseConfig(density=0.1, channel_sparsity=0.5), optimizer,
                  steps_per_epoch=len(loader), epochs=epochs)
    ...  loss.backward(); chase.before_step(t); optimizer.step(); chase.after_step(t)
    save_checkpoint("final.pt", model, chase, model_name="mynets:build", sample_shape=(3, 32, 32),
                    groups=groups)

With ``ChaseConfig(init="snip")`` (or ``"grasp"``) pass ``init_data=`` a few training batches of
(inputs, labels): the layers' initial counts come from that one-shot saliency (``train.saliency``).

``chase-deploy slim final.pt`` then accepts the checkpoint like one written by
``chase-deploy train``: it rebuilds the model from ``model_name`` (a registry name,
``torchvision:``/``timm:`` name or ``MODULE:CALLABLE`` import path) with ``model_kwargs``, so
the factory must be importable where slim runs. ``train.slicing.slice_model(model, groups,
chase.channel_plan())`` shrinks the PyTorch model itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from chase_deploy.graph.analysis import derive_groups
from train.chase import Chase
from train.checkpoint import save_checkpoint as _save
from train.config import ChaseConfig
from train.errors import BadInput
from train.group_fit import fitted
from train.groups import ModelGroups
from train.models import resolve
from train.slicing import slice_model
from train.state_versions import KEY as VERSIONS_KEY
from train.state_versions import module_versions

__all__ = ["Chase", "ChaseConfig", "channel_groups", "save_checkpoint", "slice_model"]


def channel_groups(
    model: nn.Module, sample_shape: Sequence[int], prune_skip: bool = False
) -> ModelGroups:
    """The channel groups Chase may prune in ``model`` for one sample of ``sample_shape``
    ([C, H, W]): the same analysis ``slim`` runs, on an ONNX export of a batch of 2.
    ``.groups`` lists them, ``.excluded`` says why every other layer is kept whole (a derived
    group that does not fit the model's modules among them, as in training)."""
    return fitted(model, derive_groups(model, sample_shape, prune_skip), prune_skip, sample_shape)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    chase: Chase | None,
    *,
    model_name: str,
    sample_shape: Sequence[int],
    model_kwargs: dict[str, Any] | None = None,
    epoch: int = 0,
    step: int | None = None,
    recipe: dict[str, Any] | None = None,
    groups: ModelGroups | None = None,
) -> None:
    """Write a checkpoint ``chase-deploy slim`` / ``inspect`` accept (atomically; it loads with
    ``torch.load(weights_only=True)``). ``model_name`` and ``model_kwargs`` must rebuild
    ``model``'s architecture: they are checked here by building it and comparing shapes.
    ``groups`` (the ``channel_groups`` Chase was given) are saved so later stages need not
    trace the model again."""
    kwargs = dict(model_kwargs or {})
    rebuilt = resolve(model_name).create(**kwargs)
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if mine != theirs:
        diff = sorted(set(mine.items()) ^ set(theirs.items()))[:1]
        raise BadInput(
            f"save_checkpoint: {model_name}({kwargs}) does not rebuild this model (first "
            f"difference: {diff}); pass the model_name and model_kwargs that built it"
        )
    masks = {k: v.detach().cpu() for k, v in chase.masks.items()} if chase is not None else {}
    plan = chase.channel_plan().to_dict() if chase is not None else {}
    state = model.state_dict()
    ckpt = {
        "model": {"name": model_name, "kwargs": kwargs},
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        VERSIONS_KEY: module_versions(state),
        "masks": masks,
        "channel_plan": plan,
        "recipe": dict(recipe) if recipe is not None else _recipe(chase),
        "progress": {"epoch": epoch, "step": step if step is not None else _step(chase)},
        "input_shape": [int(d) for d in sample_shape],
    }
    if groups is not None:
        ckpt["channel_groups"] = groups.to_dict()
    _save(path, ckpt)


def _recipe(chase: Chase | None) -> dict[str, Any]:
    """The Chase settings, so ``inspect`` and ``analyze`` read ``prune_skip`` and friends."""
    return {"chase": dataclasses.asdict(chase.cfg)} if chase is not None else {}


def _step(chase: Chase | None) -> int:
    return int(chase.step) if chase is not None else 0
