"""``model.weights``: every file form, ignore globs, refusals, the recorded sha256, and the
magnitude-initialized masks of Chase started from loaded weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import save_file

from chase_deploy.cli import main
from chase_deploy.report import write_report
from tests.conftest import TINY_RECIPE, write_recipe
from train.amenable import channel_umm_ws
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import recipe_from_dict
from train.density import layer_counts
from train.distributed import DistInfo
from train.errors import BadInput
from train.loop import Trainer
from train.magnitude import magnitude_mask
from train.masks import maskable_modules
from train.models import create_model
from train.run_dir import RunDir
from train.weights import load_into, read_weights

KWARGS = {"width": 4, "num_classes": 4, "in_channels": 3}


def _model(seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet_quick", **{**KWARGS, **kwargs})


def _trained_state(seed: int = 11, **kwargs) -> dict[str, torch.Tensor]:
    """A state dict unlike any fresh initialization (BN statistics included)."""
    state = _model(seed, **kwargs).state_dict()
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 3
        for k, v in state.items()
    }


def _write_checkpoint(path: Path, state: dict, masks: dict) -> None:
    save_checkpoint(
        path,
        {
            "model": {"name": "resnet_quick", "kwargs": dict(KWARGS)},
            "state_dict": state,
            "masks": masks,
            "channel_plan": {"format": "chase-channel-plan", "version": 1, "layers": {}},
            "recipe": {},
            "progress": {"epoch": 1, "step": 1},
            "input_shape": [3, 8, 8],
        },
    )


def _files(tmp_path: Path, state: dict) -> dict[str, Path]:
    """The same weights as a .pt, a wrapped .pth, a .safetensors and a run directory."""
    files = {
        "pt": tmp_path / "w.pt",
        "pth": tmp_path / "w.pth",
        "safetensors": tmp_path / "w.safetensors",
        "run": tmp_path / "run",
    }
    torch.save(state, files["pt"])
    torch.save({"state_dict": state, "epoch": 3}, files["pth"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(files["safetensors"]))
    _write_checkpoint(files["run"] / "final.pt", state, {})
    return files


@pytest.mark.parametrize("form", ["pt", "pth", "safetensors", "run", "checkpoint"])
def test_every_file_form_loads_exactly(tmp_path: Path, form: str) -> None:
    state = _trained_state()
    files = _files(tmp_path, state)
    files["checkpoint"] = files["run"] / "final.pt"
    weights = read_weights(str(files[form]), "model.weights")
    assert weights.kind == {"safetensors": "safetensors", "run": "checkpoint"}.get(
        form, "checkpoint" if form == "checkpoint" else "state_dict"
    )
    read = files["run"] / "final.pt" if form == "run" else files[form]
    assert weights.path == read.resolve()
    assert weights.sha256 == hashlib.sha256(read.read_bytes()).hexdigest()
    model = _model(0)
    assert load_into(model, weights, [], "model.weights", "model resnet_quick") == []
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_checkpoint_weights_have_their_masks_applied(tmp_path: Path) -> None:
    state = _trained_state()
    mask = torch.rand(state["conv1.weight"].shape, generator=torch.Generator().manual_seed(1)) > 0.5
    _write_checkpoint(tmp_path / "c.pt", state, {"conv1.weight": mask})
    weights = read_weights(str(tmp_path / "c.pt"), "model.weights")
    assert torch.equal(weights.state["conv1.weight"], state["conv1.weight"] * mask)
    assert weights.model == {"name": "resnet_quick", "kwargs": KWARGS}
    assert weights.input_shape == (3, 8, 8)


def test_ignore_globs_keep_the_initial_values(tmp_path: Path) -> None:
    """A 10-class network's weights into a 4-class model: fc.* stays at its initialization."""
    state = _trained_state(num_classes=10)
    torch.save(state, tmp_path / "w.pt")
    weights = read_weights(str(tmp_path / "w.pt"), "model.weights")
    model, fresh = _model(5), _model(5).state_dict()
    ignored = load_into(model, weights, ["fc.*"], "model.weights", "model resnet_quick")
    assert ignored == ["fc.weight", "fc.bias"]
    loaded = model.state_dict()
    for key in loaded:
        expected = fresh[key] if key.startswith("fc.") else state[key]
        assert torch.equal(loaded[key], expected), key


