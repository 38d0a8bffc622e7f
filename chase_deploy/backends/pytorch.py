"""PyTorch backends, ``torch-cpu`` and ``torch-cuda``: the ``.pt2`` programs ``slim`` writes.

A program is loaded with ``torch.export.load`` (no model source needed), its module moved to the
device, to the precision (``fp32``, ``bf16`` or ``fp16``: weights and inputs converted; the
BatchNorm weights and running statistics stay fp32, as cuDNN and TensorRT keep them, since a
variance rounded to 8 or 11 bits moves every output of its channel) and optionally to
channels_last. It runs eagerly, or under ``torch.compile`` (Inductor, default mode) with
``compile=True``, compiled once per loaded model: where the program's batch axis is dynamic it
is marked dynamic for batches above 1, so one compiled graph serves every batch size > 1 and
batch 1 gets its own; a fixed-batch program is compiled for its one batch.

Timing (the ``bench`` contract: one call = one batch, latency in ms). Every timer feeds the
model in turn from several distinct batches (``rotation``), so no timed run reads a cached input.

- ``torch-cpu``: the host clock around one forward in ``torch.inference_mode``; torch's
  intra-op threads pinned to ``threads`` (and reported).
- ``torch-cuda``: CUDA events around the replay of a CUDA graph holding one forward (captured
  after a warm-up on a side stream, which also lets cuDNN's autotuner and the compiler finish),
  so the latency is device time with no host overhead, copies or allocation (the next input is
  copied into the graph's input buffer before the start event). A model that cannot be captured
  runs without a graph, and ``describe`` says so. cuDNN benchmark mode is on
  (the fastest convolution algorithm per shape); TF32 stays at torch's defaults (reported).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chase_deploy.backends import rotation
from chase_deploy.backends.base import Backend, InputSpec, LoadedModel, Timer, check_batches
from chase_deploy.backends.modelfile import inspect_model_file
from train.errors import BadInput, one_line

PRECISIONS = ("fp32", "bf16", "fp16")
WARMUP_CALLS = 3  # untimed calls before a CUDA graph is captured
COMPILE_OPTIONS: dict = {}  # torch.compile's defaults (Inductor); tests count graphs with a backend
# Largest |difference| between a model's outputs and a reference's, relative to
# max(1, max |reference|), that still counts as "the same outputs" in this precision: fp32 is
# the lossless tolerance (looser where TF32 convolutions are on), bf16/fp16 their rounding.
OUTPUT_TOLERANCE = {"fp32": 1e-4, "fp32-tf32": 1e-2, "bf16": 5e-2, "fp16": 1e-2}


def _dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class _Prepared:
    batch: int
    inputs: list  # device tensors in the model's precision and memory format (graph's buffers)
    rotation: list  # the rotation's inputs, each a list like ``inputs``
    graph: object | None  # torch.cuda.CUDAGraph
    outputs: object | None  # the graph's static outputs, kept alive with it


class TorchModel(LoadedModel):
    """A loaded program: its module, the callable that runs it (eager or compiled), its inputs."""

    def __init__(self, path: Path, backend: TorchBackend, module, fn, inputs: list[InputSpec]):
        self.path = path
        self.backend = backend
        self.module = module
        self.fn = fn
        self.inputs = inputs
        self._current: _Prepared | None = None
        self._is_closed = False
        self.graphs_used = False
        self.graph_failure = ""
        # Only a dynamic batch axis may be marked dynamic: marking a fixed one makes Dynamo
        # raise ConstraintViolationError when the program's shape check specializes it.
        self.dynamic_batch = [spec.shape[0] is None for spec in inputs]

    def _tensors(self, feeds: dict[str, np.ndarray]) -> list:
        import torch

        tensors = []
        for spec, dynamic in zip(self.inputs, self.dynamic_batch, strict=True):
            t = torch.from_numpy(np.ascontiguousarray(feeds[spec.name])).to(self.backend.device)
            if t.is_floating_point():
                t = t.to(_dtype(self.backend.precision))
                if self.backend.channels_last and t.dim() == 4:
                    t = t.contiguous(memory_format=torch.channels_last)
            if self.backend.compile and dynamic and t.dim() and t.shape[0] > 1:
                torch._dynamo.maybe_mark_dynamic(t, 0)  # one compiled graph for every batch > 1
            tensors.append(t)
        return tensors

    def _call(self, tensors: list):
        import torch

        with torch.inference_mode():
            return self.fn(*tensors)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One batch from host arrays; outputs as fp32 host arrays."""
        out = self._call(self._tensors(feeds))
        return [t.detach().float().cpu().numpy() for t in _flatten(out)]

    def timer(self, batch: int) -> Timer:
        self.release()
        inputs = [self._tensors(f) for f in rotation.rotating_inputs(self.inputs, batch)]
        if self.backend.device == "cpu":
            return self._cpu_timer(inputs)
        self._current = self._prepare_cuda(batch, inputs)
        return self._cuda_timer(self._current)

    def _cpu_timer(self, inputs: list[list]) -> Timer:
        import torch

        fn, clock = self.fn, time.perf_counter_ns
        turn = itertools.cycle(inputs)

        def once() -> float:
            tensors = next(turn)
            with torch.inference_mode():
                start = clock()
                fn(*tensors)
                return (clock() - start) / 1e6

        return once

    def _prepare_cuda(self, batch: int, inputs: list[list]) -> _Prepared:
        import torch

        tensors = inputs[0]  # the buffers a CUDA graph reads; the others are copied into them
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compilation, cuDNN autotuning, allocator
            for _ in range(WARMUP_CALLS):
                self._call(tensors)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        if not self.backend.cuda_graph:
            return _Prepared(batch, tensors, inputs, None, None)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.inference_mode(), torch.cuda.graph(graph):
                outputs = self.fn(*tensors)
        except Exception as e:  # some programs cannot be captured; run them without a graph
            torch.cuda.synchronize()
            self.graph_failure = one_line(e)
            print(
                f"[chase-deploy] {self.path}: CUDA graph capture failed, running without a "
                f"graph: {self.graph_failure}",
                file=sys.stderr,
            )
            return _Prepared(batch, tensors, inputs, None, None)
        self.graphs_used = True
        return _Prepared(batch, tensors, inputs, graph, outputs)

    def _cuda_timer(self, prepared: _Prepared) -> Timer:
        import torch

        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        graph, buffers = prepared.graph, prepared.inputs
        turn = itertools.cycle(prepared.rotation)

        def once() -> float:
            tensors = next(turn)
            if graph is not None:  # untimed: the copy is queued before the start event
                for buffer, t in zip(buffers, tensors, strict=True):
                    if buffer is not t:
                        buffer.copy_(t)
            begin.record()
            if graph is not None:
                graph.replay()
            else:
                self._call(tensors)
            end.record()
            end.synchronize()
            return begin.elapsed_time(end)

        return once

    def release(self) -> None:
        """Drop the prepared batch (graph before its buffers)."""
        current, self._current = self._current, None
        if current is not None:
            current.graph = None
            current.outputs = None
            current.inputs.clear()
            current.rotation.clear()

    def close(self) -> None:
        self.release()
        if not self._is_closed:
            self._is_closed = True
            self.backend._closed()


