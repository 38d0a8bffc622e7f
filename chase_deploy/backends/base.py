"""The one small interface every backend implements: load a model, run a batch, describe itself.

``bench`` only needs ``LoadedModel.timer(batch)``: a prepared closure that runs one batch on
inputs already in place and returns that iteration's latency in milliseconds, measured the
backend's way (host clock on CPU, device events on GPU). Everything else stays backend-private.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.errors import BadInput

Timer = Callable[[], float]


@dataclass(frozen=True)
class InputSpec:
    """A graph input: its name, dtype and shape with ``None`` for the (dynamic) batch axis (and
    any other dynamic axis); ``axis_names`` are an ONNX input's symbolic axis names ('' where
    static), for messages."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    axis_names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0] if self.shape else None

    def at_batch(self, batch: int) -> tuple[int, ...]:
        return (batch, *(int(d) for d in self.shape[1:]))


def check_batches(model: str | Path, inputs: Sequence[InputSpec], batches: Sequence[int]) -> None:
    """Refuse batch sizes a model cannot run: a fixed batch axis that differs, other dynamic axes."""
    for spec in inputs:
        if not spec.shape:
            raise BadInput(f"{model}: input {spec.name!r} is a scalar; bench needs a batch axis")
        if any(d is None for d in spec.shape[1:]):
            dims = "x".join("?" if d is None else str(d) for d in spec.shape)
            raise BadInput(
                f"{model}: input {spec.name!r} has dynamic axes besides the batch ({dims}); "
                f"export it with a fixed input size"
            )
        fixed = spec.fixed_batch
        wrong = [b for b in batches if fixed is not None and b != fixed]
        if wrong:
            raise BadInput(
                f"{model}: input {spec.name!r} has a fixed batch size of {fixed}, so batch "
                f"{wrong[0]} cannot run; use --batch {fixed} or export with a dynamic batch axis"
            )


def random_inputs(inputs: Sequence[InputSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs of the right shape and dtype (normal floats, zero integers)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = spec.at_batch(batch)
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds


class LoadedModel(ABC):
    """A model ready to run on one backend."""

    path: Path
    inputs: list[InputSpec]

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch given as host arrays; return the outputs as host arrays."""

    @abstractmethod
    def timer(self, batch: int) -> Timer:
        """Prepare inputs of ``batch`` items in place; each call of the result is one timed run."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory early (garbage collection does it otherwise)."""


class Backend(ABC):
    """A way of running ONNX models or engines: ORT with a provider, or TensorRT itself."""

    name: str
    timer_kind: str  # "perf_counter" or "cuda-events"

    @abstractmethod
    def load(self, path: Path, batches: Sequence[int]) -> LoadedModel:
        """Load ``path`` so that every batch size in ``batches`` can run (BadInput otherwise)."""

    @abstractmethod
    def describe(self) -> dict:
        """What runs the model: provider, device, threads, timer; plain JSON values."""
