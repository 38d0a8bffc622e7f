"""When channel pruning leaves fewer positions in the alive channels than the budget B.

SqueezeNet's Fire modules (``own_models.squeezenet``, SqueezeNet 1.1's channel ratios) at
density 0.3 and channel sparsity 0.4: the 3x3 expands lose input and output channels at once,
so the alive channels hold fewer weights than B. The controller says so once
(``budget_capped`` in metrics.jsonl, one log line, report.md), keeps every alive position
active, and its phase-B explorations exchange nothing (the only free positions would be the
ones just pruned). Where the capacity holds B (VoVNet's OSA at the same settings) every
phase-B exploration ends at exactly B.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chase_deploy.report import write_report
from tests import own_models
from tests.conftest import write_recipe
from tests.derived_groups import derive_cached
from train.chase import Chase
from train.checkpoint import load_checkpoint
from train.config import ChaseConfig, load_recipe
from train.loop import train
from train.masks import count_active
from train.metrics import read_metrics

SHAPE = (3, 16, 16)
DATA = {
    "name": "synthetic",
    "image_size": 16,
    "channels": 3,
    "num_classes": 4,
    "num_train": 64,
    "num_val": 16,
    "batch_size": 16,
    "crop_padding": 1,
}
CHASE = {
    "density": 0.3,
    "update_every": 2,
    "channel_every": 2,
    "explore_until": 3,
    "channel_sparsity": 0.4,
    "beta": 0.5,
    "growth_extra": 0.05,
}


def _train(arch: str, tmp_path: Path) -> tuple[Path, list[dict]]:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"name": f"own_models:{arch}", "width": 8},
        data=DATA,
        train={"epochs": 5},
        chase=CHASE,
    )
    final = train(load_recipe(recipe), tmp_path / "run", device="cpu", derive_groups=derive_cached)
    return final, read_metrics(final.parent / "metrics.jsonl")


def _capacity(chase: Chase) -> int:
    return sum(chase._capacities())


def test_squeezenet_capacity_below_the_budget_is_reported_once(tmp_path: Path, capsys) -> None:
    final, metrics = _train("squeezenet", tmp_path)
    (capped,) = [m for m in metrics if m["event"] == "budget_capped"]
    assert set(capped) == {"event", "epoch", "step", "budget", "capacity"}
    assert capped["capacity"] < capped["budget"]
    channel_steps = [m["step"] for m in metrics if m["event"] == "channels"]
    assert capped["step"] in channel_steps  # found at the channel event that caused it
    assert capsys.readouterr().err.count("budget capped at step") == 1

    # Every alive position holds a weight at the end: nnz is the final capacity, below B.
    ckpt = load_checkpoint(final)
    nnz = sum(int(m.sum()) for m in ckpt["masks"].values())
    after = [m for m in metrics if m["event"] == "exploration" and m["step"] > max(channel_steps)]
    assert after and all(m["phase"] == "B" for m in after)
    assert all(m["nnz"] == nnz and m["pruned"] == m["grown"] == 0 for m in after)
    assert nnz <= capped["capacity"] < capped["budget"] == after[0]["budget"]

    # report.md says so.
    recipe = load_recipe(final.parent / "recipe.yaml")
    report = write_report(final.parent, recipe, {}, {}, {}, {}).read_text()
    assert f"**Budget capped** at step {capped['step']}" in report
    assert (
        f"{capped['capacity']:,} weights, fewer than the budget B = {capped['budget']:,}" in report
    )


def test_vovnet_holds_the_budget_and_every_phase_b_exploration_ends_at_it(tmp_path: Path) -> None:
    _, metrics = _train("vovnet", tmp_path)
    assert not [m for m in metrics if m["event"] == "budget_capped"]
    phase_b = [m for m in metrics if m["event"] == "exploration" and m["phase"] == "B"]
    assert phase_b and all(m["nnz"] == m["budget"] for m in phase_b)
    assert any(m["pruned"] > 0 for m in phase_b)  # real exchanges, not a frozen topology


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_the_event_survives_a_resume_and_is_not_repeated(scope: str) -> None:
    """The controller alone (random growth, no data): state saved after the cap and loaded into
    a fresh controller goes on capped, with no second event and no exchange."""
    cfg = ChaseConfig(**{**CHASE, "growth": "random", "scope": scope})

    def controller() -> tuple[torch.nn.Module, Chase]:
        torch.manual_seed(0)
        net = own_models.squeezenet(num_classes=4, width=8)
        groups = derive_cached(net, SHAPE)
        return net, Chase(net, groups, cfg, steps_per_epoch=4, epochs=5, explore_until=3, seed=1)

    def steps(chase: Chase, ts: range) -> list[dict]:
        return [e for t in ts for e in chase.after_step(t)]  # random growth: no gradients

    _, chase = controller()
    first = steps(chase, range(1, 13))
    (capped,) = [e for e in first if e["event"] == "budget_capped"]
    assert capped["capacity"] >= _capacity(chase) and capped["capacity"] < capped["budget"]
    assert capped["budget"] == chase.budget
    state = chase.state_dict()

    _, resumed = controller()
    resumed.load_state_dict(state)
    later = steps(resumed, range(13, 20))
    assert not [e for e in later if e["event"] == "budget_capped"]
    explorations = [e for e in later if e["event"] == "exploration"]
    assert explorations and all(e["pruned"] == e["grown"] == 0 for e in explorations)
    assert sum(count_active(list(resumed.masks.values()))) == _capacity(resumed)


def test_the_log_line_names_budget_capacity_and_density() -> None:
    from train.density import capped_message

    line = capped_message(9, 3506, 3169, 11688)
    assert line == (
        "budget capped at step 9: the alive channels hold 3169 weights, fewer than the budget "
        "B = 3506; the density stays at or below 0.2711 instead of 0.3000 (lower "
        "chase.channel_sparsity or chase.density to keep B)"
    )
    assert json.loads(json.dumps({"event": "budget_capped", "step": 9}))  # plain JSON data
