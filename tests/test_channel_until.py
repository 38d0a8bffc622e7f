"""`chase.channel_until`: gradual channel pruning with its own end, so the hard-budget SET/RigL
exploration (``explore_until: 0``) runs beside it (the paper's Table 7 baselines)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.test_baselines import BASELINE, _batch, _setup, _train
from train.config import ChaseConfig, channel_until_epoch, recipe_from_dict
from train.density import round_half_up
from train.errors import BadInput
from train.schedules import Timeline

# RigL (explore_until 0, layer-wise, q0 0.3) with channels pruned every 12 steps to S_c 0.5 by
# epoch 5 (T_c = 50 of T = 60); exchanges stop at drop_until 0.5 (T_end = 30).
RIGL_GCP = {
    **BASELINE,
    "drop_until": 0.5,
    "channel_sparsity": 0.5,
    "channel_every": 12,
    "channel_until": 5,
    "beta": 0.5,
}


def test_timeline_parts_channel_pruning_from_exploration() -> None:
    # tau_stop 0, T_c = 5 epochs of 10 steps: events at (t + 3) mod 12 = 0 below 50.
    tl = Timeline(10, 6, 0, 6, 12, channel_stop_epoch=5)
    assert (tl.stop, tl.channel_stop) == (0, 50)
    assert [t for t in range(1, 61) if tl.is_channel_event(t)] == [9, 21, 33, 45]
    assert tl.last_channel_event() == 45
    assert not tl.in_phase_a(1)  # every exploration is a hard-budget one
    # Default: channel pruning ends with phase A, as before.
    assert Timeline(10, 6, 4, 6, 12).channel_stop == 40


def test_channel_events_end_at_channel_until_beside_rigl() -> None:
    cfg = ChaseConfig(**RIGL_GCP, growth="gradient")
    net, opt, chase = _setup(cfg, explore_until=0)
    budget = chase.budget
    steps = {}
    for t in range(1, 61):
        before = {n: m.clone() for n, m in chase.masks.items()}
        events = _train_one(net, opt, chase, t)
        steps[t] = events
        if not events:  # between events the topology does not move
            assert all(torch.equal(before[n], m) for n, m in chase.masks.items())
    channels = [e for es in steps.values() for e in es if e["event"] == "channels"]
    explorations = [e for es in steps.values() for e in es if e["event"] == "exploration"]
    assert [e["step"] for e in channels] == [9, 21, 33, 45]  # none at or after T_c = 50
    assert channels[-1]["target_sparsity"] == 0.5
    total = chase.channels_total
    assert sum(chase.widths().values()) == round_half_up(total * 0.5)
    # Exchanges every 6 steps while t < 30, the closing update at 30 (q = 0), then frozen; the
    # channel events at 33 and 45 thaw it for one q = 0 update each (36, 48) that regrows what
    # they freed, so the budget holds to the end.
    assert [e["step"] for e in explorations] == [6, 12, 18, 24, 30, 36, 48]
    assert all(e["phase"] == "B" for e in explorations)
    assert [e["drop_rate"] for e in explorations[4:]] == [0.0, 0.0, 0.0]
    for e in explorations:
        assert e["nnz"] == budget
    for e in channels[2:]:
        assert e["removed"] > 0
    assert chase.nnz() == budget


def _train_one(net, opt, chase, t: int) -> list[dict]:
    """One step of ``tests.test_baselines._train``'s loop, at step t."""
    x, y = _batch(t)
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    chase.before_step(t)
    opt.step()
    return chase.after_step(t)


def test_set_with_gradual_channel_pruning_reaches_s_c() -> None:
    net, opt, chase = _setup(ChaseConfig(**RIGL_GCP, growth="random"), explore_until=0)
    events = _train(net, opt, chase, 60)
    assert [e["step"] for e in events if e["event"] == "channels"] == [9, 21, 33, 45]
    assert chase.epoch_metrics()["channel_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert chase.nnz() == chase.budget


def test_without_channel_until_sets_channel_pruning_is_refused() -> None:
    cfg = ChaseConfig(**{**RIGL_GCP, "channel_until": None})
    with pytest.raises(BadInput, match=r"chase\.channel_until \(default chase\.explore_until\)"):
        _setup(cfg, explore_until=0)


def test_recipe_key() -> None:
    r = recipe_from_dict({"train": {"epochs": 160}, "chase": {"channel_until": 130}})
    assert r.chase.channel_until == 130 and channel_until_epoch(r) == 130
    assert channel_until_epoch(recipe_from_dict({"train": {"epochs": 160}})) == 130  # = tau_stop
    r = recipe_from_dict({"train": {"epochs": 20}, "chase": {"explore_until": 4}})
    assert channel_until_epoch(r) == 4
    # The released code's --stop_gmp_epochs is the end of channel pruning.
    assert recipe_from_dict({"chase": {"stop_gmp_epochs": 7}}).chase.channel_until == 7
    with pytest.raises(BadInput, match=r"chase\.channel_until: 12 is past train\.epochs \(10\)"):
        recipe_from_dict({"train": {"epochs": 10}, "chase": {"channel_until": 12}})
    with pytest.raises(BadInput, match=r"chase\.channel_until: -1 is out of range"):
        recipe_from_dict({"chase": {"channel_until": -1}})


@pytest.mark.parametrize(("steps_per_epoch", "events"), [(390, 51), (500, 65)])
def test_cifar_batch_128_against_the_scripts_100(steps_per_epoch: int, events: int) -> None:
    # CIFAR ResNet-50: 50,000 images at batch 128 (Table 9) or 100 (the released scripts), ΔT_p =
    # ΔT = 1000, channel pruning to epoch 130: events at 500, 1500, ... below T_c.
    tl = Timeline(steps_per_epoch, 160, 130, 1000, 1000)
    found = [t for t in range(1, tl.channel_stop) if tl.is_channel_event(t)]
    assert len(found) == events and found[0] == 500
