"""The ``tensorrt`` backend of ``bench``: TensorRT engines run by ``runner.TrtRunner``.

Engine files are checked against their sidecar and run as built. ONNX files are built in
memory first, with one optimization profile per requested batch size (min = opt = max), so
every batch runs kernels tuned for exactly that size, like a ``trtexec --shapes`` run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chase_deploy.backends import rotation
from chase_deploy.backends.base import Backend, InputSpec, LoadedModel, Timer
from chase_deploy.backends.modelfile import inspect_model_file
from train.errors import BadInput, one_line


class TrtModel(LoadedModel):
    def __init__(self, path: Path, runner):
        self.path = path
        self.runner = runner
        self.inputs: list[InputSpec] = runner.inputs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.runner.run(feeds)

    def timer(self, batch: int) -> Timer:
        return self.runner.timer(batch)

    def close(self) -> None:
        self.runner.close()


class TensorRTBackend(Backend):
    name = "tensorrt"
    timer_kind = "cuda-events"

    def __init__(
        self,
        threads: int | None = None,
        precision: str = "fp32",
        workspace_mib: int = 1024,
        cuda_graph: bool = True,
    ):
        self.threads = threads  # host threads play no part in a TensorRT run; kept for the report
        self.precision = precision
        self.workspace_mib = workspace_mib
        self.cuda_graph = cuda_graph
        self._runners: list = []

    def load(self, path: Path, batches: Sequence[int]) -> TrtModel:
        from chase_deploy.backends.trt.runner import TrtRunner

        model_file = inspect_model_file(path)
        if model_file.kind == "pt2":
            raise model_file.not_runnable(self.name)
        if model_file.kind == "onnx":
            runner = TrtRunner(self._build(Path(path), batches), path, self.cuda_graph)
        elif model_file.kind == "engine":
            runner = TrtRunner.from_file(path, self.cuda_graph)  # checks the sidecar first
        else:
            runner = self._engine_without_sidecar(model_file)
        runner.check_batches(batches)
        self._runners.append(runner)
        return TrtModel(Path(path), runner)

    def _engine_without_sidecar(self, model_file):
        """An engine built elsewhere (trtexec, another tool): TensorRT itself is the judge."""
        from chase_deploy.backends.trt.runner import TrtRunner

        try:
            return TrtRunner.from_file(model_file.path, self.cuda_graph)
        except BadInput as e:
            raise BadInput(
                f"{model_file.path} is neither an ONNX model ({model_file.why_not_onnx}) nor a "
                f"TensorRT engine this TensorRT can load"
            ) from e

    def _build(self, path: Path, batches: Sequence[int]) -> bytes:
        import onnx

        from chase_deploy.backends.base import check_batches
        from chase_deploy.backends.modelfile import onnx_inputs
        from chase_deploy.backends.trt.loader import build_plan

        try:
            model = onnx.load(str(path))
        except Exception as e:
            raise BadInput(f"cannot read ONNX model {path}: {one_line(e)}") from e
        check_batches(path, onnx_inputs(model), batches)
        profiles = [(b, b, b) for b in sorted(set(batches))]
        plan, _ = build_plan(model, path, self.precision, profiles, self.workspace_mib)
        return plan

    def describe(self) -> dict:
        from chase_deploy.environment import current_gpu, tensorrt_version

        gpu = current_gpu()
        return {
            "backend": self.name,
            "runtime": f"tensorrt {tensorrt_version()}",
            "device": gpu.name if gpu else "cuda",
            "precision_for_onnx_inputs": self.precision,
            "cuda_graphs": self.cuda_graph and all(r.graphs_used for r in self._runners),
            "cuda_graph_failures": [r.graph_failure for r in self._runners if r.graph_failure],
            "strongly_typed": True,
            "io": "device buffers, no host copies in timed runs",
            "timer": self.timer_kind,
            "inputs": rotation.DESCRIPTION,
        }
