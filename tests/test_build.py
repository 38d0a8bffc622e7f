"""`chase-deploy build`: option checks, refusals without TensorRT/GPU, the engine sidecar check.

The real build-and-run test needs TensorRT and an NVIDIA GPU and skips without them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from chase_deploy.backends import missing_pieces
from chase_deploy.backends.trt.loader import DEFAULT_PROFILE, build_engine
from chase_deploy.backends.trt.sidecar import check_engine_compatible
from chase_deploy.cli import main
from chase_deploy.commands.params import BatchProfile
from chase_deploy.environment import Gpu
from chase_deploy.errors import MissingBackend
from tests.bench_models import conv_net
from train.errors import BadInput

L4 = Gpu(0, "NVIDIA L4", "8.9", 23034)
SIDECAR = {
    "format": "chase-deploy-engine",
    "tensorrt": "10.8.0",
    "gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"},
}
needs_tensorrt = pytest.mark.skipif(
    bool(missing_pieces("tensorrt")), reason="needs TensorRT, an NVIDIA GPU and CUDA torch"
)


def build(*args):
    return CliRunner().invoke(main, ["build", *map(str, args)])


def refused(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_parse_profile():
    parse_profile = BatchProfile().convert
    assert parse_profile("1:8:32", None, None) == (1, 8, 32)
    assert parse_profile("4", None, None) == (4, 4, 4)
    for bad in ("8:1:32", "0:1:2", "1:2", "a:b:c", "1:2:3:4", "", "-1:2:3"):
        with pytest.raises(BadInput, match="--batch"):
            parse_profile(bad, None, None)


@pytest.mark.skipif(not missing_pieces("tensorrt"), reason="TensorRT works here")
def test_build_without_tensorrt_or_gpu_says_which_is_missing(tmp_path):
    model = conv_net(tmp_path / "m.onnx")
    result = build(
        model, "--precision", "fp16", "--batch", "1:4:8", "--timing-cache", tmp_path / "t.cache"
    )
    refused(result, "chase-deploy build needs TensorRT and an NVIDIA GPU")
    assert ("TensorRT is not installed" in result.stderr) or ("no NVIDIA GPU" in result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--precision", "int8"], ["--precision 'int8' is not one of fp32, fp16, bf16"]),
        (["--batch", "32:8:1"], ["MIN <= OPT <= MAX"]),
        (["--batch", "x"], ["--batch 'x'"]),
        (["--workspace-mib", "0"], ["--workspace-mib '0'"]),
    ],
)
def test_bad_options(tmp_path, args, fragments):
    model = conv_net(tmp_path / "m.onnx")
    refused(build(model, *args), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_bad_model_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("no model here")
    refused(build(junk), "junk.onnx is not an ONNX model")
    refused(build(tmp_path / "none.onnx"), "does not exist")
    fixed = conv_net(tmp_path / "fixed.onnx", batch=2)
    refused(build(fixed, "--batch", "1:8:32"), "fixed batch size of 2", "--batch 2")


def test_unwritable_outputs(tmp_path):
    model = conv_net(tmp_path / "m.onnx")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    refused(build(model, "--out", blocker / "m.engine"), "--out", "is not a directory")
    refused(build(model, "--out", tmp_path), "--out", "is a directory")
    refused(build(model, "--timing-cache", blocker / "t.cache"), "--timing-cache")


@pytest.mark.skipif(not missing_pieces("tensorrt"), reason="TensorRT works here")
def test_build_engine_api_profiles(tmp_path):
    fixed = conv_net(tmp_path / "fixed.onnx", batch=2)
    with pytest.raises(
        MissingBackend
    ):  # the default profile means "not given": the fixed batch is used
        build_engine(fixed, tmp_path / "f.engine")
    assert DEFAULT_PROFILE == (1, 8, 32)
    with pytest.raises(BadInput, match="fixed batch size of 2"):
        build_engine(fixed, tmp_path / "f.engine", batch=(1, 4, 8))
    dynamic = conv_net(tmp_path / "dyn.onnx")
    with pytest.raises(BadInput, match="min <= opt <= max"):
        build_engine(dynamic, tmp_path / "d.engine", batch=(8, 4, 1))
    with pytest.raises(MissingBackend):
        build_engine(dynamic, tmp_path / "d.engine", batch=(1, 4, 8))
    assert not (tmp_path / "d.engine").exists()


def test_engine_compatibility_check():
    check_engine_compatible(SIDECAR, "m.engine", "10.8.0", L4)
    with pytest.raises(
        BadInput, match="built with TensorRT 10.8.0, this machine has TensorRT 10.9.0"
    ):
        check_engine_compatible(SIDECAR, "m.engine", "10.9.0", L4)
    other = Gpu(0, "NVIDIA H100 80GB HBM3", "9.0", 81000)
    with pytest.raises(
        BadInput, match="built for NVIDIA L4 .*this GPU is NVIDIA H100 80GB HBM3 \\(9.0\\)"
    ):
        check_engine_compatible(SIDECAR, "m.engine", "10.8.0", other)


def test_engine_compatibility_on_a_machine_without_tensorrt_or_gpu(monkeypatch):
    import chase_deploy.environment as environment

    monkeypatch.setattr(environment, "tensorrt_version", lambda: None)
    monkeypatch.setattr(environment, "current_gpu", lambda: None)
    with pytest.raises(MissingBackend, match="needs TensorRT 10.8.0, which is not installed"):
        check_engine_compatible(SIDECAR, "m.engine")
    monkeypatch.setattr(environment, "tensorrt_version", lambda: "10.8.0")
    with pytest.raises(MissingBackend, match="needs a GPU"):
        check_engine_compatible(SIDECAR, "m.engine")


def test_parser_errors_name_the_nodes():
    import onnx

    from chase_deploy.backends.trt.loader import _parser_errors

    class Error:
        def __init__(self, node, desc):
            self._node, self._desc = node, desc

        def node(self):
            return self._node

        def desc(self):
            return self._desc

    class Parser:
        errors = [Error(1, "Unsupported operator"), Error(-1, "Invalid graph")]
        num_errors = 2

        def get_error(self, i):
            return self.errors[i]

    node_a = onnx.helper.make_node("Relu", ["x"], ["y"], name="first")
    node_b = onnx.helper.make_node("NonZero", ["y"], ["z"], name="/layer1/nonzero")
    graph = onnx.helper.make_graph([node_a, node_b], "g", [], [])
    text = _parser_errors(Parser(), onnx.helper.make_model(graph))
    assert text == "node '/layer1/nonzero' (NonZero): Unsupported operator; graph: Invalid graph"


@needs_tensorrt
@pytest.mark.gpu
def test_build_and_run_engine_on_the_gpu(tmp_path):  # pragma: no cover - GPU machines only
    import onnxruntime as ort

    from chase_deploy.backends import get_backend
    from chase_deploy.backends.base import random_inputs
    from chase_deploy.bench import benchmark

    model = conv_net(tmp_path / "m.onnx", width=16)
    cache = tmp_path / "timing.cache"
    engine = build_engine(model, tmp_path / "m.engine", batch=(1, 2, 4), timing_cache=cache)
    sidecar = json.loads((tmp_path / "m.engine.json").read_text())
    assert sidecar["format"] == "chase-deploy-engine" and sidecar["precision"] == "fp32"
    assert sidecar["profiles"][0]["max"] == [4, 3, 8, 8] and len(sidecar["source"]["sha256"]) == 64
    assert cache.stat().st_size > 0
    loaded = get_backend("tensorrt").load(engine, [1, 4])
    feeds = random_inputs(loaded.inputs, 4, seed=5)
    (out,) = loaded.run(feeds)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (ref,) = session.run(None, feeds)
    np.testing.assert_allclose(out, ref, atol=1e-2 * max(1.0, float(np.abs(ref).max())))  # TF32
    result = benchmark(
        [engine, model], backend="tensorrt", batches=[1, 4], warmup_ms=5, duration_s=0.05
    )
    assert result["environment"]["backend"]["timer"] == "cuda-events"
    assert all(r["latency_ms"]["min"] > 0 for r in result["results"])
