"""Find out whether a backend really works here, and if not, which piece is missing.

A provider in ``onnxruntime.get_available_providers()`` only says the wheel was built with it;
its shared library may still fail to load (no CUDA, no cuDNN, no TensorRT libraries, no GPU),
and ONNX Runtime then quietly runs on the CPU instead. So each GPU backend's provider list is
tried on a one-node model with a dynamic batch axis, with exactly the options its real sessions
get (``ort_providers``), and ONNX Runtime's own console noise captured to explain a failure.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator

import numpy as np

from chase_deploy.backends import ort_providers
from chase_deploy.backends.base import InputSpec
from chase_deploy.environment import onnxruntime_version, package_version, scan_gpus
from train.errors import one_line

PIP_TENSORRT = "pip install 'chase-deploy[tensorrt]'"
ORT_PROVIDERS = ort_providers.PROVIDERS
PROBE_BATCH = 1
PROBE_INPUTS = (InputSpec("x", (None, 4), np.dtype(np.float32)),)  # the probe model's input
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def missing_pieces(backend: str) -> list[str]:
    """Why ``backend`` cannot run on this machine; empty when it can."""
    if backend == "ort-cpu":
        return _ort_missing("ort-cpu")
    if backend in ("ort-cuda", "ort-trt"):
        return [r for r in (gpu_missing(), *_ort_missing(backend)) if r]
    if backend == "tensorrt":
        return [r for r in (tensorrt_missing(), gpu_missing(), torch_cuda_missing()) if r]
    if backend == "torch-cpu":
        return [r for r in (torch_missing(),) if r]
    if backend == "torch-cuda":
        return [r for r in (torch_missing(), gpu_missing(), torch_cuda_missing()) if r]
    raise ValueError(f"unknown backend {backend!r}")


def gpu_missing() -> str | None:
    scan = scan_gpus()
    return None if scan.gpus else f"no NVIDIA GPU ({scan.reason})"


@functools.cache
def tensorrt_missing() -> str | None:
    """None when ``import tensorrt`` works, else what to install."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return f"TensorRT is not installed ({PIP_TENSORRT})"
    try:
        with captured_output():
            import tensorrt  # noqa: F401
    except Exception as e:
        return f"TensorRT is installed but does not load ({one_line(e)})"
    return None


@functools.cache
def torch_missing() -> str | None:
    """None when torch is installed (the torch backends and the ``.pt2`` files need it)."""
    import importlib.util

    return None if importlib.util.find_spec("torch") is not None else "torch is not installed"


@functools.cache
def torch_cuda_missing() -> str | None:
    """torch must see the GPU: the TensorRT runner uses torch CUDA tensors as buffers, and
    ``torch-cuda`` is torch itself.

    A CPU-only torch is recognised by its missing CUDA library, without importing torch (slow);
    torch is imported to ask it only when there is a GPU for it to see.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return "torch is not installed"
    lib = Path(spec.origin).parent / "lib"
    if not any(lib.glob("libtorch_cuda*")) and not any(lib.glob("torch_cuda*")):
        version = package_version("torch") or ""
        return f"torch {version} is a CPU-only build (install a CUDA build of torch)".replace(
            "  ", " "
        )
    if not scan_gpus().gpus:
        return None  # the missing GPU is reported on its own
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


@functools.cache
def _ort_missing(backend: str) -> list[str]:
    provider = ORT_PROVIDERS[backend]
    try:
        import onnxruntime as ort
    except Exception as e:
        return [f"onnxruntime does not import ({one_line(e)}): pip install onnxruntime-gpu"]
    if provider not in ort.get_available_providers():
        wheel = "onnxruntime-gpu" if package_version("onnxruntime-gpu") else "onnxruntime"
        return [
            f"{wheel} {onnxruntime_version()} was built without {provider} "
            f"(install onnxruntime-gpu alone: with onnxruntime beside it only the CPU remains)"
        ]
    if provider == "CPUExecutionProvider":
        return []
    reason = try_session(backend)
    return [reason] if reason else []


def probe_providers(backend: str, stream=None) -> list:
    """The provider list the probe tries for ``backend``: the one its real sessions get, for
    the probe model's input at batch ``PROBE_BATCH`` (``stream``: the torch stream, if any)."""
    handle = stream.cuda_stream if stream is not None else None
    return ort_providers.provider_list(backend, PROBE_INPUTS, PROBE_BATCH, handle)


def try_session(backend: str) -> str | None:
    """Run the probe model with ``backend``'s provider list; None if it really ran there."""
    import onnxruntime as ort

    provider = ORT_PROVIDERS[backend]
    options = ort.SessionOptions()
    options.log_severity_level = 2
    try:
        with captured_output() as log:
            stream = ort_providers.compute_stream() if provider != "CPUExecutionProvider" else None
            session = ort.InferenceSession(
                _tiny_model(), options, providers=probe_providers(backend, stream)
            )
            active = session.get_providers()
            if active and active[0] == provider:
                session.run(None, {"x": np.ones((PROBE_BATCH, 4), np.float32)})
    except Exception as e:
        return f"onnxruntime's {provider} failed ({one_line(e)})"
    if active and active[0] == provider:
        return None
    return f"onnxruntime's {provider} does not load ({_explain(log.getvalue(), provider)})"


def _explain(text: str, provider: str) -> str:
    """The useful part of ONNX Runtime's failure log: the library that failed and what it wants."""
    text = _ANSI.sub("", text)
    parts = []
    loaded = re.search(r"with error: ([^\n]+)", text)
    if loaded:
        parts.append(f"missing library: {loaded.group(1).strip()}")
    wants = re.search(r"Require (.+?)\.\s+Please", text)
    if wants:
        parts.append(f"it needs {wants.group(1).strip()}")
    if "install TensorRT libraries" in text:
        parts.append("the TensorRT libraries are not found")
    if not parts:
        parts.append(f"it fell back to the CPU; set ORT logging to verbose to see why ({provider})")
    return "; ".join(parts)


@functools.cache
def _tiny_model() -> bytes:
    """One Relu with a dynamic batch axis, like the models ``bench`` runs."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


@contextlib.contextmanager
def captured_output() -> Iterator[io.StringIO]:
    """Capture Python- and C-level stdout/stderr (ORT prints from both); text is complete on exit."""
    buf = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                yield buf
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            buf.write(sink.read().decode("utf-8", errors="replace"))
