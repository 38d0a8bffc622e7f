import math

import pytest
import torch

from train.config import TrainConfig
from train.models import create_model
from train.optim import build_optimizer, lr_at


def test_multistep_drops_after_the_milestone_epochs() -> None:
    cfg = TrainConfig(epochs=160, lr=0.1, lr_schedule="multistep", milestones=[80, 120])
    assert lr_at(80 * 10, cfg, 10) == pytest.approx(0.1)
    assert lr_at(80 * 10 + 1, cfg, 10) == pytest.approx(0.01)
    assert lr_at(120 * 10 + 1, cfg, 10) == pytest.approx(0.001)


def test_cosine_with_warmup() -> None:
    cfg = TrainConfig(epochs=10, lr=0.4, lr_schedule="cosine", warmup_epochs=2)
    assert lr_at(1, cfg, 10) == pytest.approx(0.02)
    assert lr_at(20, cfg, 10) == pytest.approx(0.4)
    assert lr_at(60, cfg, 10) == pytest.approx(0.2 * (1 + math.cos(math.pi * 40 / 80)))
    assert lr_at(100, cfg, 10) == pytest.approx(0.0, abs=1e-12)


def test_no_decay_groups() -> None:
    model = create_model("resnet20")
    opt = build_optimizer(
        model, TrainConfig(no_decay_norm_bias=True, weight_decay=1e-4, nesterov=True)
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert all(p.ndim > 1 for p in opt.param_groups[0]["params"])
    assert opt.param_groups[0]["nesterov"]
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())
    assert isinstance(opt, torch.optim.SGD)
