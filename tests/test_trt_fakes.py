"""The TensorRT loader and runner against a fake ``tensorrt`` module (no GPU, no TensorRT).

Issue 13, defects 3-5: every False return of TensorRT is an error, one logger serves the whole
process, and fp16/bf16 take one strongly typed path on TensorRT 10 and 11 alike.
"""

from __future__ import annotations

import contextlib
import sys

import onnx
import pytest
from onnx import TensorProto

from chase_deploy.backends.trt.logger import trt_logger
from tests import fake_tensorrt
from tests.bench_models import conv_net


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a fake TensorRT of the version given to the returned function."""

    def install(version: str = "10.14.1"):
        module = fake_tensorrt.make_module(version)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        trt_logger.cache_clear()
        return module

    yield install
    trt_logger.cache_clear()


def _types(model: onnx.ModelProto) -> tuple[set[int], set[int]]:
    io = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    weights = {i.data_type for i in model.graph.initializer}
    return io, weights


@pytest.mark.parametrize(
    ("version", "flags"),
    [("10.14.1", 1 << fake_tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), ("11.4.0", 0)],
)
@pytest.mark.parametrize(
    ("precision", "weight_type"),
    [("fp32", TensorProto.FLOAT), ("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)],
)
def test_one_strongly_typed_precision_path(
    tmp_path, fake_trt, version, flags, precision, weight_type
):
    from chase_deploy.backends.trt.loader import build_plan

    trt = fake_trt(version)
    path = conv_net(tmp_path / "m.onnx")
    plan, info = build_plan(onnx.load(str(path)), path, precision, [(1, 1, 1), (4, 4, 4)])
    rec = trt.recorder
    assert plan == b"serialized plan"
    assert rec.network_flags == [flags]  # STRONGLY_TYPED asked for on 10, implicit on 11
    assert rec.builder_flags == []  # never BuilderFlag.FP16 / BF16
    (parsed,) = rec.parsed
    io_types, weight_types = _types(parsed)
    assert io_types == {TensorProto.FLOAT}  # fp32 inputs and outputs
    assert weight_types == {weight_type}  # the precision is in the model itself
    assert info["precision"] == precision and info["strongly_typed"] is True
    assert rec.profiles == [
        {"input": ((1, 3, 8, 8),) * 3},
        {"input": ((4, 3, 8, 8),) * 3},
    ]


def test_one_logger_for_the_whole_process(tmp_path, fake_trt):
    from chase_deploy.backends.trt.loader import build_plan
    from chase_deploy.backends.trt.runner import TrtRunner

    trt = fake_trt()
    path = conv_net(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    build_plan(model, path, "fp32", [(1, 1, 1)])
    build_plan(model, path, "fp16", [(1, 1, 1)])
    TrtRunner(b"plan", "a.engine")
    TrtRunner(b"plan", "b.engine")
    loggers = trt.recorder.loggers  # 2 builders, 2 parsers, 2 runtimes
    assert len(loggers) == 6
    assert all(logger is trt_logger() for logger in loggers)
    trt.logged_error("first line of the error\nsecond line")
    assert trt_logger().last_error() == "first line of the error"


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        ("set_optimization_profile_async", "set_optimization_profile_async(1) failed"),
        ("set_input_shape", "set_input_shape('input', (4, 3, 8, 8)) failed"),
    ],
)
def test_runner_checks_profile_and_shape_returns(fake_trt, fail, message):
    from chase_deploy.backends.trt.runner import TrtRunner

    fake_trt()
    runner = TrtRunner(b"plan", "m.engine")
    context = fake_tensorrt.Context(fail=fail)
    with pytest.raises(RuntimeError) as err:
        runner.configure(context, 4, stream_handle=0)
    assert message in str(err.value)
    assert "m.engine" in str(err.value)
    assert f"IExecutionContext::{fail}: Error Code 3" in str(err.value)  # the logger's message


def test_runner_configures_the_profile_tuned_for_the_batch(fake_trt):
    from chase_deploy.backends.trt.runner import TrtRunner

    fake_trt()
    runner = TrtRunner(b"plan", "m.engine")
    context = fake_tensorrt.Context()
    runner.configure(context, 4, stream_handle=0)
    runner.set_addresses(context, {"input": 1024, "logits": 2048})
    assert context.calls == [
        ("set_optimization_profile_async", 1),
        ("set_input_shape", "input", (4, 3, 8, 8)),
        ("set_tensor_address", "input", 1024),
        ("set_tensor_address", "logits", 2048),
    ]
    failing = fake_tensorrt.Context(fail="set_tensor_address")
    with pytest.raises(RuntimeError, match=r"set_tensor_address\('input'\) failed"):
        runner.set_addresses(failing, {"input": 1024})


def test_enqueue_failure_is_an_error(fake_trt):
    from types import SimpleNamespace

    from chase_deploy.backends.trt.runner import TrtRunner

    fake_trt()
    runner = TrtRunner(b"plan", "m.engine")
    with pytest.raises(RuntimeError, match="execute_async_v3 failed for m.engine"):
        runner._enqueue(
            fake_tensorrt.Context(fail="execute_async_v3"), SimpleNamespace(cuda_stream=0)
        )


@pytest.fixture
def fake_cuda_graphs(monkeypatch):
    """torch.cuda's graph capture replaced by no-ops (this torch may have no CUDA)."""
    import torch

    class Graph:
        pass

    @contextlib.contextmanager
    def capture(graph, stream=None):
        yield

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    return Graph


