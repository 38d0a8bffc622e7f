"""The provider list each ONNX Runtime backend gives its sessions, built in one place.

``backends.ort`` opens its sessions with these lists and ``backends.probe`` tries the very same
ones, so a probe cannot pass where the real session fails on an option (it once tried the
providers with no options at all).

Option names are those of onnxruntime-gpu 1.31:

- CUDA provider: ``device_id`` and ``user_compute_stream`` (the stream ONNX Runtime computes
  on, as an integer handle; giving it is what turns the user stream on).
- TensorRT provider: ``device_id``, ``user_compute_stream``, ``trt_fp16_enable`` and, for a
  dynamic batch axis, ``trt_profile_{min,opt,max}_shapes`` with min = opt = max = the batch
  size, so every batch size runs kernels tuned for exactly it, as the ``tensorrt`` backend does.
  ``has_user_compute_stream`` is not a TensorRT provider option in 1.31: passing it fails the
  session, which then falls back to CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence

from chase_deploy.backends.base import InputSpec

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

PROVIDERS = {"ort-cpu": CPU, "ort-cuda": CUDA, "ort-trt": TENSORRT}

# Backends whose sessions are built for one batch size each (one TensorRT profile per batch).
PER_BATCH = frozenset({"ort-trt"})


def cuda_options(stream: int | None) -> dict[str, str]:
    """CUDA provider options; ``stream`` is a CUDA stream handle for ORT to compute on, or None."""
    options = {"device_id": "0"}
    if stream is not None:
        options["user_compute_stream"] = str(int(stream))
    return options


def tensorrt_options(inputs: Sequence[InputSpec], batch: int, stream: int | None) -> dict[str, str]:
    """TensorRT provider options (fp32) for a session that runs batch size ``batch``."""
    options = {**cuda_options(stream), "trt_fp16_enable": "False"}
    if any(spec.fixed_batch is None for spec in inputs):
        shapes = profile_shapes(inputs, batch)
        for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"):
            options[key] = shapes
    return options


def profile_shapes(inputs: Sequence[InputSpec], batch: int) -> str:
    """``name:NxCxHxW,...`` for every input at batch size ``batch`` (the TensorRT EP's format)."""
    return ",".join(f"{s.name}:{'x'.join(map(str, s.at_batch(batch)))}" for s in inputs)


def provider_list(
    backend: str, inputs: Sequence[InputSpec], batch: int, stream: int | None
) -> list:
    """What ``onnxruntime.InferenceSession(..., providers=...)`` gets for ``backend``.

    ``batch`` matters only for the per-batch backends (``PER_BATCH``); the others serve every
    batch size with one session.
    """
    if backend == "ort-cpu":
        return [CPU]
    if backend == "ort-cuda":
        return [(CUDA, cuda_options(stream)), CPU]
    if backend == "ort-trt":
        return [
            (TENSORRT, tensorrt_options(inputs, batch, stream)),
            (CUDA, cuda_options(stream)),
            CPU,
        ]
    raise ValueError(f"not an ONNX Runtime backend: {backend!r}")


def compute_stream():
    """A torch CUDA stream for ONNX Runtime to compute on, so torch's events can time it; None
    when torch has no CUDA (ONNX Runtime then uses its own stream and the host clock times)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.Stream()
