"""Shared fixtures: tiny recipes that train in seconds on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

# Keep test runs on the two CI cores predictable: tiny models are far slower with two intra-op
# threads on a busy 2-core machine than with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

TINY_RECIPE = {
    "seed": 3,
    "model": {"name": "resnet_quick", "width": 4},
    "data": {
        "name": "synthetic",
        "image_size": 8,
        "channels": 3,
        "num_classes": 4,
        "num_train": 192,
        "num_val": 64,
        "batch_size": 32,
        "crop_padding": 1,
    },
    "train": {"epochs": 3, "lr": 0.05, "weight_decay": 5.0e-4, "lr_schedule": "cosine"},
    "chase": {
        "density": 0.3,
        "update_every": 4,
        "channel_every": 4,
        "explore_until": 2,
        "channel_sparsity": 0.5,
        "beta": 0.5,
        "growth_extra": 0.05,
    },
}


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE, sort_keys=False))
    return path


def write_recipe(path: Path, **sections) -> Path:
    recipe = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_RECIPE.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            recipe.setdefault(key, {}).update(value)
        else:
            recipe[key] = value
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def train_run(tmp: Path, name: str, **sections) -> Path:
    """Train the tiny recipe (with ``sections`` overriding it) through the CLI into ``tmp/name``."""
    from click.testing import CliRunner

    from chase_deploy.cli import main

    recipe = write_recipe(tmp / f"{name}.yaml", **sections)
    out = tmp / name
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def assert_same_run(ref: Path, out: Path) -> None:
    """Two run directories ended bit-identical: final weights, masks, channel plan, and every
    metrics line but its wall time (what an exact resume must reproduce)."""
    from train.checkpoint import load_checkpoint
    from train.metrics import read_metrics

    a, b = load_checkpoint(ref / "final.pt"), load_checkpoint(out / "final.pt")
    assert a["progress"] == b["progress"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["masks"].keys() == b["masks"].keys() and len(a["masks"]) > 0
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key
    assert a["channel_plan"] == b["channel_plan"]

    def strip(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(path)]

    assert strip(ref / "metrics.jsonl") == strip(out / "metrics.jsonl")