def test_mismatches_are_refused_naming_the_first(tmp_path: Path) -> None:
    state = _trained_state(num_classes=10)
    state["head.weight"] = state.pop("fc.weight")
    del state["layer1.0.bn1.running_mean"]
    torch.save(state, tmp_path / "w.pt")
    weights = read_weights(str(tmp_path / "w.pt"), "model.weights")
    with pytest.raises(BadInput) as e:
        load_into(_model(0), weights, [], "model.weights", "model resnet_quick")
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"model.weights: {tmp_path / 'w.pt'} does not fit model resnet_quick: ")
    assert "missing layer1.0.bn1.running_mean, fc.weight;" in text
    assert "unexpected head.weight;" in text
    assert "shape fc.bias (10,) in the file, (4,) in the model;" in text
    assert text.endswith("list the keys to keep at their initial values in model.weights_ignore")


def test_a_glob_that_matches_nothing_is_refused(tmp_path: Path) -> None:
    torch.save(_trained_state(), tmp_path / "w.pt")
    weights = read_weights(str(tmp_path / "w.pt"), "model.weights")
    with pytest.raises(BadInput, match=r"model.weights_ignore\[1\]: 'classifier.\*' matches no"):
        load_into(_model(0), weights, ["fc.*", "classifier.*"], "model.weights", "m")


def test_files_that_are_not_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "noise.pt").write_bytes(b"\x00\x01garbage")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    torch.save({"w": torch.ones(1), "note": "text"}, tmp_path / "mixed.pt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    torch.save({"x": torch.nn.ReLU()}, tmp_path / "code.pt")  # a zip file holding an object
    (tmp_path / "empty_run").mkdir()
    cases = {
        "noise.pt": "is not a torch file",
        "bad.safetensors": "is not a readable .safetensors file",
        "mixed.pt": "entry 'note' is a str, not a tensor",
        "list.pt": "holds a list, not a state dict",
        "code.pt": "holds objects other than tensors and plain data",
        "empty_run": "is a directory without final.pt",
        "absent.pt": "no such file or directory",
    }
    for name, message in cases.items():
        with pytest.raises(BadInput, match=message) as e:
            read_weights(str(tmp_path / name), "model.weights")
        assert "\n" not in str(e.value) and str(e.value).startswith("model.weights: ")


def test_recipe_keys_are_checked_and_kept_out_of_the_factory_arguments() -> None:
    raw = {**TINY_RECIPE, "model": {"name": "resnet_quick", "width": 4, "weights": "w.pt"}}
    recipe = recipe_from_dict(raw)
    assert recipe.model.weights == "w.pt" and recipe.model.kwargs == {"width": 4}
    assert recipe.to_dict()["model"] == {"name": "resnet_quick", "width": 4, "weights": "w.pt"}
    raw["model"]["weights_ignore"] = "fc.*"
    assert recipe_from_dict(raw).model.weights_ignore == ["fc.*"]
    assert "weights" not in recipe_from_dict(TINY_RECIPE).to_dict()["model"]
    raw["model"]["weights"] = 3
    with pytest.raises(BadInput, match="recipe key model.weights: expected a string, got int"):
        recipe_from_dict(raw)


# ------------------------------------------------------------------------------- in training


def _trainer(tmp_path: Path, **sections) -> Trainer:
    recipe = recipe_from_dict(
        yaml.safe_load(write_recipe(tmp_path / "r.yaml", **sections).read_text())
    )
    from chase_deploy.graph.analysis import derive_groups

    return Trainer(recipe, RunDir(tmp_path / "out"), torch.device("cpu"), DistInfo(), derive_groups)


def test_chase_from_weights_keeps_each_layers_largest_magnitudes_exactly(tmp_path: Path) -> None:
    state = _trained_state()
    torch.save(state, tmp_path / "w.pt")
    trainer = _trainer(
        tmp_path,
        model={"weights": str(tmp_path / "w.pt")},
        chase={"density": 0.2, "channel_sparsity": 0.0},
    )
    chase = trainer.chase
    assert chase is not None
    layers = maskable_modules(trainer.model)
    names = [f"{n}.weight" for n in layers]
    counts = layer_counts([tuple(state[n].shape) for n in names], 0.2, "erk")
    assert chase.param_names == names and len(names) > 5
    for name, count, (umm0, ws0) in zip(names, counts, chase._initial, strict=True):
        mask = chase.masks[name]
        assert int(mask.sum()) == count, name  # the layer's ERK count, exactly
        kept = state[name].abs()[mask]
        dropped = state[name].abs()[~mask]
        if dropped.numel():
            assert kept.min() >= dropped.max(), name  # the largest magnitudes
        masked = state[name] * mask
        assert torch.equal(trainer.model.state_dict()[name], masked), name
        umm, ws = channel_umm_ws(masked)  # the amenable statistic starts after the masking
        assert torch.equal(umm0, umm) and torch.equal(ws0, ws), name


def test_magnitude_mask_counts_exactly_and_breaks_ties_by_position() -> None:
    w = torch.tensor([[0.5, -2.0, 0.5], [0.5, 1.0, -0.1]])
    assert magnitude_mask(w, 3).tolist() == [[True, True, False], [False, True, False]]
    assert magnitude_mask(w, 4).tolist() == [[True, True, True], [False, True, False]]
    assert int(magnitude_mask(w, 0).sum()) == 0 and bool(magnitude_mask(w, 9).all())
    big = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(0))
    for count in (1, 100, 9999):
        assert int(magnitude_mask(big, count).sum()) == count


