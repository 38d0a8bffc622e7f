"""Shrinking during training (``chase.shrink``, ``train.shrink``): the shrunk model trains exactly
like its masked twin, in place of it.

For every registry model and every own-model test architecture, two copies of the model (same
seed) train the same steps on the same batches: one masked (Chase as usual), one rebuilt
physically smaller after channel events. Both end with the same masks and alive channels (original
indices), the same metrics, and the same kept-channel weights, norm statistics and momentum
within float tolerance (a smaller conv sums its products in another order).

Explorations rank |w| and |grad| over all masked weights; on the large models (millions of
weights) a last-bit difference can swap two near-equal values at the cut (seen: one position of
7.6 M on ResNet-50 after one step), so there the twins run channel pruning without an
exploration in the window (the masks stay the ERK ones plus the channel masks); the small models
run explorations between the channel events as well.
"""

from __future__ import annotations

import own_models
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.derived_groups import groups_for, registry_case
from train.chase import Chase
from train.config import ChaseConfig
from train.models import create_model, list_models
from train.shrink import REBUILD_FRACTION, Shrinker
from train.slicing import Cut

OWN = {
    name: (f"own_models:{name}", {"width": 8, "num_classes": 4, "in_channels": 3}, (3, 16, 16))
    for name in own_models.ARCHITECTURES
}
CASES = {name: (name, *registry_case(name)) for name in list_models()} | OWN
LARGE = {"resnet50", "resnet50_cifar", "vgg16", "vgg19"}
STEPS = 8
DTYPE = torch.float64


class Twin:
    """One arm: model, optimizer, controller, and (shrunk arm) the shrinker."""

    def __init__(self, name: str, kwargs: dict, groups, cfg: ChaseConfig, lr: float, shrink: bool):
        torch.manual_seed(0)
        self.model = create_model(name, **kwargs).to(DTYPE)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.chase = Chase(
            self.model,
            groups,
            cfg,
            self.opt,
            steps_per_epoch=3,
            epochs=3,
            explore_until=2,
            seed=0,
        )
        self.shrinker = Shrinker(self.model, groups, self.opt) if shrink else None
        self.losses: list[float] = []
        self.events: list[dict] = []

    def step(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model.train()
        torch.manual_seed(t)  # dropout draws the same numbers in both twins
        loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.chase.before_step(t)
        self.opt.step()
        events = self.chase.after_step(t)
        self.events += events
        self.losses.append(float(loss.detach()))
        if self.shrinker is not None and any(e["event"] == "channels" for e in events):
            alive = self.chase.alive_channels()
            last = self.chase.timeline.last_channel_event() == t
            if self.shrinker.due(alive, last) and self.shrinker.rebuild(alive):
                self.chase.rebind(self.shrinker)


def _config(case: str) -> tuple[ChaseConfig, float]:
    # 3 steps per epoch, channel pruning until step 6. Small models: channel events at odd steps
    # (1, 3, 5), explorations at even ones. Large: events at 2 and 4, no exploration.
    update_every = 1000 if case in LARGE else 2
    cfg = ChaseConfig(
        density=0.3,
        update_every=update_every,
        channel_every=2,
        channel_sparsity=0.5,
        beta=0.5,
        growth_extra=0.05,
    )
    return cfg, (0.001 if case in LARGE else 0.01)


def _train_twins(case: str) -> tuple[Twin, Twin]:
    name, kwargs, shape = CASES[case]
    groups = list(groups_for(name, shape, **kwargs))
    cfg, lr = _config(case)
    masked = Twin(name, kwargs, groups, cfg, lr, shrink=False)
    shrunk = Twin(name, kwargs, groups, cfg, lr, shrink=True)
    g = torch.Generator().manual_seed(1)
    classes = kwargs.get("num_classes", 10)
    batch = 8
    for t in range(1, (6 if case in LARGE else STEPS) + 1):
        x = torch.randn(batch, *shape, generator=g, dtype=DTYPE)
        y = torch.randint(0, min(classes, 10), (batch,), generator=g)
        masked.step(t, x, y)
        shrunk.step(t, x, y)
    return masked, shrunk


def _out_width(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


@pytest.mark.parametrize("case", sorted(CASES))
def test_shrunk_training_equals_masked_training(case: str) -> None:
    masked, shrunk = _train_twins(case)
    sh = shrunk.shrinker

    assert sh is not None and sh.rebuilds >= 2  # shrunk twice, trained on after each
    assert sh.built_channels() < sh.channels_total
    # Controller state: original indices and shapes, identical.
    assert masked.chase.masks.keys() == shrunk.chase.masks.keys()
    for name, a in masked.chase.masks.items():
        assert torch.equal(a, shrunk.chase.masks[name]), name
    for a, b in zip(masked.chase.alive, shrunk.chase.alive, strict=True):
        assert torch.equal(a, b)
    assert masked.chase.channel_plan() == shrunk.chase.channel_plan()
    assert masked.chase.epoch_metrics() == shrunk.chase.epoch_metrics()
    assert masked.chase.nnz() == shrunk.chase.nnz() <= masked.chase.budget
    strip = lambda rows: [{k: v for k, v in e.items() if k != "target"} for e in rows]  # noqa: E731
    assert strip(masked.events) == strip(shrunk.events)
    if case not in LARGE:
        assert any(e["event"] == "exploration" for e in shrunk.events)
    # The model is built with exactly the alive channels.
    modules = dict(shrunk.model.named_modules())
    for group, keep in zip(sh.groups, shrunk.chase.alive, strict=True):
        for producer in group.producers:
            assert _out_width(modules[producer]) == int(keep.sum()), producer
    assert sum(p.numel() for p in shrunk.model.parameters()) < sum(
        p.numel() for p in masked.model.parameters()
    )
    # Losses, kept weights, norm statistics and momentum: equal within float tolerance.
    torch.testing.assert_close(shrunk.losses, masked.losses, rtol=1e-7, atol=1e-8)
    reference = masked.model.state_dict()
    for name, value in shrunk.model.state_dict().items():
        want = sh.cut(name, reference[name])
        assert want.shape == value.shape, name
        torch.testing.assert_close(
            value, want, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}"
        )
    momentum = {
        n: masked.opt.state[p]["momentum_buffer"] for n, p in masked.model.named_parameters()
    }
    for name, p in shrunk.model.named_parameters():
        got = shrunk.opt.state[p]["momentum_buffer"]
        assert got.shape == p.shape
        want = sh.cut(name, momentum[name])
        # Gradients of early layers are large, those of a bias before a norm layer ~0 (noise).
        atol = max(1e-12, 1e-6 * float(want.abs().max()))
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )
    # Checkpoint shapes are the original ones; removed entries are zero.
    dense = sh.dense_state_dict()
    for name, value in dense.items():
        assert value.shape == reference[name].shape, name
    optimizer_params = [p for g in shrunk.opt.param_groups for p in g["params"]]
    assert {id(p) for p in optimizer_params} == {id(p) for p in shrunk.model.parameters()}


