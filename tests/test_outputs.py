"""Models whose training forward returns more than the logits (GoogLeNet, Inception-v3, tuples,
dicts): the main output and the auxiliary ones, the weighted loss, and a GoogLeNet-like model
trained with Chase, evaluated and slimmed on its main output."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from chase_deploy.cli import main
from tests import own_models
from tests.conftest import write_recipe
from train.config import recipe_from_dict
from train.distill import kd_loss
from train.errors import BadInput
from train.metrics import read_metrics
from train.outputs import aux_weight, classification_loss, main_output, split_outputs

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
AUX1 = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
AUX2 = torch.tensor([[0.3, 0.2, 0.1], [0.0, 0.0, 3.0]])
TARGET = torch.tensor([0, 1])
Outputs = namedtuple("Outputs", ["logits", "aux_logits2", "aux_logits1"])
AuxFirst = namedtuple("AuxFirst", ["aux_logits", "logits"])


@pytest.mark.parametrize(
    ("out", "aux"),
    [
        (LOGITS, []),
        (Outputs(LOGITS, AUX2, AUX1), [AUX2, AUX1]),  # torchvision GoogLeNetOutputs
        (Outputs(LOGITS, None, None), []),  # aux heads switched off
        (AuxFirst(AUX1, LOGITS), [AUX1]),  # the `logits` field wins over the position
        ((LOGITS, AUX1), [AUX1]),
        ([LOGITS, AUX1, torch.zeros(2, 7)], [AUX1]),  # features of another shape: ignored
        ({"logits": LOGITS, "aux": AUX1, "features": torch.zeros(2, 5)}, [AUX1]),
        ({"out": LOGITS, "aux": AUX2}, [AUX2]),  # no `logits` key: the first value
    ],
)
def test_main_and_auxiliary_outputs(out, aux) -> None:
    main, found = split_outputs(out)
    assert main is LOGITS and main_output(out) is LOGITS
    assert len(found) == len(aux) and all(a is b for a, b in zip(found, aux, strict=True))


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ((), "empty tuple or dict"),
        ({}, "empty tuple or dict"),
        ((None, LOGITS), "main output (the `logits` entry, else the first) is NoneType"),
        ("logits", "returned str"),
    ],
)
def test_outputs_that_hold_no_logits_are_bad_input(out, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_outputs(out)


def test_the_loss_is_main_plus_weighted_auxiliaries() -> None:
    loss, count = classification_loss(Outputs(LOGITS, AUX2, AUX1), TARGET, 0.1, 0.3)
    expected = F.cross_entropy(LOGITS, TARGET, label_smoothing=0.1) + 0.3 * (
        F.cross_entropy(AUX2, TARGET, label_smoothing=0.1)
        + F.cross_entropy(AUX1, TARGET, label_smoothing=0.1)
    )
    assert count == 2 and torch.equal(loss, expected)
    plain, none = classification_loss(LOGITS, TARGET, 0.0, 0.3)
    assert none == 0 and torch.equal(plain, F.cross_entropy(LOGITS, TARGET))


def test_distillation_replaces_the_main_loss_and_keeps_auxiliary_cross_entropy() -> None:
    teacher = torch.randn_like(LOGITS)
    kd = lambda logits: kd_loss(logits, teacher, TARGET, 0.7, 3.0, 0.1)  # noqa: E731
    loss, count = classification_loss(Outputs(LOGITS, AUX2, AUX1), TARGET, 0.1, 0.3, kd)
    expected = kd_loss(LOGITS, teacher, TARGET, 0.7, 3.0, 0.1) + 0.3 * (
        F.cross_entropy(AUX2, TARGET, label_smoothing=0.1)
        + F.cross_entropy(AUX1, TARGET, label_smoothing=0.1)
    )
    assert count == 2 and torch.equal(loss, expected)


def test_aux_weight_defaults_to_the_reference_values() -> None:
    assert aux_weight("torchvision:googlenet", None) == 0.3
    assert aux_weight("torchvision:inception_v3", None) == 0.4
    assert aux_weight("own_models:googlenet", None) == 0.3
    assert aux_weight("torchvision:inception_v3", 0.0) == 0.0
    assert recipe_from_dict({"train": {"aux_weight": 0.5}}).train.aux_weight == 0.5
    with pytest.raises(BadInput, match="recipe key train.aux_weight: -1.0 is out of range"):
        recipe_from_dict({"train": {"aux_weight": -1}})


def test_googlenet_returns_auxiliaries_only_in_training() -> None:
    net = own_models.googlenet(num_classes=4)
    x = torch.randn(2, 3, 16, 16)
    out = net.train()(x)
    assert type(out).__name__ == "GoogLeNetOutputs" and out.aux_logits1.shape == (2, 4)
    assert isinstance(net.eval()(x), torch.Tensor)


def test_googlenet_trains_with_its_auxiliary_losses_and_slims(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"name": "own_models:googlenet", "width": 8},
        data={"name": "synthetic", "image_size": 16, "num_train": 32, "num_val": 16,
              "batch_size": 16, "num_classes": 4},
        train={"epochs": 2, "aux_weight": 0.4},
        chase={"density": 0.3, "update_every": 2, "channel_every": 2, "explore_until": 1,
               "channel_sparsity": 0.4},
    )  # fmt: skip
    runner = CliRunner()
    done = runner.invoke(main, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    assert (
        "the model returns 2 auxiliary output(s) in training: loss = main + 0.4 x each "
        "auxiliary loss" in done.output
    )
    epochs = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["event"] == "epoch"]
    assert len(epochs) == 2 and all(0.0 <= e["val_acc"] <= 1.0 for e in epochs)
    slim = runner.invoke(main, ["slim", str(tmp_path / "run" / "final.pt"), "--round-to", "8"])
    assert slim.exit_code == 0, slim.output
    report = json.loads((tmp_path / "run" / "slim_report.json").read_text())
    assert report["lossless"] and report["plan"]["pruned"] > 0
    assert report["pt2"]["verification"]["slim"]["lossless"]