def test_a_capture_whose_enqueue_failed_is_discarded(fake_trt, fake_cuda_graphs, capfd):
    from types import SimpleNamespace

    from chase_deploy.backends.trt.runner import TrtRunner

    fake_trt()
    stream = SimpleNamespace(cuda_stream=0)
    runner = TrtRunner(b"plan", "m.engine")
    assert runner._capture(fake_tensorrt.Context(fail="execute_async_v3"), stream) is None
    assert not runner.graphs_used
    assert "execute_async_v3 returned False during capture" in runner.graph_failure
    assert "Error Code 3" in runner.graph_failure
    assert "CUDA graph capture discarded" in capfd.readouterr().err

    good = TrtRunner(b"plan", "n.engine")
    assert isinstance(good._capture(fake_tensorrt.Context(), stream), fake_cuda_graphs)
    assert good.graphs_used and good.graph_failure == ""


@pytest.fixture
def fake_cuda(monkeypatch):
    """Enough of torch.cuda for the runner on a CPU: buffers on the CPU, graphs that record their
    replays, events that count 1 ms per launch."""
    import torch

    from chase_deploy.backends.trt import runner

    replays: list[int] = []

    class Graph:
        count = 0

        def __init__(self):
            self.index = Graph.count
            Graph.count += 1

        def replay(self):
            replays.append(self.index)

    @contextlib.contextmanager
    def capture(graph, stream=None):
        yield

    class Event:
        def __init__(self, enable_timing=False):
            pass

        def record(self, stream=None):
            pass

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return 1.0

    class Stream:
        cuda_stream = 0

        def synchronize(self):
            pass

    monkeypatch.setattr(runner, "DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    return replays


def _input_pointers(calls: list[tuple]) -> list[int]:
    return [c[2] for c in calls if c[:2] == ("set_tensor_address", "input")]


def _neighbours_equal(turns: list[dict]) -> bool:
    import torch

    return any(torch.equal(a["input"], b["input"]) for a, b in zip(turns, turns[1:], strict=False))


@pytest.mark.parametrize("graphs", [True, False])
def test_timed_runs_rotate_through_distinct_device_inputs(fake_trt, fake_cuda, monkeypatch, graphs):
    """Issue 23, defect 8 for the tensorrt backend: no timed run reads the batch the run before
    it read; with CUDA graphs each rotated batch has its own graph, captured at its addresses."""
    import numpy as np

    from chase_deploy.backends import rotation
    from chase_deploy.backends.trt.runner import TrtRunner

    fake_trt()
    monkeypatch.setattr(rotation, "ROTATION_BYTES", 3 * 4 * 3 * 8 * 8 * 4)  # 3 batches of 4
    runner = TrtRunner(b"plan", "m.engine", cuda_graph=graphs)
    once = runner.timer(4)
    prepared = runner._current
    pointers = [t["input"].data_ptr() for t in prepared.rotation]
    assert len(set(pointers)) == 3
    assert not _neighbours_equal(prepared.rotation)  # distinct random contents too
    calls = prepared.context.calls
    setup = len(calls)
    assert [once() for _ in range(7)] == [1.0] * 7
    timed = calls[setup:]
    if graphs:
        # warm-up at the first batch, one capture per batch at its address, back to the first
        assert _input_pointers(calls[:setup]) == [pointers[0], *pointers, pointers[0]]
        assert [c[0] for c in calls[:setup]].count("execute_async_v3") == 4
        assert fake_cuda == [0, 1, 2, 0, 1, 2, 0] and timed == []
        assert runner.graphs_used
    else:
        assert fake_cuda == [] and prepared.graphs is None
        assert _input_pointers(timed) == [pointers[i % 3] for i in range(7)]
        assert [c[0] for c in timed].count("execute_async_v3") == 7
    # run() reads the first batch of the rotation, whatever the timer left bound
    feeds = {"input": np.full((4, 3, 8, 8), 2.0, dtype=np.float32)}
    (out,) = runner.run(feeds)
    assert out.shape == (4, 10)
    assert bool((prepared.rotation[0]["input"] == 2.0).all())
    if not graphs:
        assert _input_pointers(calls)[-1] == pointers[0]
