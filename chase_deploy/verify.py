"""Numerical check that a slimmed model computes what the original does, in ONNX Runtime (CPU).

Lossless means ``max_abs_diff <= 1e-4 * max(1, max|reference|)`` over every output of several
random batches, one of them a batch size the model was not exported with.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from train.errors import BadInput

RTOL = 1e-4
DEFAULT_BATCHES = (1, 3, 2)


@dataclass
class Verification:
    max_abs_diff: float
    max_abs_reference: float
    lossless: bool
    batch_sizes: list[int]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def is_lossless(max_abs_diff: float, max_abs_reference: float) -> bool:
    return bool(max_abs_diff <= RTOL * max(1.0, max_abs_reference))


def session(model: onnx.ModelProto, threads: int | None = None):
    """A CPU ONNX Runtime session (the CPU provider exists in every onnxruntime wheel)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def random_feeds(
    model: onnx.ModelProto, batch: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One random input per graph input; the first dim of each is the batch size."""
    initializers = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        tensor_type = inp.type.tensor_type
        shape = []
        for i, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and (i > 0 or not dim.dim_param):
                shape.append(dim.dim_value if i > 0 else batch)
            elif i == 0:
                shape.append(batch)
            else:
                raise BadInput(
                    f"input {inp.name!r} has a dynamic dim {i} ({dim.dim_param or '?'}); only the "
                    f"batch dim may be dynamic to make verification inputs"
                )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


def compare(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCHES,
    seed: int = 0,
    reference_session=None,
) -> Verification:
    """Run both models on the same random batches and measure the largest output difference."""
    start = time.perf_counter()
    ref = reference_session or session(reference)
    cand = session(candidate)
    rng = np.random.default_rng(seed)
    worst, scale = 0.0, 0.0
    for batch in batch_sizes:
        feeds = random_feeds(reference, batch, rng)
        expected = ref.run(None, feeds)
        actual = cand.run(None, feeds)
        for e, a in zip(expected, actual, strict=True):
            if e.shape != a.shape:
                return Verification(
                    float("inf"), scale, False, list(batch_sizes), time.perf_counter() - start
                )
            worst = max(worst, _max_diff(e, a))
            scale = max(scale, float(np.nanmax(np.abs(e.astype(np.float64)), initial=0.0)))
    return Verification(
        worst, scale, is_lossless(worst, scale), list(batch_sizes), time.perf_counter() - start
    )


def _max_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest absolute difference; a NaN on one side only counts as infinitely different."""
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    if not np.array_equal(np.isnan(e), np.isnan(a)):
        return float("inf")
    diff = np.abs(np.nan_to_num(e) - np.nan_to_num(a))
    return float(np.max(diff, initial=0.0))
