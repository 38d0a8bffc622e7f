"""Channel groups for the tests, derived from the graph once per architecture: the ONNX trace
takes a second or two, and every instance of one architecture has the same groups (the cache key
is the module's printed structure and the sample shape)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chase_deploy.graph.analysis import ChannelAnalysis, analyze
from train.groups import ModelGroups
from train.models import create_model

_CACHE: dict[tuple[str, tuple[int, ...]], ChannelAnalysis] = {}


def analyze_cached(model: nn.Module, sample_shape: Sequence[int]) -> ChannelAnalysis:
    """``chase_deploy.graph.analysis.analyze`` with a per-architecture cache (tests that run
    the CLI several times on one architecture patch it in)."""
    key = (str(model), tuple(int(d) for d in sample_shape))
    if key not in _CACHE:
        _CACHE[key] = analyze(model, key[1])
    return _CACHE[key]


def derive_cached(
    model: nn.Module, sample_shape: Sequence[int], prune_skip: bool = False
) -> ModelGroups:
    """``chase_deploy.graph.analysis.derive_groups`` with a per-architecture cache (the
    ``derive_groups`` the tests hand to ``train.loop.train``)."""
    return analyze_cached(model, sample_shape).groups(prune_skip)


def groups_for(
    name: str, shape: tuple[int, ...], prune_skip: bool = False, **kwargs
) -> ModelGroups:
    """The groups of ``create_model(name, **kwargs)`` for samples of ``shape`` ([C, H, W]);
    the global RNG is left as it was."""
    with torch.random.fork_rng():
        model = create_model(name, **kwargs)
    return derive_cached(model, shape, prune_skip)


# One small version per registry model, shared by every test module that needs registry groups.
REGISTRY = {
    "mlp": ({"in_channels": 1, "input_size": 8}, (1, 8, 8)),
    "resnet_quick": ({"width": 4}, (1, 16, 16)),
    "resnet50": ({}, (3, 32, 32)),
}


def registry_case(name: str) -> tuple[dict, tuple[int, ...]]:
    """(kwargs, sample shape) of the shared small version of registry model ``name``."""
    return REGISTRY.get(name, ({}, (3, 16, 16)))
