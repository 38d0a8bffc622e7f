"""Numerical check that a slimmed model computes what the original does, in ONNX Runtime (CPU).

Lossless means ``max_abs_diff <= rtol * max(1, max|reference|)`` over every output of several
random batches, where ``rtol`` follows the outputs' element type: 1e-4 for float32 (and wider),
``ULPS`` units in the last place for float16 and bfloat16, whose rounding alone moves outputs
by more than 1e-4. A low-precision model is also run as its float32 twin (every 16-bit float
tensor widened): the twin shows the arithmetic without 16-bit rounding, so a refusal can tell
rounding from pruned channels that still matter, and a twin that agrees at 1e-4 is lossless.

The inputs follow the model: a dynamic batch axis is fed batches 1, 3 and 2 (one the model was
not exported with); a static batch is fed its own size, three times. Other dynamic axes (height,
width) take ``input_shape`` when the caller has one, else the smallest common image size the graph
accepts; a graph that accepts none is refused with a line naming ``--input-shape``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from chase_deploy.backends.base import InputSpec
from chase_deploy.backends.modelfile import onnx_inputs
from train.errors import BadInput, one_line

RTOL = 1e-4
ULPS = 8
DEFAULT_BATCHES = (1, 3, 2)
STATIC_ROUNDS = 3
# Sizes tried for dynamic height/width, cheapest first; 28 and 299 for MNIST- and Inception-shaped
# graphs whose classifier reads a flattened map of one size only.
CANDIDATE_SIZES = (32, 64, 28, 224, 16, 96, 128, 256, 299, 384, 512)
LOW_PRECISION = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}
EPSILON = {"float16": 2.0**-10, "bfloat16": 2.0**-7}


@dataclass
class Verification:
    max_abs_diff: float
    max_abs_reference: float
    lossless: bool
    batch_sizes: list[int]
    seconds: float
    dtype: str = "float32"  # of the outputs
    rtol: float = RTOL
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # batch dim as fed first
    float32_max_abs_diff: float | None = None  # low-precision models: the float32 twins' diff
    cause: str | None = None  # one line: why it is not lossless
    ran_in: str = "float32"  # the outputs' type, or "float32 twin" where that type cannot run

    @property
    def tolerance(self) -> str:
        rule = f"max_abs_diff <= {self.rtol:g} * max(1, max_abs_reference)"
        if self.ran_in == "float32 twin":
            rule += f" in the float32 twins ({self.dtype} does not run on ONNX Runtime's CPU)"
        elif self.dtype in EPSILON:
            rule += f" ({ULPS} ulps of {self.dtype}), or float32 twins within {RTOL:g}"
        return rule

    def to_dict(self) -> dict:
        return {**asdict(self), "tolerance": self.tolerance}


def is_lossless(max_abs_diff: float, max_abs_reference: float, rtol: float = RTOL) -> bool:
    return bool(max_abs_diff <= rtol * max(1.0, max_abs_reference))


def rtol_for(dtype: str) -> float:
    """``ULPS`` units in the last place of a 16-bit float; 1e-4 for float32 and wider."""
    return max(RTOL, ULPS * EPSILON[dtype]) if dtype in EPSILON else RTOL


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


# ---------------------------------------------------------------------------------- inputs


def feed_shapes(
    model: onnx.ModelProto,
    reference_session,
    input_shape: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
) -> tuple[list[int], list[dict[str, tuple[int, ...]]]]:
    """The batch size and {input: shape} of each verification round (see the module docstring)."""
    inputs = onnx_inputs(model)
    sizes = _non_batch_sizes(inputs, reference_session, input_shape)
    static = {i.shape[0] for i in inputs if i.shape and i.shape[0] is not None}
    batches = [static.pop()] * STATIC_ROUNDS if len(static) == 1 else list(batch_sizes)
    rounds = [{i.name: (b, *sizes[i.name]) if i.shape else () for i in inputs} for b in batches]
    return batches, rounds


def _non_batch_sizes(
    inputs: list[InputSpec], reference_session, input_shape: Sequence[int] | None
) -> dict[str, tuple[int, ...]]:
    sizes = {i.name: tuple(i.shape[1:]) for i in inputs}
    dynamic = [i for i in inputs if any(d is None for d in i.shape[1:])]
    if input_shape is not None:
        return {**sizes, **_from_input_shape(inputs, input_shape)}
    if not dynamic:
        return sizes
    return {**sizes, **_derive_sizes(inputs, dynamic, reference_session)}


def _from_input_shape(inputs: list[InputSpec], shape: Sequence[int]) -> dict[str, tuple]:
    images = [i for i in inputs if len(i.shape) == len(shape)]
    if len(images) != 1:
        raise BadInput(
            f"--input-shape {','.join(map(str, shape))}: the model has {len(inputs)} inputs and "
            f"{len(images)} of rank {len(shape)}; it applies to a model with one such input"
        )
    target = images[0]
    for axis, (want, have) in enumerate(zip(shape[1:], target.shape[1:], strict=True), start=1):
        if have is not None and have != want:
            raise BadInput(
                f"--input-shape {','.join(map(str, shape))}: axis {axis} of input "
                f"{target.name!r} is fixed at {have} in the model; give {have} there"
            )
    return {target.name: tuple(shape[1:])}


def _derive_sizes(inputs: list[InputSpec], dynamic: list[InputSpec], reference_session) -> dict:
    """The first candidate size, every dynamic non-batch axis set to it, that the graph runs."""
    rng = np.random.default_rng(0)
    for size in CANDIDATE_SIZES:
        trial = {i.name: tuple(size if d is None else d for d in i.shape[1:]) for i in inputs}
        feeds = {
            i.name: _random(rng, (_batch_of(i), *trial[i.name]) if i.shape else (), i.dtype)
            for i in inputs
        }
        try:
            reference_session.run(None, feeds)
        except Exception:  # onnxruntime raises several C++-backed types for a size it rejects
            continue
        return {i.name: trial[i.name] for i in dynamic}
    axes = ", ".join(
        f"{i.name!r} axis {a} ({i.axis_names[a] or '?'})"
        for i in dynamic
        for a, d in enumerate(i.shape)
        if a > 0 and d is None
    )
    raise BadInput(
        f"the model's input has dynamic {axes} and runs at none of the sizes "
        f"{', '.join(map(str, CANDIDATE_SIZES))}; pass --input-shape N,C,H,W"
    )


def _batch_of(graph_input: InputSpec) -> int:
    return graph_input.shape[0] if graph_input.shape[0] is not None else 1


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16":
        return rng.standard_normal(shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


# ---------------------------------------------------------------------------------- compare


def compare(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    seed: int = 0,
    reference_session=None,
    input_shape: Sequence[int] | None = None,
) -> Verification:
    """Run both models on the same random inputs and measure the largest output difference.

    A low-precision model that ONNX Runtime's CPU provider cannot run (it has no bfloat16
    kernels) is verified through its float32 twins alone, at the float32 tolerance.
    """
    start = time.perf_counter()
    dtype, low = _output_dtype(reference), _has_low_precision(reference)
    pair = _sessions(reference, candidate, reference_session, required=not low)
    rtol, ran_in = rtol_for(dtype), dtype
    if pair is None:
        reference, candidate = float32_twin(reference), float32_twin(candidate)
        pair = _sessions(reference, candidate, None, required=True)
        rtol, ran_in, low = RTOL, "float32 twin", False
    batches, rounds = feed_shapes(reference, pair[0], input_shape, batch_sizes)
    feeds = _feeds(reference, rounds, seed)
    worst, scale = _run_pair(*pair, feeds)
    result = Verification(
        max_abs_diff=worst,
        max_abs_reference=scale,
        lossless=is_lossless(worst, scale, rtol),
        batch_sizes=batches,
        seconds=0.0,
        dtype=dtype,
        rtol=rtol,
        input_shapes={k: list(v) for k, v in rounds[0].items()},
        ran_in=ran_in,
    )
    if ran_in == "float32 twin":
        result.float32_max_abs_diff = worst
    elif low:
        _check_float32_twins(result, reference, candidate, feeds)
    if not result.lossless:
        result.cause = _cause(result)
    result.seconds = time.perf_counter() - start
    return result


def _sessions(reference, candidate, reference_session, *, required: bool):
    """CPU sessions of both models; None where a low-precision model cannot run natively: no CPU
    kernels, or bfloat16 inputs/outputs, which ONNX Runtime's numpy interface cannot carry."""
    graph = reference.graph
    if not required and any(
        v.type.tensor_type.elem_type == TensorProto.BFLOAT16 for v in [*graph.input, *graph.output]
    ):
        return None
    try:
        return reference_session or session(reference), session(candidate)
    except Exception as e:  # onnxruntime raises several C++-backed types
        if required:
            raise BadInput(
                f"ONNX Runtime (CPU) cannot run the model to verify it ({one_line(e, 200)}); slim verifies "
                f"every model it writes with ONNX Runtime's CPU provider"
            ) from None
        return None


