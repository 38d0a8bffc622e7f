"""ONNX Runtime GPU backends without a GPU: their provider options, sessions and I/O binding.

ONNX Runtime's sessions are replaced by fakes that record what they were given, so the options
the backends pass (issue 13, defects 1, 2, 6 and 7) are checked on any machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from chase_deploy.backends import ort_providers, probe
from chase_deploy.backends.base import InputSpec
from chase_deploy.backends.ort import BoundRun, OrtCudaBackend, OrtTensorrtBackend
from tests.bench_models import conv_net

DYNAMIC = [InputSpec("input", (None, 3, 8, 8), np.dtype(np.float32))]
FIXED = [InputSpec("input", (2, 3, 8, 8), np.dtype(np.float32))]
ORT_LIBS = Path(onnxruntime.__file__).parent / "capi"


class FakeSession:
    """Records the provider list; claims to run on the first provider it was given."""

    created: list[list] = []

    def __init__(self, model, options=None, providers=None):
        FakeSession.created.append(providers)
        self.providers = [p[0] if isinstance(p, tuple) else p for p in providers]

    def get_providers(self):
        return self.providers

    def run(self, names, feeds):
        return [np.zeros((next(iter(feeds.values())).shape[0], 10), np.float32)]


@pytest.fixture
def fake_sessions(monkeypatch):
    FakeSession.created = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    return FakeSession.created


class FakeStream:
    cuda_stream = 140_000_000_123


def test_provider_options_use_only_keys_onnxruntime_knows():
    trt, cuda, cpu = ort_providers.provider_list("ort-trt", DYNAMIC, 8, stream=1234)
    shapes = "input:8x3x8x8"
    assert trt == (
        "TensorrtExecutionProvider",
        {
            "device_id": "0",
            "user_compute_stream": "1234",
            "trt_fp16_enable": "False",
            "trt_profile_min_shapes": shapes,
            "trt_profile_opt_shapes": shapes,
            "trt_profile_max_shapes": shapes,
        },
    )
    assert cuda == ("CUDAExecutionProvider", {"device_id": "0", "user_compute_stream": "1234"})
    assert cpu == "CPUExecutionProvider"
    assert ort_providers.provider_list("ort-cuda", DYNAMIC, 8, stream=None) == [
        ("CUDAExecutionProvider", {"device_id": "0"}),
        "CPUExecutionProvider",
    ]
    fixed_trt = ort_providers.provider_list("ort-trt", FIXED, 2, None)[0][1]
    assert fixed_trt == {"device_id": "0", "trt_fp16_enable": "False"}  # no profile to give
    for backend in ("ort-cpu", "ort-cuda", "ort-trt"):
        for entry in ort_providers.provider_list(backend, DYNAMIC, 1, stream=5):
            assert "has_user_compute_stream" not in (entry[1] if isinstance(entry, tuple) else {})


@pytest.mark.skipif(
    not (ORT_LIBS / "libonnxruntime_providers_tensorrt.so").is_file(),
    reason="this onnxruntime has no TensorRT provider library to read option names from",
)
def test_tensorrt_option_names_are_in_the_installed_provider_library():
    """Every TensorRT option we pass is a name the provider (or ORT's Python layer) parses."""
    known = (ORT_LIBS / "libonnxruntime_providers_tensorrt.so").read_bytes()
    python_layer = b"".join(p.read_bytes() for p in ORT_LIBS.glob("onnxruntime_pybind11_state*"))
    options = ort_providers.tensorrt_options(DYNAMIC, 4, stream=7)
    for key in options:
        where = python_layer if key == "user_compute_stream" else known
        assert key.encode() + b"\x00" in where, key


def test_ort_trt_opens_one_session_and_profile_per_batch(tmp_path, fake_sessions):
    model = conv_net(tmp_path / "m.onnx")
    loaded = OrtTensorrtBackend(threads=1).load(model, [1, 4, 32])
    assert len(fake_sessions) == 3
    for providers, batch in zip(fake_sessions, [1, 4, 32], strict=True):
        name, options = providers[0]
        assert name == "TensorrtExecutionProvider"
        shapes = f"input:{batch}x3x8x8"
        assert options["trt_profile_min_shapes"] == shapes
        assert options["trt_profile_opt_shapes"] == shapes
        assert options["trt_profile_max_shapes"] == shapes
    assert len({id(loaded.session_for(b)) for b in (1, 4, 32)}) == 3
    assert loaded.run({"input": np.zeros((4, 3, 8, 8), np.float32)})[0].shape == (4, 10)


def test_ort_cuda_serves_all_batches_with_one_session(tmp_path, fake_sessions):
    model = conv_net(tmp_path / "m.onnx")
    loaded = OrtCudaBackend(threads=1).load(model, [1, 4, 32])
    assert len(fake_sessions) == 1
    assert loaded.session_for(1) is loaded.session_for(32)


def test_probe_tries_the_options_of_the_real_session(fake_sessions, monkeypatch):
    monkeypatch.setattr(ort_providers, "compute_stream", lambda: FakeStream())
    for backend, cls in (("ort-cuda", OrtCudaBackend), ("ort-trt", OrtTensorrtBackend)):
        fake_sessions.clear()
        assert probe.try_session(backend) is None  # the fake runs on the first provider
        (tried,) = fake_sessions
        real = cls(threads=1).providers(list(probe.PROBE_INPUTS), probe.PROBE_BATCH)
        assert tried == real
        assert tried[0][1]["user_compute_stream"] == str(FakeStream.cuda_stream)
    assert "trt_profile_min_shapes" in tried[0][1]  # the probe model has a dynamic batch too


def test_probe_reports_a_session_that_falls_back(monkeypatch):
    class FallsBack(FakeSession):
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "InferenceSession", FallsBack)
    assert "TensorrtExecutionProvider does not load" in probe.try_session("ort-trt")


