"""Training FLOPs (RigL's accounting): one step against a hand count, and the epoch lines of a run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tests.conftest import train_run
from tests.derived_groups import derive_cached
from train.chase import Chase
from train.checkpoint import load_checkpoint
from train.config import ChaseConfig
from train.models import create_model
from train.training_flops import TrainingFlops, forward_flops, layer_positions


def _tiny() -> nn.Sequential:
    # conv 1->2, 3x3, padding 1 on 4x4: 18 weights used at 16 positions; a stride-2 1x1 conv
    # 2->3: 6 weights at 4 positions; linear 12->5: 60 weights, once.
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, bias=False),
        nn.Conv2d(2, 3, 1, stride=2, bias=False),
        nn.Flatten(),
        nn.Linear(12, 5),
    )


def test_positions_are_the_output_positions_per_sample() -> None:
    model = _tiny().train()
    assert layer_positions(model, (1, 4, 4), torch.device("cpu")) == {"0": 16, "1": 4, "3": 1}
    assert model.training and all(m.training for m in model.modules())  # modes restored


def test_one_step_against_a_hand_count() -> None:
    flops = TrainingFlops.of_model(_tiny(), (1, 4, 4), torch.device("cpu"))
    # Dense forward per sample: 2·(18·16 + 6·4 + 60·1) = 2·372 = 744.
    assert flops.dense_forward == 744
    # Alive: 5 of the first conv, 2 of the second, 10 of the linear:
    # f_S = 2·(5·16 + 2·4 + 10·1) = 196.
    flops.set_alive({"0": 5, "1": 2, "3": 10})
    assert flops.sparse_forward == 196
    flops.step(8)  # forward + both halves of the backward sparse: 8·3·196
    assert flops.record() == {"train_flops": 4704, "train_flops_dense": 8 * 3 * 744}
    flops.step(8, dense_grad=True)  # the weight gradient dense: 8·(2·196 + 744)
    assert flops.record() == {
        "train_flops": 4704 + 8 * (2 * 196 + 744),
        "train_flops_dense": 2 * 8 * 3 * 744,
    }
    again = TrainingFlops.of_model(_tiny(), (1, 4, 4), torch.device("cpu"))
    again.load_state_dict(flops.state_dict())
    assert again.record() == flops.record()
    again.load_state_dict(None)  # a checkpoint from before the counts: unknown from there on
    again.step(8)
    assert again.record() == {"train_flops": None, "train_flops_dense": None}


def test_the_controller_counts_masks_and_dense_layers_inside_alive_channels() -> None:
    torch.manual_seed(0)
    net = create_model("resnet_quick", width=8, in_channels=3, num_classes=4)
    cfg = ChaseConfig(
        density=0.2,
        channel_sparsity=0.5,
        channel_every=2,
        update_every=1000,
        dense_layers=["layer3.0.conv3"],  # 1x1, 32 -> 128
    )
    chase = Chase(
        net, derive_cached(net, (3, 8, 8)), cfg, None, steps_per_epoch=4, epochs=2,
        explore_until=1,
    )  # fmt: skip
    flops = TrainingFlops.of_model(net, (3, 8, 8), torch.device("cpu"))
    for t in range(1, 5):  # channel events at 1 and 3 ((t + 500) mod 2 = 0, t < 4)
        chase.after_step(t)
    alive = chase.alive_weights(flops.shapes)
    masks = chase.masks
    for name in flops.shapes:
        if f"{name}.weight" in masks:
            assert alive[name] == int(masks[f"{name}.weight"].sum())
    kept = int(chase.alive_channels()["layer3.0.conv2"].sum())
    assert kept < 32
    assert alive["layer3.0.conv3"] == 128 * kept  # dense: every row, the alive input columns
    flops.set_alive(alive)
    assert flops.sparse_forward == forward_flops(alive, flops.positions) < flops.dense_forward


def _epochs(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["event"] == "epoch"]


def test_every_epoch_line_carries_cumulative_training_flops(tmp_path: Path) -> None:
    dense = _epochs(train_run(tmp_path, "dense", chase={"density": 1.0, "channel_sparsity": 0.0}))
    sparse_run = train_run(tmp_path, "sparse")
    sparse = _epochs(sparse_run)
    net = create_model("resnet_quick", width=4, in_channels=3, num_classes=4)
    f_d = TrainingFlops.of_model(net, (3, 8, 8), torch.device("cpu")).dense_forward
    per_epoch = 3 * f_d * 192  # 6 steps of 32 samples
    assert [e["train_flops_dense"] for e in dense] == [per_epoch * k for k in (1, 2, 3)]
    assert [e["train_flops"] for e in dense] == [e["train_flops_dense"] for e in dense]
    assert [e["train_flops_dense"] for e in sparse] == [per_epoch * k for k in (1, 2, 3)]
    flops = [e["train_flops"] for e in sparse]
    assert (
        flops == sorted(flops) and 0 < flops[-1] < 0.75 * sparse[-1]["train_flops_dense"]
    )  # density 0.3
    final = load_checkpoint(sparse_run / "final.pt")
    assert final["train_flops"] == {"sparse": flops[-1], "dense": sparse[-1]["train_flops_dense"]}