def _feeds(model: onnx.ModelProto, rounds: list[dict], seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    dtypes = {i.name: i.dtype for i in onnx_inputs(model)}
    return [{name: _random(rng, shape, dtypes[name]) for name, shape in r.items()} for r in rounds]


def _run_pair(ref, cand, feeds: list[dict[str, np.ndarray]]) -> tuple[float, float]:
    worst, scale = 0.0, 0.0
    for feed in feeds:
        expected, actual = ref.run(None, feed), cand.run(None, feed)
        for e, a in zip(expected, actual, strict=True):
            if e.shape != a.shape:
                return float("inf"), scale
            worst = max(worst, _max_diff(e, a))
            scale = max(scale, float(np.nanmax(np.abs(e.astype(np.float64)), initial=0.0)))
    return worst, scale


def _check_float32_twins(result: Verification, reference, candidate, feeds) -> None:
    wide = [{k: v.astype(np.float32) if _is_16bit(v) else v for k, v in f.items()} for f in feeds]
    try:
        twins = session(float32_twin(reference)), session(float32_twin(candidate))
        worst, scale = _run_pair(*twins, wide)
    except Exception:  # a graph whose ops have no float32 kernels: the native check stands
        return
    result.float32_max_abs_diff = worst
    if is_lossless(worst, scale):
        result.lossless = True


def _cause(result: Verification) -> str:
    if result.max_abs_diff == float("inf"):
        return "the slim model's outputs differ in shape or NaNs from the original's"
    exact = result.float32_max_abs_diff
    if result.ran_in == "float32 twin":
        return "the pruned channels' consumers are not zero (compared as float32 twins)"
    if exact is not None:
        return (
            f"the float32 twins differ too (max_abs_diff {exact:.3g} > {RTOL:g} x max(1, "
            f"reference)), so it is not {result.dtype} rounding: the pruned channels' consumers "
            f"are not zero"
        )
    if result.dtype in EPSILON:
        return (
            f"the {result.dtype} outputs differ by more than {ULPS} ulps and no float32 twin "
            f"could run to tell rounding from pruned channels whose consumers are not zero"
        )
    return "the pruned channels' consumers are not zero"


def float32_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every float16/bfloat16 tensor, cast and type widened to float32.

    The twin computes what the model computes, without rounding to 16 bits between ops.
    """
    twin = copy.deepcopy(model)
    graph = twin.graph
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type in LOW_PRECISION:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(attr.t)
            elif node.op_type == "Cast" and attr.name == "to" and attr.i in LOW_PRECISION:
                attr.i = TensorProto.FLOAT
    return twin


def _widen_tensor(tensor: TensorProto) -> None:
    if tensor.data_type in LOW_PRECISION:
        wide = numpy_helper.to_array(tensor).astype(np.float32)
        tensor.CopyFrom(numpy_helper.from_array(wide, tensor.name))


def _has_low_precision(model: onnx.ModelProto) -> bool:
    graph = model.graph
    values = [*graph.input, *graph.output, *graph.value_info]
    return any(v.type.tensor_type.elem_type in LOW_PRECISION for v in values) or any(
        t.data_type in LOW_PRECISION for t in graph.initializer
    )


def _output_dtype(model: onnx.ModelProto) -> str:
    """The narrowest float type among the outputs: it sets how close they can agree."""
    types = [o.type.tensor_type.elem_type for o in model.graph.output]
    low = [LOW_PRECISION[t] for t in types if t in LOW_PRECISION]
    if low:
        return "bfloat16" if "bfloat16" in low else "float16"
    return "float32"


def _is_16bit(array: np.ndarray) -> bool:
    return array.dtype == np.float16 or array.dtype.name == "bfloat16"


def _max_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest absolute difference; a NaN on one side only counts as infinitely different."""
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    if not np.array_equal(np.isnan(e), np.isnan(a)):
        return float("inf")
    diff = np.abs(np.nan_to_num(e) - np.nan_to_num(a))
    return float(np.max(diff, initial=0.0))
