"""Models and Chase-like pruned checkpoints for the slim/surgery/inspect tests.

``chase_prune`` does to a model what Chase leaves behind: for every channel group it picks a
random kept set, zeroes the producers' rows (and biases) and the consumers' columns; norm layers
keep random statistics, so a removed channel's activation is a non-zero constant that only the
zeroed consumer columns make harmless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PLAN_FORMAT = {"format": "chase-channel-plan", "version": 1}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))
    return model.eval()


def random_kept(rng, width: int, frac: float, segments: int = 1) -> list[int]:
    """A random kept set keeping ``1 - frac`` of ``width`` (the same count in each segment)."""
    per = width // segments
    count = max(1, int(round(per * (1 - frac))))
    return sorted(
        int(c) + s * per
        for s in range(segments)
        for c in rng.choice(per, size=count, replace=False)
    )


def chase_prune(model: nn.Module, groups, frac: float = 0.4, seed: int = 0) -> dict:
    """Prune ``frac`` of each group's channels (random kept sets); return the channel plan.

    Derived groups (``train.groups.ChannelGroup``) are zeroed through all their members
    (``train.slicing.zero_removed``); the hand-made ``Group`` below through producer rows and
    consumer columns."""
    from train.groups import ChannelGroup
    from train.slicing import zero_removed

    rng = np.random.default_rng(seed)
    modules = dict(model.named_modules())
    layers, alive = {}, []
    with torch.no_grad():
        for group in groups:
            width = group.width
            kept = random_kept(rng, width, frac, getattr(group, "segments", 1))
            keep = torch.zeros(width, dtype=torch.bool)
            keep[kept] = True
            alive.append(keep)
            dropped = sorted(set(range(width)) - set(kept))
            for name in group.producers:
                layers[name] = {"out_channels": width, "kept": kept}
            if isinstance(group, ChannelGroup):
                continue
            for name in group.producers:
                modules[name].weight[dropped] = 0
                if modules[name].bias is not None:
                    modules[name].bias[dropped] = 0
            for name in group.consumers:
                weight = modules[name].weight
                per_channel = weight.shape[1] // width  # a Linear after flatten reads HW features
                cols = [c * per_channel + r for c in dropped for r in range(per_channel)]
                weight[:, cols] = 0
    derived = [g for g in groups if isinstance(g, ChannelGroup)]
    if derived:
        zero_removed(
            model, derived, [a for g, a in zip(groups, alive, strict=True) if g in derived]
        )
    return {**PLAN_FORMAT, "layers": layers}


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.weight": m.weight.detach() != 0
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }


def make_checkpoint(
    path: Path,
    name: str = "resnet_quick",
    kwargs: dict | None = None,
    input_shape: list[int] | None = (1, 16, 16),
    prune_skip: bool = False,
    frac: float = 0.4,
    seed: int = 0,
) -> dict:
    """Save a registry-model checkpoint pruned like Chase; returns its channel plan."""
    from tests.derived_groups import groups_for
    from train.checkpoint import save_checkpoint
    from train.models import create_model

    torch.manual_seed(seed)
    kwargs = dict(kwargs) if kwargs is not None else {"width": 8}
    model = randomize_bn(create_model(name, **kwargs), seed)
    trace = (
        tuple(input_shape)
        if input_shape
        else (1, kwargs.get("input_size", 8), kwargs.get("input_size", 8))
    )
    plan = chase_prune(model, groups_for(name, trace, prune_skip, **kwargs), frac, seed)
    ckpt = {
        "model": {"name": name, "kwargs": kwargs},
        "state_dict": model.state_dict(),
        "masks": masks_of(model),
        "channel_plan": plan,
        "recipe": {"chase": {"prune_skip": prune_skip}},  # the groups later stages trace
        "progress": {"epoch": 1, "step": 1},
    }
    if input_shape is not None:
        ckpt["input_shape"] = list(input_shape)
    save_checkpoint(path, ckpt)
    return plan


class Group:
    """A channel group for models outside the registry (same fields ``chase_prune`` reads)."""

    def __init__(self, producers, consumers, width):
        self.producers, self.consumers, self.width = tuple(producers), tuple(consumers), width


class VGGFlat(nn.Module):
    """A small VGG whose classifier reads the flattened 4x4 feature map (no global pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(12 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    def groups(self):
        return [
            Group(["features.0"], ["features.4"], 8),
            Group(["features.4"], ["classifier.1"], 12),
        ]


class MobileBlock(nn.Module):
    """MobileNetV2-style: stem, inverted residual (expand 1x1, depthwise 3x3 with a channel
    multiplier of 1, project 1x1) added to the stem, then pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.expand = nn.Conv2d(8, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
        self.bn2 = nn.BatchNorm2d(24)
        self.project = nn.Conv2d(24, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn0(self.stem(x)))
        y = F.relu6(self.bn1(self.expand(x)))
        y = F.hardswish(self.bn2(self.dw(y)))
        x = x + self.bn3(self.project(y))
        return self.head(x.mean((2, 3)))

    def groups(self, prune_skip: bool = False):
        groups = [Group(["expand"], ["project"], 24)]
        if prune_skip:
            groups.append(Group(["stem", "project"], ["expand", "head"], 8))
        return groups


class ConcatNet(nn.Module):
    """Two branches concatenated along channels, read by one conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 10, 1)
        self.bn = nn.BatchNorm2d(16)
        self.c = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        return self.c(y).mean((2, 3))

    def prune(self, seed: int = 0) -> dict:
        """Prune a and b separately; c's columns of each at their concat offset."""
        rng = np.random.default_rng(seed)
        layers = {}
        with torch.no_grad():
            for name, width, offset in (("a", 6, 0), ("b", 10, 6)):
                kept = sorted(rng.choice(width, size=width // 2 + 1, replace=False).tolist())
                dropped = [c for c in range(width) if c not in kept]
                getattr(self, name).weight[dropped] = 0
                getattr(self, name).bias[dropped] = 0
                self.c.weight[:, [offset + c for c in dropped]] = 0
                layers[name] = {"out_channels": width, "kept": kept}
        return {**PLAN_FORMAT, "layers": layers}
