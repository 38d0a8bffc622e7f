"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (its TensorRT provider).

Sessions are pinned for measurement: ``intra_op_num_threads`` fixed (and reported),
``inter_op_num_threads`` 1, sequential execution, all graph optimizations. Provider options come
from ``ort_providers`` (the probe uses the same). GPU sessions keep inputs and outputs on the
device (I/O binding, outputs allocated once before timing) so a timed run is compute, not PCIe
copies or allocation, and are timed with CUDA events on the stream ONNX Runtime computes on when
torch can provide one. ``ort-trt`` opens one session per batch size, each with one TensorRT
profile for exactly that size, like the ``tensorrt`` backend's one profile per batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chase_deploy.backends import ort_providers
from chase_deploy.backends.base import Backend, InputSpec, LoadedModel, Timer, random_inputs
from chase_deploy.backends.modelfile import inspect_model_file
from chase_deploy.backends.probe import captured_output
from chase_deploy.environment import available_cores, onnxruntime_version
from chase_deploy.errors import MissingBackend
from train.errors import BadInput, one_line


class OrtModel(LoadedModel):
    """One model; ``sessions`` maps each batch size to its session (often one for all)."""

    def __init__(self, path: Path, sessions: dict[int, object], inputs: list[InputSpec]):
        self.path = path
        self.sessions = sessions
        self.inputs = inputs

    @property
    def session(self):
        """The session of the first batch size (all of them, for single-session backends)."""
        return next(iter(self.sessions.values()))

    def session_for(self, batch: int):
        return self.sessions.get(batch, self.session)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = int(next(iter(feeds.values())).shape[0])
        return self.session_for(batch).run(None, feeds)

    def timer(self, batch: int) -> Timer:
        session, feeds = self.session_for(batch), random_inputs(self.inputs, batch)
        clock = time.perf_counter_ns

        def once() -> float:
            start = clock()
            session.run(None, feeds)
            return (clock() - start) / 1e6

        return once


class OrtGpuModel(OrtModel):
    """Inputs and outputs bound on the GPU; timed with CUDA events when torch has CUDA."""

    def __init__(self, path: Path, sessions: dict, inputs: list[InputSpec], stream=None):
        super().__init__(path, sessions, inputs)
        self.stream = stream  # a torch.cuda.Stream shared with ONNX Runtime, or None

    def timer(self, batch: int) -> Timer:
        return BoundRun(self.session_for(batch), random_inputs(self.inputs, batch), self.stream)


class BoundRun:
    """One timed ``run_with_iobinding`` on device-resident inputs and preallocated outputs.

    The outputs are allocated by one untimed run and then bound as fixed buffers, so no timed
    run allocates (``bind_output`` without a buffer would allocate on every run).
    """

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
        names = [out.name for out in session.get_outputs()]
        for name in names:
            self.binding.bind_output(name, "cuda", 0)
        session.run_with_iobinding(self.binding)  # untimed: ONNX Runtime allocates the outputs
        self.outputs = list(self.binding.get_outputs())
        for name, value in zip(names, self.outputs, strict=True):
            self.binding.bind_ortvalue_output(name, value)
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
        self.stream = None

    @property
    def provider(self) -> str:
        return ort_providers.PROVIDERS[self.name]

    def session_options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return options

    def providers(self, inputs: Sequence[InputSpec], batch: int) -> list:
        """The provider list of the session that runs ``batch`` (``ort_providers``)."""
        handle = self.stream.cuda_stream if self.stream is not None else None
        return ort_providers.provider_list(self.name, inputs, batch, handle)

    def load(self, path: Path, batches: Sequence[int]) -> OrtModel:
        from chase_deploy.backends.base import check_batches

        model_file = inspect_model_file(path)
        if model_file.kind != "onnx":
            raise model_file.not_runnable(self.name)
        inputs = list(model_file.inputs)
        check_batches(path, inputs, batches)
        if self.name in ort_providers.PER_BATCH:
            sessions = {b: self._session(path, self.providers(inputs, b)) for b in batches}
        else:
            session = self._session(path, self.providers(inputs, batches[0]))
            sessions = dict.fromkeys(batches, session)
        return self._wrap(Path(path), sessions, inputs)

    def _session(self, path: Path, providers: list):
        import onnxruntime as ort

        try:
            with captured_output():
                session = ort.InferenceSession(
                    str(path), self.session_options(), providers=providers
                )
        except Exception as e:
            raise BadInput(f"ONNX Runtime cannot load {path}: {one_line(e)}") from e
        active = session.get_providers()
        if not active or active[0] != self.provider:
            raise MissingBackend(
                f"backend {self.name}: ONNX Runtime fell back to {active[0] if active else 'nothing'} "
                f"for {path}; {self.provider} is not usable here"
            )
        return session

    def _wrap(self, path: Path, sessions: dict, inputs: list[InputSpec]) -> OrtModel:
        return OrtModel(path, sessions, inputs)

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
        self.stream = ort_providers.compute_stream()
        self.timer_kind = "cuda-events" if self.stream is not None else "perf_counter"

    def _wrap(self, path: Path, sessions: dict, inputs: list[InputSpec]) -> OrtModel:
        return OrtGpuModel(path, sessions, inputs, self.stream)

    def describe(self) -> dict:
        from chase_deploy.environment import current_gpu

        gpu = current_gpu()
        return {
            **super().describe(),
            "device": gpu.name if gpu else "cuda",
            "io": "device buffers bound once, no copies or allocation in timed runs",
        }


class OrtTensorrtBackend(OrtCudaBackend):
    """ONNX Runtime's TensorRT provider (fp32): one session and profile per batch size."""

    name = "ort-trt"

    def describe(self) -> dict:
        return {
            **super().describe(),
            "precision": "fp32",
            "profiles": "one session per batch size, its profile min = opt = max = that size",
        }
