"""The PyTorch slicer (``train.slicing``): for every registry model and every own-model test
architecture, the masked model and the physically sliced one compute the same outputs, every
width equals the plan, and the returned cuts carry optimizer state and masks the same way."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tests import own_models
from tests.derived_groups import groups_for, registry_case
from tests.slim_models import random_kept, randomize_bn
from train.groups import ChannelGroup
from train.models import create_model, list_models
from train.plan import ChannelPlan, LayerPlan, plan_from_groups
from train.slicing import group_alive, mask_pruned, slice_model

# The own-model tests train these with num_classes 4 from the data: same architecture, one trace.
OWN = {
    name: (f"own_models:{name}", {"width": 8, "num_classes": 4, "in_channels": 3}, (3, 16, 16))
    for name in (*own_models.ARCHITECTURES, "ghostnet")
}
CASES = {name: (name, *registry_case(name)) for name in list_models()} | OWN


def random_plan(groups, seed: int, frac: float = 0.4) -> ChannelPlan:
    """Each group keeps a random ``frac`` of its channels (every producer in its own rows)."""
    rng = np.random.default_rng(seed)
    alive = []
    for group in groups:
        keep = torch.zeros(group.width, dtype=torch.bool)
        keep[list(random_kept(rng, group.width, frac, group.segments))] = True
        alive.append(keep)
    return plan_from_groups(list(groups), alive)


def _out_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return module.out_channels


@pytest.mark.parametrize("case", sorted(CASES))
def test_sliced_model_equals_the_masked_model(case: str) -> None:
    name, kwargs, shape = CASES[case]
    for prune_skip in (False, True):
        groups = groups_for(name, shape, prune_skip, **kwargs)
        assert len(groups) > 0
        torch.manual_seed(0)
        model = randomize_bn(create_model(name, **kwargs), seed=1)
        plan = random_plan(groups, seed=2)
        masked = mask_pruned(copy.deepcopy(model), groups, plan).eval()
        sliced = copy.deepcopy(masked)
        result = slice_model(sliced, groups, plan)
        x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want, got = masked(x), sliced.eval()(x)
        assert want.abs().max() > 0.05
        # the project's lossless rule (docs/algorithm.md): fp32 rounding of a different summation order
        # scales with the outputs (ImageNet ResNet-50's fan-in init gives logits near 75)
        assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
        modules = dict(sliced.named_modules())
        for group, keep in zip(groups, group_alive(groups, plan), strict=True):
            kept = int(keep.sum())
            assert result.widths[group.name] == kept < group.width
            for producer in group.role("producer"):  # a mapped producer writes rows per channel
                assert _out_width(modules[producer.name]) == producer.map.size(kept), producer
            for member in group.carriers:
                if member.kind == "depthwise":
                    dw = modules[member.name]
                    assert dw.groups == dw.in_channels
        assert sum(p.numel() for p in sliced.parameters()) < sum(
            p.numel() for p in model.parameters()
        )


def test_cuts_carry_optimizer_state_and_masks() -> None:
    name, kwargs, shape = CASES["resnext"]
    groups = groups_for(name, shape, **kwargs)
    model = create_model(name, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, *shape)).sum().backward()
    opt.step()
    momentum = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    plan = random_plan(groups, seed=4)
    result = slice_model(model, groups, plan)
    params = dict(model.named_parameters())
    grouped = [n for n, c in result.cuts.items() if c.grouped is not None]
    assert grouped  # a grouped conv's columns, cut per conv group
    for name_, cut in result.cuts.items():
        if name_ in momentum:
            carried = cut.apply(momentum[name_])
            assert carried.shape == params[name_].shape
    first = next(n for n, c in result.cuts.items() if c.grouped is None and 0 in c.dims)
    assert torch.equal(result.kept_indices(first)[0], result.cuts[first].dims[0])


def test_plan_with_different_kept_sets_for_one_stream_is_refused() -> None:
    group = ChannelGroup("s", ("a", "b"), ("c",), 4, kind="stream")
    plan = ChannelPlan({"a": LayerPlan(4, (0, 1)), "b": LayerPlan(4, (0, 2))})
    with pytest.raises(ValueError, match="different kept sets"):
        group_alive([group], plan)