def test_training_records_the_weights_sha256(tmp_path: Path) -> None:
    state = _trained_state()
    torch.save(state, tmp_path / "w.pt")
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"weights": str(tmp_path / "w.pt"), "weights_ignore": ["fc.*"]},
        chase={"channel_sparsity": 0.0, "explore_until": 1},
        train={"epochs": 1},
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = {
        "given": str(tmp_path / "w.pt"),
        "path": str((tmp_path / "w.pt").resolve()),
        "sha256": hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest(),
        "format": "state_dict",
        "ignored": ["fc.weight", "fc.bias"],
    }
    assert json.loads((out / "sources.json").read_text()) == {"weights": expected}
    said = f"starting from {expected['path']} (state_dict, sha256 {expected['sha256'][:12]}, 2 keys"
    assert said in result.output
    for ckpt in (out / "final.pt", out / "checkpoints" / "last.pt"):
        assert load_checkpoint(ckpt)["sources"] == {"weights": expected}
    assert yaml.safe_load((out / "recipe.yaml").read_text())["model"]["weights_ignore"] == ["fc.*"]
    run_recipe = recipe_from_dict(yaml.safe_load((out / "recipe.yaml").read_text()))
    report = write_report(out, run_recipe, {}, {}, {}, {}).read_text()
    started = f"- Started from `{expected['path']}` (state_dict, sha256 `{expected['sha256'][:12]}`"
    assert started + "; left at init: 2 keys)." in report


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("absent.pt", "model.weights: {tmp}/absent.pt: no such file or directory"),
        ("other.pt", "model.weights: {tmp}/other.pt does not fit model resnet_quick: shape"),
    ],
)
def test_bad_weights_exit_2_in_one_line_writing_nothing(
    tmp_path: Path, weights: str, message: str
) -> None:
    torch.save(_trained_state(width=8), tmp_path / "other.pt")
    recipe = write_recipe(tmp_path / "r.yaml", model={"weights": str(tmp_path / weights)})
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], result.output
    assert not out.exists()
