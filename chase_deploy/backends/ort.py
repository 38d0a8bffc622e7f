"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (its TensorRT provider).

Sessions are pinned for measurement: ``intra_op_num_threads`` fixed (and reported),
``inter_op_num_threads`` 1, sequential execution, all graph optimizations. GPU sessions keep
inputs and outputs on the device (I/O binding) so a timed run is compute, not PCIe copies, and
are timed with CUDA events on the stream ONNX Runtime computes on when torch can provide one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chase_deploy.backends.base import Backend, InputSpec, LoadedModel, Timer, random_inputs
from chase_deploy.backends.modelfile import inspect_model_file
from chase_deploy.backends.probe import ORT_PROVIDERS, captured_output
from chase_deploy.environment import available_cores, onnxruntime_version
from chase_deploy.errors import BadInput, MissingBackend


class OrtModel(LoadedModel):
    def __init__(self, path: Path, session, inputs: list[InputSpec]):
        self.path = path
        self.session = session
        self.inputs = inputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def timer(self, batch: int) -> Timer:
        session, feeds = self.session, random_inputs(self.inputs, batch)
        clock = time.perf_counter_ns

        def once() -> float:
            start = clock()
            session.run(None, feeds)
            return (clock() - start) / 1e6

        return once


class OrtGpuModel(OrtModel):
    """Inputs and outputs bound on the GPU; timed with CUDA events when torch has CUDA."""

    def __init__(self, path: Path, session, inputs: list[InputSpec], stream=None):
        super().__init__(path, session, inputs)
        self.stream = stream  # a torch.cuda.Stream shared with ONNX Runtime, or None

    def timer(self, batch: int) -> Timer:
        return _BoundRun(self.session, random_inputs(self.inputs, batch), self.stream)


class _BoundRun:
    """One timed ``run_with_iobinding`` on device-resident inputs and outputs."""

    def __init__(self, session, feeds: dict[str, np.ndarray], stream):
        import onnxruntime as ort

        self.session = session
        self.binding = session.io_binding()
        self.values = {  # kept here so the device buffers live as long as the binding
            name: ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
            for name, array in feeds.items()
        }
        for name, value in self.values.items():
            self.binding.bind_ortvalue_input(name, value)
        for out in session.get_outputs():
            self.binding.bind_output(out.name, "cuda", 0)
        self.stream = stream
        if stream is not None:
            import torch

            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self) -> float:
        if self.stream is None:  # run_with_iobinding returns after the device work is done
            start = time.perf_counter_ns()
            self.session.run_with_iobinding(self.binding)
            return (time.perf_counter_ns() - start) / 1e6
        self.begin.record(self.stream)
        self.session.run_with_iobinding(self.binding)
        self.end.record(self.stream)
        self.end.synchronize()
        return self.begin.elapsed_time(self.end)


class OrtBackend(Backend):
    """ONNX Runtime on the CPU execution provider."""

    name = "ort-cpu"
    timer_kind = "perf_counter"

    def __init__(self, threads: int | None = None):
        self.threads = threads or available_cores()

    @property
    def provider(self) -> str:
        return ORT_PROVIDERS[self.name]

    def session_options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return options

    def providers(self, inputs: list[InputSpec], batches: Sequence[int]) -> list:
        return [self.provider]

    def load(self, path: Path, batches: Sequence[int]) -> OrtModel:
        from chase_deploy.backends.base import check_batches

        model_file = inspect_model_file(path)
        if model_file.kind != "onnx":
            raise model_file.not_runnable(self.name)
        inputs = list(model_file.inputs)
        check_batches(path, inputs, batches)
        session = self._session(path, inputs, batches)
        return self._wrap(Path(path), session, inputs)

    def _session(self, path: Path, inputs: list[InputSpec], batches: Sequence[int]):
        import onnxruntime as ort

        try:
            with captured_output():
                session = ort.InferenceSession(
                    str(path), self.session_options(), providers=self.providers(inputs, batches)
                )
        except Exception as e:
            text = str(e).strip()
            first = text.splitlines()[0] if text else type(e).__name__
            raise BadInput(f"ONNX Runtime cannot load {path}: {first}") from e
        active = session.get_providers()
        if not active or active[0] != self.provider:
            raise MissingBackend(
                f"backend {self.name}: ONNX Runtime fell back to {active[0] if active else 'nothing'} "
                f"for {path}; {self.provider} is not usable here"
            )
        return session

    def _wrap(self, path: Path, session, inputs: list[InputSpec]) -> OrtModel:
        return OrtModel(path, session, inputs)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "runtime": f"onnxruntime {onnxruntime_version()}",
            "provider": self.provider,
            "device": "cpu",
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization": "all",
            "timer": self.timer_kind,
        }


class OrtCudaBackend(OrtBackend):
    """ONNX Runtime's CUDA provider, I/O on the device."""

    name = "ort-cuda"

    def __init__(self, threads: int | None = None):
        super().__init__(threads)
        self.stream = _torch_stream()
        self.timer_kind = "cuda-events" if self.stream is not None else "perf_counter"

    def _device_options(self) -> dict:
        options = {"device_id": "0"}
        if self.stream is not None:  # ORT computes on torch's stream, so torch events time it
            options["has_user_compute_stream"] = "1"
            options["user_compute_stream"] = str(self.stream.cuda_stream)
        return options

    def providers(self, inputs: list[InputSpec], batches: Sequence[int]) -> list:
        return [(self.provider, self._device_options()), "CPUExecutionProvider"]

    def _wrap(self, path: Path, session, inputs: list[InputSpec]) -> OrtModel:
        return OrtGpuModel(path, session, inputs, self.stream)

    def describe(self) -> dict:
        from chase_deploy.environment import current_gpu

        gpu = current_gpu()
        return {**super().describe(), "device": gpu.name if gpu else "cuda"}


class OrtTensorrtBackend(OrtCudaBackend):
    """ONNX Runtime's TensorRT provider (fp32), with one profile covering the requested batches."""

    name = "ort-trt"

    def providers(self, inputs: list[InputSpec], batches: Sequence[int]) -> list:
        options = {**self._device_options(), "trt_fp16_enable": "False"}
        if any(spec.fixed_batch is None for spec in inputs):
            lo, hi = min(batches), max(batches)
            options["trt_profile_min_shapes"] = _shapes(inputs, lo)
            options["trt_profile_opt_shapes"] = _shapes(inputs, hi)
            options["trt_profile_max_shapes"] = _shapes(inputs, hi)
        cuda = ("CUDAExecutionProvider", self._device_options())
        return [(self.provider, options), cuda, "CPUExecutionProvider"]


def _shapes(inputs: list[InputSpec], batch: int) -> str:
    return ",".join(f"{s.name}:{'x'.join(map(str, s.at_batch(batch)))}" for s in inputs)


def _torch_stream():
    """A torch CUDA stream for ONNX Runtime to compute on, so torch events can time it."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.Stream()
