"""SET and RigL as their papers define them, and the channel-event timing of the released code.

SET/RigL: layer-wise, every ΔT_p steps while t < T_end = drop_until·T, each layer drops
ceil(q(t)·n_l) smallest-|w| active weights and regrows as many, by largest |grad| (RigL) or at
random (SET), new weights at 0; q(t) = q0·(1 + cos(π·t/T_end))/2.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.derived_groups import derive_cached
from train.chase import Chase
from train.config import ChaseConfig, recipe_from_dict
from train.errors import BadInput
from train.models import create_model
from train.schedules import Timeline, drop_rate, hard_prune_rate

STEPS, EPOCHS = 10, 6  # T = 60 steps
BASELINE = dict(
    density=0.2,
    update_every=6,
    scope="layerwise",
    growth_extra=0.0,
    after_stop="continue",
    channel_sparsity=0.0,
    drop_fraction=0.3,
    drop_until=0.75,  # T_end = 45
)


def _setup(cfg: ChaseConfig, explore_until: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    net = create_model("resnet_quick", width=8, in_channels=3, num_classes=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    chase = Chase(
        net,
        derive_cached(net, (3, 8, 8)),
        cfg,
        opt,
        steps_per_epoch=STEPS,
        epochs=EPOCHS,
        explore_until=explore_until,
        seed=7,
    )
    return net, opt, chase


def _batch(t: int):
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)


def _train(net, opt, chase: Chase, steps: int) -> list[dict]:
    """``steps`` plain training steps with the controller around the optimizer; its events."""
    events = []
    for t in range(1, steps + 1):
        x, y = _batch(t)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        chase.before_step(t)
        opt.step()
        events += chase.after_step(t)
    return events


def _smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros(scores.numel(), dtype=torch.bool)
    out[torch.argsort(scores.flatten(), stable=True)[:k]] = True
    return out.view_as(scores)


def _largest(scores: torch.Tensor, k: int) -> torch.Tensor:
    return _smallest(-scores, k)


def _run_and_check(cfg: ChaseConfig) -> list[dict]:
    """Train 60 steps; at every step check each layer's drop and grow against a brute force."""
    net, opt, chase = _setup(cfg)
    params = dict(net.named_parameters())
    start = {n: int(m.sum()) for n, m in chase.masks.items()}
    events = []
    for t in range(1, STEPS * EPOCHS + 1):
        x, y = _batch(t)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        chase.before_step(t)
        opt.step()
        old = {n: m.clone() for n, m in chase.masks.items()}
        weights = {n: (params[n].detach() * old[n]).clone() for n in old}  # what the drop ranks
        grads = {n: params[n].grad.detach().abs().clone() for n in old}
        new = chase.after_step(t)
        events += new
        if not new:
            assert all(torch.equal(old[n], m) for n, m in chase.masks.items())
            continue
        (e,) = new
        q = e["drop_rate"]
        for n, mask in chase.masks.items():
            k = math.ceil(q * start[n])
            active = old[n]
            dropped = _smallest(torch.where(active, weights[n].abs(), torch.inf), k)
            kept = active & ~dropped
            grown = mask & ~kept
            assert int(mask.sum()) == start[n], n  # each layer keeps its count
            assert bool((kept <= mask).all()), n  # only the k smallest-|w| were dropped
            assert int(grown.sum()) == k, n  # ... and exactly as many regrown
            if cfg.growth == "gradient":
                assert torch.equal(grown, _largest(torch.where(kept, -1.0, grads[n]), k)), n
            assert int((params[n][grown] != 0).sum()) == 0  # new weights start at 0
            buf = opt.state[params[n]]["momentum_buffer"]
            assert int((buf[grown] != 0).sum()) == 0
        assert e["pruned"] == e["grown"] == sum(math.ceil(q * c) for c in start.values())
    return events


@pytest.mark.parametrize("growth", ["gradient", "random"])
def test_set_and_rigl_drop_and_grow_step_by_step(growth: str) -> None:
    events = _run_and_check(ChaseConfig(**BASELINE, growth=growth))
    # Every 6 steps while t < 45, then one closing update (q = 0) and a frozen topology.
    assert [e["step"] for e in events] == [6, 12, 18, 24, 30, 36, 42, 48]
    assert all(e["phase"] == "B" for e in events)
    for e in events[:-1]:
        assert e["drop_rate"] == pytest.approx(0.3 * (1 + math.cos(math.pi * e["step"] / 45)) / 2)
    assert events[-1]["drop_rate"] == 0.0 and events[-1]["pruned"] == events[-1]["grown"] == 0


def test_set_growth_is_random_but_seeded() -> None:
    runs = []
    for growth in ("random", "random", "gradient"):
        net, opt, chase = _setup(ChaseConfig(**BASELINE, growth=growth))
        _train(net, opt, chase, 12)
        runs.append(chase.masks)
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])  # same seed, same masks
    assert not all(torch.equal(runs[0][n], runs[2][n]) for n in runs[0])  # SET is not RigL


