"""SGD with optional no-decay groups, and the LR schedule as a pure function of the step.

The schedule has no state of its own: restoring the step restores it exactly on resume.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from train.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    decay, no_decay = [], []
    norm_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters()
    }
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if cfg.no_decay_norm_bias and (id(p) in norm_params or p.ndim <= 1):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
    )


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """LR for the 1-based optimizer ``step``: linear warm-up, then constant/step/multistep/cosine."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warmup and step <= warmup:
        return cfg.lr * step / warmup
    epoch = (step - 1) // steps_per_epoch  # 0-based epoch this step belongs to
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    if cfg.lr_schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