class FakeValue:
    def __init__(self, name):
        self.name = name


class FakeBinding:
    def __init__(self, calls, index):
        self.calls = calls
        self.index = index

    def bind_ortvalue_input(self, name, value):
        self.calls.append(("bind_ortvalue_input", self.index, name, value.name))

    def bind_output(self, name, device, index):
        self.calls.append(("bind_output", self.index, name))

    def bind_ortvalue_output(self, name, value):
        self.calls.append(("bind_ortvalue_output", self.index, name, value.name))

    def get_outputs(self):
        return [FakeValue("out0"), FakeValue("out1")]


class FakeGpuSession:
    def __init__(self):
        self.calls = []
        self.bindings = 0

    def io_binding(self):
        self.bindings += 1
        return FakeBinding(self.calls, self.bindings - 1)

    def get_outputs(self):
        return [FakeValue("logits"), FakeValue("features")]

    def run_with_iobinding(self, binding):
        self.calls.append(("run", binding.index))


def test_ort_cuda_binds_every_rotated_batch_once_outside_the_timed_loop(monkeypatch):
    class FakeOrtValue:
        @staticmethod
        def ortvalue_from_numpy(array, device, index):
            assert device == "cuda"
            return FakeValue(f"device input {int(array[0, 0])}")

    monkeypatch.setattr(onnxruntime, "OrtValue", FakeOrtValue)
    session = FakeGpuSession()
    feeds = [{"input": np.full((2, 3), k, np.float32)} for k in range(3)]
    timer = BoundRun(session, feeds)
    assert session.calls == [
        *(("bind_ortvalue_input", k, "input", f"device input {k}") for k in range(3)),
        ("bind_output", 0, "logits"),
        ("bind_output", 0, "features"),
        ("run", 0),  # the untimed run that allocates the outputs, shared by every binding
        *(
            ("bind_ortvalue_output", k, name, out)
            for k in range(3)
            for name, out in (("logits", "out0"), ("features", "out1"))
        ),
    ]
    session.calls.clear()
    for _ in range(7):
        assert timer() >= 0
    # timed runs bind and allocate nothing, and take the batches in turn
    assert session.calls == [("run", k % 3) for k in range(7)]


def test_ort_cuda_timing_is_labelled_host_clock():
    assert OrtCudaBackend.timer_kind == "perf_counter"
    assert "host clock" in OrtCudaBackend.TIMING and "not comparable" in OrtCudaBackend.TIMING
    assert issubclass(OrtTensorrtBackend, OrtCudaBackend)  # ort-trt times the same way


def test_ort_backend_options_are_refused(tmp_path):
    from chase_deploy.backends import get_backend
    from train.errors import BadInput

    with pytest.raises(BadInput, match=re.escape("backend ort-cpu takes no precision option")):
        get_backend("ort-cpu", precision="bf16")