class TorchBackend(Backend):
    """``torch-cpu`` or ``torch-cuda`` on ``.pt2`` programs."""

    def __init__(
        self,
        name: str = "torch-cpu",
        threads: int | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        cuda_graph: bool = True,
    ):
        import torch

        from chase_deploy.environment import available_cores

        if name not in ("torch-cpu", "torch-cuda"):
            raise BadInput(f"not a torch backend: {name!r}")
        if precision not in PRECISIONS:
            raise BadInput(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.name = name
        self.device = "cuda" if name == "torch-cuda" else "cpu"
        self.precision = precision
        self.channels_last = channels_last
        self.compile = compile
        self.cuda_graph = cuda_graph and self.device == "cuda"
        self.timer_kind = "cuda-events" if self.device == "cuda" else "perf_counter"
        self.threads = (threads or available_cores()) if self.device == "cpu" else threads
        self._threads_before: int | None = None
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True
        self._models: list[TorchModel] = []
        self._open = 0

    @property
    def output_tolerance(self) -> float:
        """The relative tolerance for "same outputs" in this backend's precision."""
        if self.precision == "fp32" and self.device == "cuda":
            import torch

            if torch.backends.cudnn.allow_tf32:
                return OUTPUT_TOLERANCE["fp32-tf32"]
        return OUTPUT_TOLERANCE[self.precision]

    def load(self, path: Path, batches: Sequence[int]) -> TorchModel:
        import torch

        from chase_deploy.torch_export import load_pt2, program_inputs

        model_file = inspect_model_file(path)
        if model_file.kind != "pt2":
            raise model_file.not_runnable(self.name)
        program = load_pt2(path)
        described = program_inputs(program)
        inputs = [InputSpec(name, shape, dtype) for name, shape, dtype, _ in described]
        check_batches(path, inputs, batches)
        for name, shape, _, largest in described:
            too_big = [b for b in batches if shape[0] is None and b > largest]
            if too_big:
                raise BadInput(
                    f"{path}: input {name!r} takes batch sizes up to {largest}, not {too_big[0]}"
                )
        module = program.module().to(self.device)
        if self.precision != "fp32":
            _to_precision(module, _dtype(self.precision))
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        fn = torch.compile(module, **COMPILE_OPTIONS) if self.compile else module
        loaded = TorchModel(Path(path), self, module, fn, inputs)
        self._models.append(loaded)
        self._opened()
        return loaded

    def _opened(self) -> None:
        """torch's intra-op thread count is process-wide: pinned while models are open."""
        import torch

        if self.device == "cpu" and self._open == 0:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self._open += 1

    def _closed(self) -> None:
        import torch

        self._open -= 1
        if self._open == 0 and self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def describe(self) -> dict:
        import torch

        from chase_deploy.environment import current_gpu

        info = {
            "backend": self.name,
            "runtime": f"torch {torch.__version__}",
            "precision": self.precision,
            "channels_last": self.channels_last,
            "mode": "torch.compile (inductor, default mode, dynamic batch > 1)"
            if self.compile
            else "eager",
            "timer": self.timer_kind,
            "inputs": rotation.DESCRIPTION,
        }
        if self.precision != "fp32":
            info["batchnorm"] = "weights and running statistics kept in fp32"
        if self.device == "cpu":
            info.update(device="cpu", intra_op_threads=self.threads)
            return info
        gpu = current_gpu()
        info.update(
            device=gpu.name if gpu else "cuda",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
            tf32_convolutions=bool(torch.backends.cudnn.allow_tf32),
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            cuda_graphs=self.cuda_graph and all(m.graphs_used for m in self._models),
            cuda_graph_failures=[m.graph_failure for m in self._models if m.graph_failure],
            io="device tensors, no host copies in timed runs",
        )
        return info


BATCH_NORM_OPS = ("batch_norm",)  # aten.batch_norm, _native_batch_norm_legit_no_training, ...


def batch_norm_tensors(module) -> set[str]:
    """Names of the parameters and buffers the program's BatchNorm ops read (weight, bias,
    running mean and variance: arguments 1 to 4 of every ATen batch-norm op)."""
    names = set()
    for node in module.graph.nodes:
        if node.op == "call_function" and any(op in str(node.target) for op in BATCH_NORM_OPS):
            names.update(a.target for a in node.args[1:5] if getattr(a, "op", "") == "get_attr")
    return names


def _to_precision(module, dtype) -> None:
    """Cast the floating-point parameters and buffers of ``module`` to ``dtype`` in place,
    except the BatchNorm ones, which stay fp32 (cuDNN's and ATen's mixed-precision batch norm)."""
    import torch

    keep = batch_norm_tensors(module)
    for prefix, sub in module.named_modules():
        for store in (sub._parameters, sub._buffers):
            for key, t in store.items():
                full = f"{prefix}.{key}" if prefix else key
                if t is None or not t.is_floating_point() or full in keep:
                    continue
                cast = t.detach().to(dtype)
                store[key] = (
                    torch.nn.Parameter(cast, requires_grad=False)
                    if store is sub._parameters
                    else cast
                )


def _flatten(out) -> list:
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flatten(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flatten(item)]
    return [out]
