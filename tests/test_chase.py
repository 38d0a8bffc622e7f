"""The Chase controller on small models with a tiny SGD loop: the invariants of
``docs/algorithm.md``."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F

from tests.derived_groups import derive_cached, groups_for
from train.chase import Chase
from train.config import ChaseConfig
from train.density import round_half_up
from train.errors import BadInput
from train.models import create_model
from train.schedules import growth_extra

STEPS_PER_EPOCH, EPOCHS, STOP = 10, 6, 4  # T_c = 40, run = 60 steps
BASE = dict(
    density=0.2, update_every=6, channel_every=6, channel_sparsity=0.5, beta=0.5, growth_extra=0.1
)


def _setup(
    cfg: ChaseConfig,
    model: str = "resnet_quick",
    seed: int = 0,
    prune_skip: bool = False,
    shape: tuple[int, ...] = (3, 8, 8),
    **kw,
):
    torch.manual_seed(seed)
    kwargs = {"resnet_quick": dict(width=8, in_channels=3, num_classes=4)}.get(model, {})
    kwargs.update(kw)
    net = create_model(model, **kwargs)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    chase = Chase(
        net,
        derive_cached(net, shape, prune_skip),
        cfg,
        opt,
        steps_per_epoch=STEPS_PER_EPOCH,
        epochs=EPOCHS,
        explore_until=STOP,
        seed=7,
        init_data=[_batch(0, shape)],  # scored by chase.init snip / grasp only
    )
    return net, opt, chase


def _batch(t: int, shape: tuple[int, ...] = (3, 8, 8), classes: int = 4):
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(16, *shape, generator=g), torch.randint(0, classes, (16,), generator=g)


def _train(net, opt, chase, steps, check=None, shape=(3, 8, 8), classes=4, skipped=()):
    events = []
    for t in steps:
        x, y = _batch(t, shape, classes)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        chase.before_step(t)
        before = {n: m.clone() for n, m in chase.masks.items()}
        opt.step()
        new = chase.after_step(t, skipped=t in skipped)
        events += new
        if check is not None:
            check(t, new, before)
    return events


class Invariants:
    """Checks the controller's invariants (``docs/algorithm.md``) after every step."""

    def __init__(self, net, opt, chase) -> None:
        self.net, self.opt, self.chase = net, opt, chase
        self.params = dict(net.named_parameters())
        self.modules = dict(net.named_modules())
        self.dead = [torch.zeros_like(a) for a in chase.alive]

    def __call__(self, t: int, events: list[dict], before: dict) -> None:
        ch, cfg = self.chase, self.chase.cfg
        for name, mask in ch.masks.items():
            p = self.params[name]
            assert int((p[~mask] != 0).sum()) == 0, f"{name}: masked weight non-zero at step {t}"
            buf = self.opt.state[p].get("momentum_buffer")
            if buf is not None:
                assert int((buf[~mask] != 0).sum()) == 0, f"{name}: masked momentum at step {t}"
        for gi, (group, alive) in enumerate(zip(ch._groups, ch.alive, strict=True)):
            assert not bool((self.dead[gi] & alive).any()), "a pruned channel came back"
            self.dead[gi] = ~alive
            dead = ~alive
            assert int(alive.sum()) >= ch._pool.floors[gi]
            if cfg.round_to > 1:
                assert int(alive.sum()) % cfg.round_to == 0 or int(alive.sum()) == group.width
            for name in group.producers:
                mod = self.modules[name]
                assert int((mod.weight[dead] != 0).sum()) == 0
                if mod.bias is not None:
                    assert int((mod.bias[dead] != 0).sum()) == 0
            for name in group.consumers:
                assert int((self.modules[name].weight[:, dead] != 0).sum()) == 0
        for e in events:
            if e["event"] != "exploration":
                continue
            assert e["nnz"] - e["grown"] <= ch.budget  # right after the prune
            if e["phase"] == "A":
                extra = growth_extra(
                    e["step"], cfg.growth_extra, cfg.growth_extra_end, ch.timeline.stop
                )
                assert e["nnz"] == round_half_up(ch.total * (cfg.density + extra))
            else:
                assert e["nnz"] == ch.budget
            assert e["nnz"] == ch.nnz()
            for name, mask in ch.masks.items():  # grown weights start at zero, with zero momentum
                grown = mask & ~before[name]
                assert int((self.params[name][grown] != 0).sum()) == 0
                buf = self.opt.state[self.params[name]].get("momentum_buffer")
                assert int((buf[grown] != 0).sum()) == 0


