"""Backend probing, refusals on a machine without GPU/TensorRT, model-file detection, ORT runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from chase_deploy.backends import BACKENDS, get_backend, missing_pieces, probe, usable_backends
from chase_deploy.backends.base import InputSpec, check_batches, random_inputs
from chase_deploy.backends.modelfile import inspect_model_file
from chase_deploy.backends.probe import _explain, captured_output
from chase_deploy.environment import Gpu, GpuScan
from chase_deploy.errors import MissingBackend
from tests.bench_models import conv_net, fake_engine
from train.errors import BadInput


def test_ort_cpu_is_always_usable():
    assert missing_pieces("ort-cpu") == []
    assert usable_backends()[0] == "ort-cpu"
    assert set(usable_backends()) <= set(BACKENDS)


def test_unknown_backend_is_bad_input():
    with pytest.raises(
        BadInput,
        match="unknown backend 'onnx-gpu'.*ort-cpu, ort-cuda, ort-trt, tensorrt, torch-cpu, torch-cuda",
    ):
        get_backend("onnx-gpu")


@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt", "tensorrt", "torch-cuda"])
def test_gpu_backends_refused_naming_what_is_missing(name):
    """The refusal names every missing piece as the probe found it: the GPU on a machine
    without one, the package (onnxruntime-gpu, TensorRT) on a GPU machine without it."""
    missing = missing_pieces(name)
    if not missing:
        pytest.skip(f"{name} is usable on this machine")
    with pytest.raises(MissingBackend) as err:
        get_backend(name)
    message = str(err.value)
    assert message.startswith(f"backend {name} is not usable here: ")
    assert "\n" not in message
    for reason in missing:
        assert reason in message
    assert name not in usable_backends()


H200 = Gpu(0, "NVIDIA H200", "9.0", 143771)


@pytest.fixture
def gpu_box_without_gpu_packages(monkeypatch):
    """This machine made to look like the lendable H200 box: a GPU and CUDA torch, but a CPU
    build of onnxruntime and no TensorRT (the probe's caches are cleared around the test)."""
    import importlib.util

    import onnxruntime

    cached = (
        probe._ort_missing,
        probe.tensorrt_missing,
        probe.torch_cuda_missing,
        probe.torch_missing,
    )
    for fn in cached:
        fn.cache_clear()
    monkeypatch.setattr(probe, "scan_gpus", lambda: GpuScan((H200,), "13.0", None))
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    versions = {"onnxruntime": "1.31.1", "onnxruntime-gpu": None, "torch": "2.11.0"}
    monkeypatch.setattr(probe, "package_version", lambda dist: versions.get(dist))
    monkeypatch.setattr(probe, "onnxruntime_version", lambda: "1.31.1")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tensorrt" else find_spec(name, *args),
    )
    monkeypatch.setattr(probe, "torch_cuda_missing", lambda: None)
    yield
    for fn in cached:
        fn.cache_clear()


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("ort-cuda", "onnxruntime 1.31.1 was built without CUDAExecutionProvider"),
        ("ort-trt", "onnxruntime 1.31.1 was built without TensorrtExecutionProvider"),
        ("tensorrt", "TensorRT is not installed (pip install 'chase-deploy[tensorrt]')"),
    ],
)
def test_refusals_on_a_gpu_box_name_the_missing_package(
    gpu_box_without_gpu_packages, name, package
):
    with pytest.raises(MissingBackend) as err:
        get_backend(name)
    message = str(err.value)
    assert message.startswith(f"backend {name} is not usable here: ")
    assert package in message
    assert "no NVIDIA GPU" not in message  # the GPU is there; the package is what is missing
    assert missing_pieces("torch-cuda") == []
    assert name not in usable_backends()
    assert "torch-cuda" in usable_backends()


def test_ort_failure_log_is_summarised():
    log = (
        "\x1b[1;31m2026 [E:onnxruntime] Failed to load library libonnxruntime_providers_cuda.so with "
        "error: libcublasLt.so.13: cannot open shared object file\x1b[m\n"
        "[W:onnxruntime] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install"
    )
    text = _explain(log, "CUDAExecutionProvider")
    assert (
        text
        == "missing library: libcublasLt.so.13: cannot open shared object file; it needs cuDNN 9.* and CUDA 13.*"
    )