def test_rebuild_rule_waits_for_enough_removed_channels_and_the_last_event() -> None:
    name, kwargs, shape = CASES["resnet_quick"]
    groups = list(groups_for(name, shape, **kwargs))
    model = create_model(name, **kwargs)
    sh = Shrinker(model, groups)
    total = sh.channels_total
    alive = {g.name: torch.ones(g.width, dtype=torch.bool) for g in groups}
    assert not sh.due(alive, last_event=True)  # nothing removed
    few = max(1, int(REBUILD_FRACTION * total) - 1)
    first = groups[0]
    alive[first.name][:few] = False
    assert not sh.due(alive, last_event=False)  # under the threshold: wait
    assert sh.due(alive, last_event=True)  # the last event always shrinks to the end
    alive[first.name][: few + 2] = False
    assert sh.due(alive, last_event=False)
    assert sh.rebuild(alive)
    assert not sh.rebuild(alive)  # already built like this
    assert not sh.due(alive, last_event=True)
    back = {k: v.clone() for k, v in alive.items()}
    back[first.name][0] = True
    with pytest.raises(ValueError, match="cannot come back"):
        sh.rebuild(back)


def test_cut_restore_is_the_exact_inverse_of_apply() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 6, 3, 3, generator=g)
    plain = Cut({0: torch.tensor([1, 2, 5, 7]), 1: torch.tensor([0, 3, 4])})
    small = plain.apply(w)
    back = plain.restore(small, w.shape)
    keep = torch.zeros_like(w, dtype=torch.bool)
    keep[[1, 2, 5, 7]] = True
    keep[:, [1, 2, 5]] = False
    assert torch.equal(back, w * keep)
    assert torch.equal(plain.apply(back), small)
    # A grouped conv: 2 conv groups of 3 input channels each keep 2 of them, rows cut too.
    grouped = Cut({0: torch.tensor([0, 2, 3, 4, 6, 7])}, (2, torch.tensor([[0, 2], [1, 2]])))
    small = grouped.apply(w)
    assert small.shape == (6, 2, 3, 3)
    back = grouped.restore(small, w.shape)
    assert torch.equal(grouped.apply(back), small)
    assert int((back != 0).sum()) == small.numel()