def test_drop_schedule() -> None:
    assert drop_rate(0, 0.3, 45) == pytest.approx(0.3)
    assert drop_rate(45, 0.3, 45) == 0.0 and drop_rate(50, 0.3, 45) == 0.0
    assert drop_rate(15, 0.3, 45) == pytest.approx(0.3 * 0.75)
    tl = Timeline(10, 6, 0, 6, 6, drop_until=0.75)
    assert tl.drop_end == 45 and Timeline(10, 6, 0, 6, 6).drop_end == 60


def test_chase_defaults_keep_the_released_exchange_rate() -> None:
    # Without drop_fraction, phase B drops the released code's 0.005 + 0.495·(1 + cos(π·t/T))/2.
    cfg = ChaseConfig(density=0.2, update_every=6, channel_sparsity=0.0, growth_extra=0.1)
    assert (cfg.growth, cfg.drop_fraction, cfg.drop_until, cfg.channel_offset) == (
        "gradient",
        None,
        None,
        None,
    )
    net, opt, chase = _setup(cfg, explore_until=4)
    events = _train(net, opt, chase, 60)
    phase_b = [e for e in events if e["phase"] == "B"]
    assert [e["step"] for e in phase_b] == [42, 48, 54]
    for e in phase_b:
        assert e["drop_rate"] == pytest.approx(hard_prune_rate(e["step"], 60))


def test_recipe_keys_are_typed_and_checked() -> None:
    r = recipe_from_dict({"chase": {"growth": "random", "drop_fraction": 0.3, "drop_until": 0.75}})
    assert (r.chase.growth, r.chase.drop_fraction, r.chase.drop_until) == ("random", 0.3, 0.75)
    bad = [
        ({"growth": "momentum"}, r"chase\.growth: 'momentum' is not one of gradient, random"),
        ({"drop_fraction": 1.5}, r"chase\.drop_fraction: 1\.5 is out of range \[0\.0, 1\.0\]"),
        (
            {"drop_fraction": 0.3, "drop_until": 0},
            r"chase\.drop_until: 0\.0 is out of range \(0\.0, 1\.0\]",
        ),
        ({"drop_until": 0.75}, r"chase\.drop_until: only with chase\.drop_fraction"),
        ({"channel_offset": -1}, r"chase\.channel_offset: -1 is out of range"),
        ({"drop_fraction": "x"}, r"chase\.drop_fraction: expected a number"),
    ]
    for chase, message in bad:
        with pytest.raises(BadInput, match=message):
            recipe_from_dict({"chase": chase})


# ------------------------------------------------------------------------------------------------
# Channel-event timing: (t + ΔT_p/2) mod ΔT = 0, t < T_c, as the released code


def test_channel_events_are_offset_by_half_the_exploration_period() -> None:
    # ΔT_p = 6, ΔT = 12, T_c = 40: (t + 3) mod 12 = 0 -> 9, 21, 33 (the old (t + ΔT/2) rule
    # gave 6, 18, 30: exploration steps).
    tl = Timeline(10, 6, 4, 6, 12)
    events = [t for t in range(1, 61) if tl.is_channel_event(t)]
    assert events == [9, 21, 33] and tl.last_channel_event() == 33
    assert not any(t % 6 == 0 for t in events)
    # The paper's plain "every ΔT steps" is channel_offset 0.
    tl0 = Timeline(10, 6, 4, 6, 12, channel_offset=0)
    assert [t for t in range(1, 61) if tl0.is_channel_event(t)] == [12, 24, 36]
    assert tl0.last_channel_event() == 36
    # ΔT smaller than ΔT_p/2: the offset wraps around (t + 500) mod 200 = 0.
    tl = Timeline(100, 10, 8, 1000, 200)
    assert [t for t in range(1, 801) if tl.is_channel_event(t)] == [100, 300, 500, 700]
    # The released CIFAR VGG-19 schedule: I = 500, T_c = 65,000, ΔT_p = 1000, ΔT = 8000.
    vgg = Timeline(500, 160, 130, 1000, 8000)
    steps = [t for t in range(1, 65_001) if vgg.is_channel_event(t)]
    assert steps == [7_500 + 8_000 * k for k in range(8)] and vgg.last_channel_event() == 63_500


def test_the_controller_fires_channel_events_between_explorations() -> None:
    cfg = ChaseConfig(
        density=0.2,
        update_every=6,
        channel_every=12,
        channel_sparsity=0.5,
        beta=0.5,
        growth_extra=0.1,
    )
    net, opt, chase = _setup(cfg, explore_until=4)
    events = _train(net, opt, chase, 60)
    assert [e["step"] for e in events if e["event"] == "channels"] == [9, 21, 33]
    assert [e["step"] for e in events if e["event"] == "exploration"] == list(range(6, 60, 6))
    channel_events = [e for e in events if e["event"] == "channels"]
    assert channel_events[-1]["target_sparsity"] == 0.5  # the last event (33) reaches S_c
    assert 1 - sum(chase.widths().values()) / chase.channels_total == pytest.approx(0.5)