def test_captured_output_swallows_python_and_c_level_output():
    import os
    import sys

    with captured_output() as log:
        print("from python")
        sys.stderr.write("to stderr\n")
        os.write(2, b"from C\n")
    assert "from python" in log.getvalue()
    assert "to stderr" in log.getvalue()
    assert "from C" in log.getvalue()


def test_model_file_detection_by_content(tmp_path):
    onnx_file = conv_net(tmp_path / "model.bin")  # the extension does not matter
    assert inspect_model_file(onnx_file).kind == "onnx"
    spec = inspect_model_file(onnx_file).inputs[0]
    assert spec == InputSpec("input", (None, 3, 8, 8), np.dtype(np.float32))

    engine = fake_engine(tmp_path / "model.onnx", "10.8.0", "NVIDIA L4", "8.9")
    found = inspect_model_file(engine)
    assert found.kind == "engine" and found.sidecar["tensorrt"] == "10.8.0"

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:200])
    assert inspect_model_file(truncated).kind == "unknown"
    assert "ONNX parse failed" in inspect_model_file(truncated).why_not_onnx

    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    assert inspect_model_file(text).kind == "unknown"

    with pytest.raises(BadInput, match="does not exist"):
        inspect_model_file(tmp_path / "missing.onnx")
    with pytest.raises(BadInput, match="is a directory"):
        inspect_model_file(tmp_path)


def test_ort_cpu_runs_the_model_like_the_onnx_reference(tmp_path):
    path = conv_net(tmp_path / "m.onnx", width=6)
    backend = get_backend("ort-cpu", threads=1)
    model = backend.load(path, [1, 3])
    feeds = random_inputs(model.inputs, 3, seed=1)
    (out,) = model.run(feeds)
    (expected,) = ReferenceEvaluator(onnx.load(str(path))).run(None, feeds)
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert model.session.get_session_options().inter_op_num_threads == 1
    latency = model.timer(3)()
    assert latency > 0
    assert backend.describe()["intra_op_threads"] == 1


def test_ort_cpu_refuses_engines_and_unknown_files(tmp_path):
    backend = get_backend("ort-cpu")
    engine = fake_engine(tmp_path / "m.engine", "10.8.0", "NVIDIA L4", "8.9")
    with pytest.raises(BadInput, match="is a TensorRT engine: bench it with --backend tensorrt"):
        backend.load(engine, [1])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(BadInput, match="is neither an ONNX model"):
        backend.load(junk, [1])


def test_batch_checks():
    dynamic = [InputSpec("x", (None, 3, 4, 4), np.dtype(np.float32))]
    check_batches("m.onnx", dynamic, [1, 64])
    fixed = [InputSpec("x", (2, 3, 4, 4), np.dtype(np.float32))]
    check_batches("m.onnx", fixed, [2])
    with pytest.raises(
        BadInput, match="fixed batch size of 2, so batch 8 cannot run; use --batch 2"
    ):
        check_batches("m.onnx", fixed, [2, 8])
    spatial = [InputSpec("x", (None, 3, None, 4), np.dtype(np.float32))]
    with pytest.raises(BadInput, match=r"dynamic axes besides the batch \(\?x3x\?x4\)"):
        check_batches("m.onnx", spatial, [1])


def test_fixed_batch_model_refuses_other_batches(tmp_path):
    path = conv_net(tmp_path / "fixed.onnx", batch=1)
    backend = get_backend("ort-cpu")
    assert backend.load(path, [1]).inputs[0].shape == (1, 3, 8, 8)
    with pytest.raises(BadInput, match="fixed batch size of 1"):
        backend.load(path, [1, 8])


def test_random_inputs_are_deterministic():
    specs = [
        InputSpec("x", (None, 2), np.dtype(np.float32)),
        InputSpec("ids", (None,), np.dtype(np.int64)),
    ]
    a, b = random_inputs(specs, 4, seed=3), random_inputs(specs, 4, seed=3)
    assert a["x"].shape == (4, 2) and a["x"].dtype == np.float32
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["ids"].dtype == np.int64 and not a["ids"].any()