def _plan_consistent(net, chase) -> None:
    mods = dict(net.named_modules())
    plan = chase.channel_plan().to_dict()
    assert plan["format"] == "chase-channel-plan" and plan["version"] == 1
    for name, entry in plan["layers"].items():
        w = mods[name].weight
        assert entry["out_channels"] == w.shape[0]
        kept = entry["kept"]
        assert kept == sorted(set(kept)) and kept and 0 <= kept[0] and kept[-1] < w.shape[0]
        gone = torch.ones(w.shape[0], dtype=torch.bool)
        gone[kept] = False
        assert int((w[gone] != 0).sum()) == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"scope": "layerwise", "criterion": "ws"},
        {"align": 4, "criterion": "mmm", "channel_schedule": "cosine"},
        {"init": "uniform", "criterion": "random", "after_stop": "freeze"},
    ],
)
def test_invariants_hold_through_training(overrides: dict) -> None:
    cfg = ChaseConfig(**{**BASE, **overrides})
    net, opt, chase = _setup(cfg)
    assert chase.nnz() == chase.budget == round(0.2 * chase.total)
    check = Invariants(net, opt, chase)
    events = _train(net, opt, chase, range(1, STEPS_PER_EPOCH * EPOCHS + 1), check)
    explorations = [e for e in events if e["event"] == "exploration"]
    channel_events = [e for e in events if e["event"] == "channels"]
    assert [e["step"] for e in channel_events] == [3, 9, 15, 21, 27, 33, 39]
    phase_b = [42] if cfg.after_stop == "freeze" else [42, 48, 54]
    assert [e["step"] for e in explorations] == [6, 12, 18, 24, 30, 36, *phase_b]
    round_to = cfg.round_to
    expected = round_to * round_half_up(
        chase.channels_total * (1 - cfg.channel_sparsity) / round_to
    )
    assert sum(chase.widths().values()) == expected  # final channel count exactly as scheduled
    assert chase.epoch_metrics()["channel_sparsity"] == pytest.approx(
        1 - expected / chase.channels_total
    )
    assert chase.epoch_metrics()["density"] == pytest.approx(chase.budget / chase.total)
    _plan_consistent(net, chase)


def test_channel_counts_follow_the_schedule_event_by_event() -> None:
    cfg = ChaseConfig(**BASE)
    net, opt, chase = _setup(cfg)
    events = _train(net, opt, chase, range(1, 41))
    total = chase.channels_total
    for e in (e for e in events if e["event"] == "channels"):
        alive = sum(e["widths"].values())
        assert alive == round_half_up(total * (1 - e["target_sparsity"]))
        assert e["channel_sparsity"] == pytest.approx(1 - alive / total)
    assert events[-1]["target_sparsity"] == 0.5  # the last event reaches S_c itself


def test_layerwise_keeps_each_layers_budget() -> None:
    cfg = ChaseConfig(**{**BASE, "scope": "layerwise", "channel_sparsity": 0.0})
    net, opt, chase = _setup(cfg)
    start = [int(m.sum()) for m in chase.masks.values()]
    _train(net, opt, chase, range(1, 49))  # ends right after the phase-B update at 48
    assert [int(m.sum()) for m in chase.masks.values()] == start


