"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (its TensorRT provider).

Sessions are pinned for measurement: ``intra_op_num_threads`` fixed (and reported),
``inter_op_num_threads`` 1, sequential execution, all graph optimizations. Provider options come
from ``ort_providers`` (the probe uses the same). GPU sessions keep inputs and outputs on the
device (I/O binding, outputs allocated once before timing) so a timed run is compute, not PCIe
copies or allocation. ``ort-trt`` opens one session per batch size, each with one TensorRT
profile for exactly that size, like the ``tensorrt`` backend's one profile per batch.

Timing: the host clock around one ``run`` (CPU) or one synchronous ``run_with_iobinding`` (GPU).
On the GPU that is launch plus device time plus the final synchronization, which is not the
device-only time the ``tensorrt`` and ``torch-cuda`` backends measure (CUDA events around an
enqueue or a CUDA-graph replay): ``describe()["timing"]`` and the bench table say so. Every timer
feeds its runs in turn from several distinct batches (``rotation``), one binding per batch on the
GPU, so no run reads a cached input.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chase_deploy.backends import ort_providers, rotation
from chase_deploy.backends.base import Backend, InputSpec, LoadedModel, Timer
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
        session = self.session_for(batch)
        turn = itertools.cycle(rotation.rotating_inputs(self.inputs, batch))
        clock = time.perf_counter_ns

        def once() -> float:
            feeds = next(turn)
            start = clock()
            session.run(None, feeds)
            return (clock() - start) / 1e6

        return once


class OrtGpuModel(OrtModel):
    """Inputs and outputs bound on the GPU, one binding per rotated batch."""

    def timer(self, batch: int) -> Timer:
        return BoundRun(self.session_for(batch), rotation.rotating_inputs(self.inputs, batch))


class BoundRun:
    """One timed ``run_with_iobinding`` on device-resident inputs and preallocated outputs,
    timed by the host clock (the call returns once the device work is done).

    One binding per rotated batch, all writing the same output buffers: those are allocated by
    one untimed run and then bound as fixed buffers, so no timed run allocates
    (``bind_output`` without a buffer would allocate on every run).
    """

    def __init__(self, session, rotation_feeds: list[dict[str, np.ndarray]]):
        import onnxruntime as ort

        self.session = session
        self.values = [  # kept here so the device buffers live as long as the bindings
            {name: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for name, a in feeds.items()}
            for feeds in rotation_feeds
        ]
        self.bindings = [session.io_binding() for _ in self.values]
        for binding, values in zip(self.bindings, self.values, strict=True):
            for name, value in values.items():
                binding.bind_ortvalue_input(name, value)
        names = [out.name for out in session.get_outputs()]
        first = self.bindings[0]
        for name in names:
            first.bind_output(name, "cuda", 0)
        session.run_with_iobinding(first)  # untimed: ONNX Runtime allocates the outputs
        self.outputs = list(first.get_outputs())
        for binding in self.bindings:
            for name, value in zip(names, self.outputs, strict=True):
                binding.bind_ortvalue_output(name, value)
        self.turn = itertools.cycle(self.bindings)

    def __call__(self) -> float:
        binding = next(self.turn)
        start = time.perf_counter_ns()
        self.session.run_with_iobinding(binding)
        return (time.perf_counter_ns() - start) / 1e6


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
            "inputs": rotation.DESCRIPTION,
        }


class OrtCudaBackend(OrtBackend):
    """ONNX Runtime's CUDA provider, I/O on the device, timed by the host clock (module doc)."""

    name = "ort-cuda"
    TIMING = (
        "host clock around a synchronous run_with_iobinding: launch + device time + sync; not "
        "comparable with the device-only CUDA-event times of tensorrt and torch-cuda"
    )

    def __init__(self, threads: int | None = None):
        super().__init__(threads)
        self.stream = ort_providers.compute_stream()

    def _wrap(self, path: Path, sessions: dict, inputs: list[InputSpec]) -> OrtModel:
        return OrtGpuModel(path, sessions, inputs)

    def describe(self) -> dict:
        from chase_deploy.environment import current_gpu

        gpu = current_gpu()
        return {
            **super().describe(),
            "device": gpu.name if gpu else "cuda",
            "io": "device buffers bound once, no copies or allocation in timed runs",
            "timing": self.TIMING,
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
