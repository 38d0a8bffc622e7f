"""Bring your own network: six small models that copy the graph structure of MobileNetV2 (with
squeeze-excitation), ResNet-18, DenseNet, ResNeXt, RegNetY and ConvNeXt (``own_models.py``).
Each is named in a recipe by its import path, trains a few steps with Chase, reaches its channel
sparsity exactly and slims losslessly, with and without ``--round-to 8``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from chase_deploy.cli import main
from chase_deploy.export import export_onnx
from chase_deploy.graph.surgery import slim_model
from chase_deploy.verify import compare
from tests import own_models
from tests.conftest import write_recipe
from tests.derived_groups import derive_cached
from train.channel_selection import grain
from train.checkpoint import build_model_from_checkpoint, load_checkpoint
from train.config import load_recipe
from train.loop import train
from train.plan import load_plan
from train.rounding import round_nearest
from train.slicing import group_alive

DATA = {
    "name": "synthetic",
    "image_size": 16,
    "channels": 3,
    "num_classes": 4,
    "num_train": 64,
    "num_val": 32,
    "batch_size": 16,
    "crop_padding": 1,
}
CHASE = {
    "density": 0.5,
    "update_every": 2,
    "channel_every": 2,
    "explore_until": 2,
    "channel_sparsity": 0.5,
    "beta": 0.5,
    "growth_extra": 0.05,
}

# What the analysis finds in each (prune_skip off): prunable group names -> grouped-conv segments.
GROUPS = {
    "mobilenet_v2_se": {
        "stem.0.0": 1,  # its depthwise conv and the first block's SE gate go with it
        "blocks.0.se.fc1": 1,
        "blocks.1.expand.0.0": 1,
        "blocks.1.se.fc1": 1,
        "blocks.2.expand.0.0": 1,
        "blocks.2.project.0": 1,
    },
    "resnet18": {f"layer{s}.{b}.conv1": 1 for s in (1, 2) for b in (0, 1)},
    "densenet": {
        "conv0": 1,
        "block1.0.conv1": 1,
        "block1.0.conv2": 1,
        "block1.1.conv1": 1,
        "block1.1.conv2": 1,
        "transition.2": 1,
        "block2.0.conv1": 1,
        "block2.0.conv2": 1,
        "block2.1.conv1": 1,
    },
    "resnext": {
        "layer1.0.conv1.0": 4,
        "layer1.0.conv2.0": 4,
        "layer1.1.conv1.0": 4,
        "layer1.1.conv2.0": 4,
        "layer2.0.conv1.0": 4,
        "layer2.0.conv2.0": 4,
    },
    "regnety": {
        "s1.0.a.0.0": 4,
        "s1.0.b.0.0": 4,
        "s1.0.se.fc1": 1,
        "s2.0.a.0.0": 8,
        "s2.0.b.0.0": 8,
        "s2.0.se.fc1": 1,
        "s2.1.a.0.0": 8,
        "s2.1.b.0.0": 8,
        "s2.1.se.fc1": 1,
    },
    "convnext": {"stage1.0.pwconv1": 1, "stage1.1.pwconv1": 1, "stage2.0.pwconv1": 1},
}


def test_every_architecture_is_covered() -> None:
    assert sorted(GROUPS) == sorted(own_models.ARCHITECTURES)


@pytest.mark.parametrize("arch", own_models.ARCHITECTURES)
def test_trains_from_an_import_path_and_slims_losslessly(arch: str, tmp_path: Path) -> None:
    recipe_path = write_recipe(
        tmp_path / "r.yaml",
        model={"name": f"own_models:{arch}", "width": 8},
        data=DATA,
        chase=CHASE,
    )
    recipe = load_recipe(recipe_path)
    final = train(recipe, tmp_path / "run", device="cpu", derive_groups=derive_cached)
    ckpt = load_checkpoint(final)
    model = build_model_from_checkpoint(ckpt)
    groups = derive_cached(model, ckpt["input_shape"])
    assert {g.name: g.segments for g in groups} == GROUPS[arch]

    # The channel sparsity is reached exactly: the kept total the schedule asks for.
    plan = load_plan(final.parent / "channel_plan.json")
    total = sum(g.width for g in groups)
    kept = sum(int(a.sum()) for a in group_alive(groups, plan))
    step = grain(1, [g.segments for g in groups])
    assert kept == round_nearest(total * (1 - CHASE["channel_sparsity"]), step)
    epochs = [
        json.loads(line)
        for line in (final.parent / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    last = [e for e in epochs if e["event"] == "epoch"][-1]
    assert last["channel_sparsity"] == pytest.approx(1 - kept / total)

    # slim, with and without rounding to multiples of 8: lossless against the masked model.
    exported = export_onnx(model, (2, *ckpt["input_shape"]))
    for round_to in (1, 8):
        result = slim_model(exported.model, plan, round_to=round_to)
        check = compare(exported.model, result.model, reference_session=exported.session)
        assert check.lossless and check.max_abs_reference > 0.01, (round_to, check)
        assert len(result.plan.layers) >= len(plan.layers)
        if round_to == 8:
            for entry in result.plan.layers.values():
                assert len(entry.kept) % 8 == 0 or len(entry.kept) == entry.out_channels


def test_cli_trains_inspects_and_slims_a_module_in_the_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    """The real entry points: the module sits in the working directory (importable as with
    ``python -m``), the CLI derives the groups itself, ``inspect`` lists them, slim is lossless."""
    shutil.copy(Path(own_models.__file__), tmp_path / "my_nets.py")
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"name": "my_nets:convnext", "width": 8},
        data=DATA,
        chase={**CHASE, "prune_skip": True},
    )
    runner = CliRunner()
    shown = runner.invoke(main, ["inspect", str(recipe)])
    assert shown.exit_code == 0, shown.output
    assert "stage1.0.pwconv1" in shown.output and "normalizes over the channel axis" in shown.output
    as_json = json.loads(runner.invoke(main, ["inspect", str(recipe), "--json"]).output)
    assert [g["name"] for g in as_json["groups"]] == list(GROUPS["convnext"])
    assert as_json["excluded"]["head"]
    done = runner.invoke(main, ["train", str(recipe), "--out", "run", "--device", "cpu"])
    assert done.exit_code == 0, done.output
    ckpt = load_checkpoint(tmp_path / "run" / "final.pt")
    assert ckpt["model"]["name"] == "my_nets:convnext"
    slim = runner.invoke(main, ["slim", "run/final.pt", "--out", "slim", "--round-to", "8"])
    assert slim.exit_code == 0, slim.output
    report = json.loads((tmp_path / "slim" / "slim_report.json").read_text())
    assert report["lossless"] and report["plan"]["pruned"] == 3
    inspected = runner.invoke(main, ["inspect", "run/final.pt", "--json"])
    assert inspected.exit_code == 0, inspected.output
    assert len(json.loads(inspected.output)["groups"]) == 3
    yaml.safe_load(recipe.read_text())  # the recipe stays plain YAML
