"""Module versions travel with the state dict: a model whose ``_load_from_state_dict`` needs
its version (torchvision's MNASNet; ``own_models.mnasnet`` copies it) trains, resumes and
slims, and checkpoints written before the versions were saved still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from chase_deploy.cli import main
from tests import own_models
from tests.conftest import write_recipe
from train.atomic import torch_save
from train.checkpoint import build_model_from_checkpoint, load_checkpoint
from train.errors import BadInput
from train.state_versions import KEY, module_versions, versioned


def test_versions_are_read_from_a_state_dict_and_put_back() -> None:
    net = own_models.mnasnet()
    versions = module_versions(net.state_dict())
    assert versions[""] == 2  # MNASNet._version
    assert versions["layers.0.1"] == 2  # BatchNorm2d._version
    assert versions["layers.0.0"] == 1  # a plain Conv2d
    assert len(versions) == len(list(net.named_modules()))
    plain = {k: v.clone() for k, v in net.state_dict().items()}  # what a checkpoint holds
    assert module_versions(plain) == {}
    with pytest.raises(ValueError, match="version should be set to 1 or 2 instead of None"):
        own_models.mnasnet().load_state_dict(plain)
    for saved in (versions, None):  # saved with the checkpoint, or rebuilt from the model
        other = own_models.mnasnet()
        other.load_state_dict(versioned(plain, saved, other))
        assert all(torch.equal(other.state_dict()[k], v) for k, v in plain.items())


def test_malformed_versions_are_bad_input() -> None:
    net = own_models.mnasnet()
    with pytest.raises(BadInput, match=f"checkpoint entry {KEY}: expected a mapping"):
        versioned(net.state_dict(), {"": "two"}, net)


def test_mnasnet_trains_resumes_and_slims(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"name": "own_models:mnasnet", "width": 8},
        data={"name": "synthetic", "image_size": 16, "num_train": 32, "num_val": 16,
              "batch_size": 16, "num_classes": 4},
        train={"epochs": 2},
        chase={"density": 0.3, "update_every": 2, "channel_every": 2, "explore_until": 1,
               "channel_sparsity": 0.4},
    )  # fmt: skip
    run = tmp_path / "run"
    runner = CliRunner()
    done = runner.invoke(main, ["train", str(recipe), "--out", str(run), "--device", "cpu"])
    assert done.exit_code == 0, done.output
    ckpt = torch.load(run / "final.pt", weights_only=True)
    assert ckpt[KEY][""] == 2 and all(isinstance(v, int) for v in ckpt[KEY].values())

    # resume from last.pt (loads the state dict into the trainer's model)
    (run / "final.pt").unlink()
    again = runner.invoke(
        main, ["train", str(recipe), "--out", str(run), "--device", "cpu", "--resume", "auto"]
    )
    assert again.exit_code == 0, again.output
    assert "resumed from" in again.output

    slim = runner.invoke(main, ["slim", str(run / "final.pt"), "--round-to", "8"])
    assert slim.exit_code == 0, slim.output
    report = json.loads((run / "slim_report.json").read_text())
    assert report["lossless"] and report["plan"]["pruned"] > 0

    # A checkpoint from before the versions were saved: rebuilt from the model, loads the same.
    old = {k: v for k, v in load_checkpoint(run / "final.pt").items() if k != KEY}
    torch_save(tmp_path / "old.pt", old)
    rebuilt = build_model_from_checkpoint(load_checkpoint(tmp_path / "old.pt"))
    current = build_model_from_checkpoint(load_checkpoint(run / "final.pt"))
    for name, value in current.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], value), name
