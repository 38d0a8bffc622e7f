import os
import pickle
from pathlib import Path

import pytest
import torch

from train.checkpoint import VERSION, build_model_from_checkpoint, load_checkpoint, save_checkpoint
from train.errors import BadInput
from train.models import create_model


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _ckpt(model: torch.nn.Module) -> dict:
    masks = {"conv1.weight": torch.rand_like(model.conv1.weight) > 0.5}
    return {
        "model": {"name": "resnet_quick", "kwargs": {"width": 4}},
        "state_dict": model.state_dict(),
        "masks": masks,
        "channel_plan": {"format": "chase-channel-plan", "version": 1, "layers": {}},
        "recipe": {"seed": 0},
        "progress": {"epoch": 1, "step": 10},
    }


def test_round_trip_applies_masks(tmp_path: Path) -> None:
    model = create_model("resnet_quick", width=4)
    ckpt = _ckpt(model)
    save_checkpoint(tmp_path / "c.pt", ckpt)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["format"] == "chase-checkpoint" and loaded["version"] == VERSION
    rebuilt = build_model_from_checkpoint(loaded)
    w = rebuilt.conv1.weight
    assert torch.equal(
        w[~ckpt["masks"]["conv1.weight"]], torch.zeros_like(w[~ckpt["masks"]["conv1.weight"]])
    )
    assert torch.equal(rebuilt.layer1[0].conv2.weight, model.layer1[0].conv2.weight)
    assert not any(p.name.startswith(".c.pt") for p in tmp_path.iterdir())  # no temp files left


def test_random_bytes_truncated_and_plain_state_dict(tmp_path: Path) -> None:
    (tmp_path / "rand.pt").write_bytes(os.urandom(2048))
    with pytest.raises(BadInput, match="not a torch checkpoint"):
        load_checkpoint(tmp_path / "rand.pt")
    model = create_model("resnet_quick", width=4)
    save_checkpoint(tmp_path / "ok.pt", _ckpt(model))
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(BadInput, match="not a chase checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")
    with pytest.raises(BadInput, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickle_with_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps(_Evil(marker)))
    torch.save({"format": "chase-checkpoint", "payload": _Evil(marker)}, tmp_path / "zip.pt")
    for name in ("legacy.pt", "zip.pt"):
        with pytest.raises(BadInput):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    torch.save(
        {
            **_ckpt(create_model("resnet_quick", width=4)),
            "format": "chase-checkpoint",
            "version": VERSION + 1,
        },
        tmp_path / "new.pt",
    )
    with pytest.raises(
        BadInput, match=f"newer chase-deploy \\(format version {VERSION + 1} > {VERSION}\\)"
    ):
        load_checkpoint(tmp_path / "new.pt")
