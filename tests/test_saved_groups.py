"""The channel groups training used are kept: ``channel_groups.json`` in the run directory and
the same data in every checkpoint; ``inspect``, ``analyze``, ``slim`` (``slim.pt2``) read them
instead of tracing the model again, and trace only checkpoints without them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from chase_deploy.cli import main
from chase_deploy.graph import analysis as graph_analysis
from tests import own_models
from tests.conftest import write_recipe
from tests.derived_groups import analyze_cached, derive_cached
from train.atomic import torch_save
from train.checkpoint import load_checkpoint
from train.groups import ModelGroups

SHAPE = (3, 16, 16)
DATA = {
    "name": "synthetic",
    "image_size": 16,
    "num_train": 32,
    "num_val": 16,
    "batch_size": 16,
    "num_classes": 4,
}
CHASE = {
    "density": 0.3,
    "update_every": 2,
    "channel_every": 2,
    "explore_until": 1,
    "channel_sparsity": 0.4,
}


@pytest.mark.parametrize("arch", own_models.EVERY)
@pytest.mark.parametrize("prune_skip", [False, True])
def test_groups_round_trip_through_plain_json(arch: str, prune_skip: bool) -> None:
    found = derive_cached(getattr(own_models, arch)(num_classes=4), SHAPE, prune_skip)
    assert ModelGroups.from_dict(json.loads(json.dumps(found.to_dict()))) == found


GOOD = {
    "prune_skip": False,
    "input_shape": [3, 8, 8],
    "excluded": {"fc": "the output layer"},
    "groups": [
        {
            "name": "conv1",
            "kind": "block",
            "width": 4,
            "segments": 1,
            "producers": ["conv1"],
            "carriers": ["bn1"],
            "consumers": ["conv2"],
            "members": [
                {"name": "conv1", "role": "producer", "kind": "conv"},
                {"name": "bn1", "role": "carrier", "kind": "norm"},
                {"name": "conv2", "role": "consumer", "kind": "conv", "map": {"offset": 2,
                 "total": 8, "inner": 1, "outer": 1}},
            ],
        }
    ],
}  # fmt: skip


def _broken(path: str, value) -> dict:
    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("groups", KeyError, "`groups` is missing"),
        ("groups", {}, "`groups` must be a list"),
        ("groups.0.width", 0, "`width` must be an integer >= 1"),
        ("groups.0.width", True, "`width` must be an integer >= 1"),
        ("groups.0.members.0.role", "reader", "unknown role 'reader'"),
        ("groups.0.members.2.map.inner", 0, "`inner` must be an integer >= 1"),
        ("groups.0.producers", ["conv9"], "members disagree with the names"),
        ("input_shape", [3, -8, 8], "`input_shape` must list positive integers"),
        ("excluded", {"fc": 3}, "`excluded` must map layer names to reasons"),
        ("prune_skip", "yes", "`prune_skip` must be true or false"),
    ],
)
def test_malformed_groups_are_refused_naming_the_field(path: str, value, message: str) -> None:
    assert ModelGroups.from_dict(GOOD).groups[0].members[2].map.offset == 2
    with pytest.raises(ValueError, match=message.replace("`", ".")):
        ModelGroups.from_dict(_broken(path, value))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A DenseNet-like model (concatenations: consumer maps with offsets) trained with Chase."""
    folder = tmp_path_factory.mktemp("saved")
    recipe = write_recipe(
        folder / "r.yaml",
        model={"name": "own_models:densenet", "width": 8},
        data=DATA,
        train={"epochs": 2},
        chase=CHASE,
    )
    done = CliRunner().invoke(
        main, ["train", str(recipe), "--out", str(folder / "run"), "--device", "cpu"]
    )
    assert done.exit_code == 0, done.output
    return folder / "run"


def test_training_saves_its_groups_in_the_run_and_every_checkpoint(run: Path) -> None:
    saved = json.loads((run / "channel_groups.json").read_text())
    for name in ("final.pt", "checkpoints/last.pt"):
        assert torch.load(run / name, weights_only=True)["channel_groups"] == saved
    model = own_models.densenet(num_classes=4)
    assert ModelGroups.from_dict(saved) == derive_cached(model, SHAPE, False)
    assert saved["input_shape"] == list(SHAPE) and saved["prune_skip"] is False


def _no_trace(model, sample_shape):
    raise AssertionError("traced the model although the checkpoint holds its groups")


def test_later_stages_read_the_saved_groups_without_tracing(
    run: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(graph_analysis, "analyze", _no_trace)
    runner = CliRunner()
    shown = runner.invoke(main, ["inspect", str(run / "final.pt"), "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert report["groups_source"] == "saved by training"
    assert report["groups"] == json.loads((run / "channel_groups.json").read_text())["groups"]
    slim = runner.invoke(main, ["slim", str(run / "final.pt"), "--out", str(tmp_path / "s")])
    assert slim.exit_code == 0, slim.output
    written = json.loads((tmp_path / "s" / "slim_report.json").read_text())
    assert written["lossless"] and written["pt2"]["verification"]["slim"]["lossless"]
    analyzed = runner.invoke(main, ["analyze", str(run), "--out", str(tmp_path / "a")])
    assert analyzed.exit_code == 0, analyzed.output


def test_a_checkpoint_without_groups_is_traced(run: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []

    def counting(model, sample_shape):
        calls.append(tuple(sample_shape))
        return analyze_cached(model, sample_shape)

    monkeypatch.setattr(graph_analysis, "analyze", counting)
    old = {k: v for k, v in load_checkpoint(run / "final.pt").items() if k != "channel_groups"}
    torch_save(tmp_path / "old.pt", old)
    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "old.pt"), "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert report["groups_source"] == "traced" and calls == [SHAPE]
    assert report["groups"] == json.loads((run / "channel_groups.json").read_text())["groups"]


def test_corrupt_saved_groups_are_refused_in_one_line(run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(run / "final.pt")
    ckpt["channel_groups"]["groups"][0]["width"] = 3  # no longer fits its producer
    torch_save(tmp_path / "bad.pt", ckpt)
    shown = CliRunner().invoke(main, ["slim", str(tmp_path / "bad.pt"), "--out", str(tmp_path)])
    assert shown.exit_code == 2, shown.output
    (line,) = shown.output.strip().splitlines()
    assert line.startswith("error: checkpoint entry channel_groups does not fit its model")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pt"]  # nothing written