def test_prune_skip_prunes_streams_jointly() -> None:
    cfg = ChaseConfig(**BASE)
    net, opt, chase = _setup(cfg, prune_skip=True)
    kwargs = dict(width=8, in_channels=3, num_classes=4)
    streams = [
        g for g in groups_for("resnet_quick", (3, 8, 8), True, **kwargs) if g.kind == "stream"
    ]
    assert streams and all(len(g.producers) > 1 for g in streams)
    check = Invariants(net, opt, chase)
    _train(net, opt, chase, range(1, 41), check)
    plan = chase.channel_plan().to_dict()["layers"]
    widths = chase.widths()
    assert any(widths[g.name] < g.width for g in streams)
    for g in streams:
        if widths[g.name] < g.width:
            kept = {tuple(plan[p]["kept"]) for p in g.producers}
            assert len(kept) == 1  # every producer of the stream keeps the same channels
    _plan_consistent(net, chase)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        # SET-style random growth and the cosine drop fraction that stops at 75 % of training.
        {"growth": "random", "drop_fraction": 0.3, "drop_until": 0.75, "scope": "layerwise"},
        # A GraSP start and channel pruning past tau_stop, to epoch 5.
        {"init": "grasp", "channel_until": 5, "scope": "layerwise"},
    ],
)
def test_resume_is_bit_for_bit(overrides: dict) -> None:
    cfg = ChaseConfig(**{**BASE, "criterion": "random", **overrides})
    net, opt, chase = _setup(cfg)
    full_events = _train(net, opt, chase, range(1, 51))

    net2, opt2, chase2 = _setup(cfg)
    first = _train(net2, opt2, chase2, range(1, 26))
    buf = io.BytesIO()
    torch.save(
        {"model": net2.state_dict(), "opt": opt2.state_dict(), "chase": chase2.state_dict()}, buf
    )
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    net3, opt3, chase3 = _setup(cfg, seed=99)  # different init: everything must come from the state
    net3.load_state_dict(saved["model"])
    opt3.load_state_dict(saved["opt"])
    chase3.load_state_dict(saved["chase"])
    rest = _train(net3, opt3, chase3, range(26, 51))

    assert first + rest == full_events
    for (n, a), (_, b) in zip(net.state_dict().items(), net3.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    for n, m in chase.masks.items():
        assert torch.equal(m, chase3.masks[n])
    assert chase.channel_plan() == chase3.channel_plan()


def test_same_seed_same_masks_and_choices() -> None:
    cfg = ChaseConfig(**{**BASE, "criterion": "random"})
    runs = []
    for _ in range(2):
        net, opt, chase = _setup(cfg)
        _train(net, opt, chase, range(1, 16))
        runs.append(chase)
    a, b = runs
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert a.channel_plan() == b.channel_plan()


def test_skipped_step_defers_events_and_only_remasks() -> None:
    cfg = ChaseConfig(**BASE)
    net, opt, chase = _setup(cfg)
    check = Invariants(net, opt, chase)
    events = _train(net, opt, chase, range(1, 14), check, skipped={3, 6})
    steps = [(e["event"], e["step"]) for e in events]
    # Due at 3 and 6 (skipped), run at 4 and 7 with the schedule of their own step.
    assert steps == [("channels", 3), ("exploration", 6), ("channels", 9), ("exploration", 12)]


def test_mlp_linear_layers_and_biases() -> None:
    cfg = ChaseConfig(**{**BASE, "density": 0.3})
    net, opt, chase = _setup(
        cfg,
        model="mlp",
        shape=(1, 4, 4),
        hidden=[32, 16],
        input_size=4,
        in_channels=1,
        num_classes=4,
    )
    check = Invariants(net, opt, chase)
    _train(net, opt, chase, range(1, 41), check, shape=(1, 4, 4))
    assert set(chase.widths()) == {"hidden.0", "hidden.1"}
    assert sum(chase.widths().values()) == 24
    _plan_consistent(net, chase)


def test_dense_layers_still_lose_pruned_channels() -> None:
    cfg = ChaseConfig(**{**BASE, "dense_layers": ["layer1.0.conv1", "layer1.0.conv2"]})
    net, opt, chase = _setup(cfg)
    assert "layer1.0.conv1.weight" not in chase.masks
    check = Invariants(net, opt, chase)
    _train(net, opt, chase, range(1, 41), check)
    w = net.layer1[0].conv1.weight
    alive = chase.alive[0]
    assert bool((w[alive] != 0).all())  # dense inside its alive channels


def test_amenable_stats() -> None:
    cfg = ChaseConfig(**{**BASE, "channel_sparsity": 0.0})
    net, _, chase = _setup(cfg)
    with torch.no_grad():
        net.layer2[0].conv1.weight[:3] = 0  # three empty channels of 16
    stats = chase.amenable_stats()
    assert stats["thresholds"] == [0.0, 0.2, 0.3, 0.4]
    assert set(stats["umm"]) == set(stats["either"]) == set(chase.layer_names)
    # Against their own initial values: the emptied channels lost all their magnitude and the
    # others did not change, so exactly they are amenable (by UMM at every v; by WS at v = 0).
    assert stats["umm"]["layer2.0.conv1"] == pytest.approx([3 / 16] * 4)
    assert stats["ws"]["layer2.0.conv1"][0] == pytest.approx(3 / 16)
    assert stats["either_total"][0] == pytest.approx(3 / sum(stats["n_channels"].values()))
    for kind in ("umm", "ws", "either"):
        for fr in stats[kind].values():
            assert fr == sorted(fr, reverse=True) and all(0 <= f <= 1 for f in fr)


def test_bad_recipes_are_refused() -> None:
    net = create_model("resnet20")
    with pytest.raises(BadInput, match="chase.channel_every"):
        Chase(
            net,
            groups_for("resnet20", (3, 8, 8)),
            ChaseConfig(channel_every=1000),
            None,
            steps_per_epoch=10,
            epochs=5,
            explore_until=4,
        )
    with pytest.raises(BadInput, match="chase.channel_sparsity"):
        Chase(
            net,
            [],
            ChaseConfig(channel_every=4),
            None,
            steps_per_epoch=10,
            epochs=5,
            explore_until=4,
        )
    cfg = ChaseConfig(**BASE)
    _, _, chase = _setup(cfg)
    _, _, other = _setup(dataclasses.replace(cfg, density=0.3))
    with pytest.raises(BadInput, match="chase state does not fit"):
        other.load_state_dict(chase.state_dict())


def test_ddp_agreement_check(tmp_path, monkeypatch) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        cfg = ChaseConfig(**BASE)
        net, opt, chase = _setup(cfg)
        assert _train(net, opt, chase, range(1, 7))  # events ran through the real all-reduce

        def disagree(tensor, op=None):
            tensor[0] += 1  # another rank reports a different checksum

        monkeypatch.setattr(dist, "all_reduce", disagree)
        with pytest.raises(RuntimeError, match="channel event at step 9"):
            _train(net, opt, chase, range(7, 10))
    finally:
        dist.destroy_process_group()


def test_growth_reads_the_gradient_seen_by_before_step() -> None:
    """Scores are taken in before_step (after unscaling, before clipping), not after the step."""
    from train.exploration import grow_global, prune_global

    cfg = ChaseConfig(density=0.3, update_every=2, channel_sparsity=0.0, growth_extra=0.2)
    torch.manual_seed(0)
    net = create_model("mlp", hidden=[16], input_size=4, num_classes=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
    chase = Chase(net, [], cfg, opt, steps_per_epoch=10, epochs=2, explore_until=1, seed=3)
    params = [net.hidden[0].weight, net.fc.weight]
    g = torch.Generator().manual_seed(4)
    seen = [torch.randn(p.shape, generator=g) for p in params]
    for p, s in zip(params, seen, strict=True):
        p.grad = s.clone()
    masks = [m.clone() for m in chase.masks.values()]
    chase.before_step(2)
    for p, s in zip(params, seen, strict=True):
        p.grad = 1.0 / (s.abs() + 1e-3)  # "clipping" that reverses the ranking
    opt.step()
    (event,) = chase.after_step(2)
    kept = prune_global([p.detach() for p in params], masks, event["pruned"])
    expected = grow_global([s.abs() for s in seen], kept, [None, None], event["grown"])
    for m, e in zip(chase.masks.values(), expected, strict=True):
        assert torch.equal(m, e)
