"""``model.name`` forms: registry names, ``MODULE:CALLABLE`` from the working directory,
``torchvision:`` and ``timm:`` (tested where they import), and every refusal: one line, exit 2,
nothing written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from chase_deploy.cli import main
from tests.conftest import write_recipe
from tests.slim_models import make_checkpoint
from train.errors import BadInput
from train.models import create_model, resolve

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes=10, in_channels=3, width=4):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    def build(num_classes=10, in_channels=3, width=4, pretrained=False):
        return Net(num_classes, in_channels, width)

    def broken(width=4):
        raise ValueError(f"width {width} is not supported")

    def not_a_module(**kwargs):
        return 42

    class Zoo:
        @staticmethod
        def small(**kwargs):
            return Net(**kwargs)
    """
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "src_nets.py").write_text(MODULE)
    (tmp_path / "needs_pkg.py").write_text("import not_installed_pkg_xyz\n")
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_callables_from_the_working_directory(workdir: Path) -> None:
    model = create_model("src_nets:build", width=6, num_classes=3)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    assert set(resolve("src_nets:build").params) == {
        "num_classes",
        "in_channels",
        "width",
        "pretrained",
    }
    assert create_model("src_nets:Net", width=2).conv.out_channels == 2
    assert create_model("src_nets:Zoo.small", width=5).conv.out_channels == 5
    assert resolve("src_nets:Zoo.small").any_keyword


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("no_such_module:build", {}, "cannot import module 'no_such_module'"),
        ("needs_pkg:build", {}, "imports 'not_installed_pkg_xyz', which is not installed"),
        ("raises_on_import:build", {}, "raised RuntimeError: boom at import"),
        ("src_nets:missing", {}, "has no 'missing'; it defines"),
        ("src_nets:broken", {"width": 3}, "raised ValueError: width 3 is not supported"),
        ("src_nets:not_a_module", {}, "returned a int, not a torch.nn.Module"),
        ("src_nets:build", {"pretrained": True}, "never downloads anything"),
        ("src_nets:", {}, "is not MODULE:CALLABLE"),
        ("resnet9000", {}, "unknown model 'resnet9000'"),
    ],
)
def test_refusals_are_one_line_exit_2_and_write_nothing(
    workdir: Path, name: str, kwargs: dict, message: str
) -> None:
    recipe = write_recipe(workdir / "r.yaml", model={"name": name, **kwargs})
    out = workdir / "run"
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    assert not out.exists()


def test_checkpoint_of_a_module_that_is_not_on_the_path(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "gone_nets.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    model = create_model("gone_nets:build")
    ckpt = tmp_path / "final.pt"
    make_checkpoint(ckpt, "resnet_quick", {"width": 4}, input_shape=(1, 8, 8))
    data = torch.load(ckpt, weights_only=True)
    data["model"] = {"name": "missing_nets:build", "kwargs": {}}
    data["state_dict"] = model.state_dict()
    data["masks"], data["channel_plan"] = {}, {}
    torch.save(data, ckpt)
    result = CliRunner().invoke(main, ["slim", str(ckpt), "--out", str(tmp_path / "slim")])
    assert result.exit_code == 2
    assert "cannot import module 'missing_nets'" in result.output
    assert "PYTHONPATH" in result.output and "pip install" in result.output


def test_torchvision_models_where_torchvision_imports() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a CUDA build beside a CPU torch fails oddly
        pytest.skip(f"torchvision does not import here ({type(e).__name__}); the CPU torch wheel")
    from tests.derived_groups import derive_cached

    model = create_model("torchvision:resnet18", num_classes=4)
    groups = derive_cached(model, (3, 32, 32))
    assert [g.name for g in groups] == [f"layer{s}.{b}.conv1" for s in (1, 2, 3, 4) for b in (0, 1)]
    with pytest.raises(BadInput, match="never downloads anything"):
        create_model("torchvision:resnet18", weights="IMAGENET1K_V1")


def test_timm_models_where_timm_imports() -> None:
    try:
        import timm  # noqa: F401
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"timm does not import here ({type(e).__name__}); the CPU torch wheel")
    from tests.derived_groups import derive_cached

    model = create_model("timm:resnet18", num_classes=4)
    assert len(derive_cached(model, (3, 32, 32))) == 8
    with pytest.raises(BadInput, match="never downloads anything"):
        create_model("timm:resnet18", pretrained=True)


def test_missing_torchvision_or_timm_is_a_clear_refusal() -> None:
    for prefix, package in (("torchvision", "torchvision"), ("timm", "timm")):
        try:
            __import__(package)
            continue
        except Exception:  # noqa: BLE001
            pass
        with pytest.raises(BadInput, match=f"needs {package}, which cannot be imported here"):
            resolve(f"{prefix}:resnet18")
