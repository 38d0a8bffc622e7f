"""`build` of an int8 Q/DQ model: explicit quantization on the strongly typed network, against
the fake TensorRT (tests/fake_tensorrt.py); refusals of what TensorRT cannot build.

The real build needs TensorRT and an NVIDIA GPU and is covered by tests/gpu where they exist.
"""

from __future__ import annotations

import hashlib
import json
import sys

import onnx
import pytest
from click.testing import CliRunner
from int8_models import residual_net

from chase_deploy.backends.trt.logger import trt_logger
from chase_deploy.cli import main
from chase_deploy.environment import Gpu
from chase_deploy.int8.quantize import Settings, quantize_file
from tests import fake_tensorrt
from tests.conftest import write_recipe

H100 = Gpu(0, "NVIDIA H100 80GB HBM3", "9.0", 81000)


@pytest.fixture
def fake_trt(monkeypatch):
    """A fake TensorRT of the given version and a fake H100, as `build` sees them."""
    import chase_deploy.backends.probe as probe
    import chase_deploy.environment as environment

    def install(version: str = "10.14.1"):
        module = fake_tensorrt.make_module(version)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        monkeypatch.setattr(probe, "tensorrt_missing", lambda: None)
        monkeypatch.setattr(probe, "gpu_missing", lambda: None)
        monkeypatch.setattr(environment, "current_gpu", lambda: H100)
        trt_logger.cache_clear()
        return module

    yield install
    trt_logger.cache_clear()


@pytest.fixture
def models(tmp_path):
    """The residual test net quantized for each target."""
    recipe = write_recipe(tmp_path / "tiny.yaml")
    net = residual_net(tmp_path / "r.onnx")
    out = {}
    for target in ("tensorrt", "cpu"):
        out[target] = tmp_path / f"r.{target}.onnx"
        quantize_file(net, recipe, out[target], Settings(target=target, samples=64))
    return out


def refused(result, *fragments) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("version", "flags"),
    [("10.14.1", 1 << fake_tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), ("11.4.0", 0)],
)
def test_qdq_model_builds_by_explicit_quantization(tmp_path, models, fake_trt, version, flags):
    trt = fake_trt(version)
    engine = tmp_path / "r.engine"
    result = CliRunner().invoke(
        main, ["build", str(models["tensorrt"]), "--out", str(engine), "--batch", "1:4:8"]
    )
    assert result.exit_code == 0, result.output
    rec = trt.recorder
    assert rec.network_flags == [flags]  # strongly typed: STRONGLY_TYPED on 10, implicit on 11
    assert rec.builder_flags == []  # no precision flag: the Q/DQ nodes are the precision
    (parsed,) = rec.parsed
    sent = onnx.load(str(models["tensorrt"]))
    assert parsed.SerializeToString() == sent.SerializeToString()  # the model as quantized
    assert engine.read_bytes() == b"serialized plan"
    sidecar = json.loads((tmp_path / "r.engine.json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["strongly_typed"] is True
    assert sidecar["int8"]["quantization"] == "explicit (Q/DQ), symmetric int8"
    assert sidecar["int8"]["int8_layers"] == sidecar["int8"]["layers"] == 4
    sha = hashlib.sha256(models["tensorrt"].read_bytes()).hexdigest()
    assert sidecar["source"]["sha256"] == sha
    assert sidecar["gpu"] == {"name": H100.name, "compute_capability": "9.0"}


def test_float_model_still_records_its_precision(tmp_path, fake_trt):
    trt = fake_trt()
    net = residual_net(tmp_path / "r.onnx")
    result = CliRunner().invoke(main, ["build", str(net), "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "r.engine.json").read_text())
    assert sidecar["precision"] == "fp16" and "int8" not in sidecar
    assert trt.recorder.builder_flags == []


def test_cpu_form_is_refused(tmp_path, models, fake_trt):
    fake_trt()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(main, ["build", str(models["cpu"])])
    refused(result, "quantized for ONNX Runtime's CPU", "uint8", "--target tensorrt")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_precision_of_a_qdq_model_is_refused(tmp_path, models):
    """Refused before TensorRT is even looked for: the same answer with or without it."""
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(main, ["build", str(models["tensorrt"]), "--precision", "fp16"])
    refused(result, "--precision fp16", "int8 Q/DQ model", "leave --precision out")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
