"""Backends behind one interface: ``ort-cpu``, ``ort-cuda``, ``ort-trt`` and ``tensorrt`` run
ONNX models (and engines); ``torch-cpu`` and ``torch-cuda`` run the ``.pt2`` programs ``slim`` writes.

``get_backend`` refuses (MissingBackend, exit 2) a backend that cannot really run here and says
which piece is missing; it never falls back to another device silently.
"""

from __future__ import annotations

from chase_deploy.backends.base import Backend, InputSpec, LoadedModel
from chase_deploy.errors import MissingBackend
from train.errors import BadInput

BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "tensorrt", "torch-cpu", "torch-cuda")
TORCH_BACKENDS = ("torch-cpu", "torch-cuda")
# The options ``get_backend`` passes on, per backend (ONNX Runtime's take none).
OPTIONS = {
    "tensorrt": ("precision", "workspace_mib", "cuda_graph"),
    "torch-cpu": ("precision", "channels_last", "compile"),
    "torch-cuda": ("precision", "channels_last", "compile", "cuda_graph"),
}

__all__ = [
    "BACKENDS",
    "TORCH_BACKENDS",
    "Backend",
    "InputSpec",
    "LoadedModel",
    "check_name",
    "get_backend",
    "missing_pieces",
    "require_backend",
    "usable_backends",
]


def missing_pieces(name: str) -> list[str]:
    """Why backend ``name`` cannot run here (empty when it can)."""
    from chase_deploy.backends import probe

    check_name(name)
    return probe.missing_pieces(name)


def usable_backends() -> list[str]:
    """The backends that really run on this machine, in the order of ``BACKENDS``."""
    return [name for name in BACKENDS if not missing_pieces(name)]


def check_name(name: str) -> None:
    if name not in BACKENDS:
        raise BadInput(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def require_backend(name: str) -> None:
    """MissingBackend naming every missing piece (TensorRT, CUDA libraries, a GPU, ...)."""
    missing = missing_pieces(name)
    if missing:
        raise MissingBackend(f"backend {name} is not usable here: {'; '.join(missing)}")


def get_backend(name: str, threads: int | None = None, **options) -> Backend:
    """A ready backend; ``threads`` pins ORT's (or torch's) intra-op threads (default: all
    available cores).

    ``options`` go to the TensorRT backend (``precision``, ``workspace_mib``, ``cuda_graph``) or
    the torch backends (``precision``, ``channels_last``, ``compile``, ``cuda_graph``).
    """
    require_backend(name)
    unknown = sorted(set(options) - set(OPTIONS.get(name, ())))
    if unknown:
        raise BadInput(f"backend {name} takes no {', '.join(unknown)} option")
    if name in TORCH_BACKENDS:
        from chase_deploy.backends.pytorch import TorchBackend

        return TorchBackend(name, threads=threads, **options)
    if name == "tensorrt":
        from chase_deploy.backends.trt.backend import TensorRTBackend

        return TensorRTBackend(threads=threads, **options)
    from chase_deploy.backends.ort import OrtBackend, OrtCudaBackend, OrtTensorrtBackend

    cls = {"ort-cpu": OrtBackend, "ort-cuda": OrtCudaBackend, "ort-trt": OrtTensorrtBackend}[name]
    return cls(threads=threads)
