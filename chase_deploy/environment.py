"""What machine a measurement or an engine came from: CPU, GPUs, library versions.

Benchmarks and engines are only meaningful together with the machine that produced them, so
this module describes it without importing heavy libraries (torch is read from its package
metadata) and without needing CUDA: GPUs are listed through the driver library itself.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import platform
import sys
from dataclasses import asdict, dataclass

# cuDeviceGetAttribute codes (cuda.h): compute capability major / minor.
_CC_MAJOR = 75
_CC_MINOR = 76
_CUDA_ERROR_NO_DEVICE = 100


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str  # "8.9"
    memory_mib: int


@dataclass(frozen=True)
class GpuScan:
    """The GPUs the CUDA driver reports, or why there are none (``reason``)."""

    gpus: tuple[Gpu, ...]
    driver: str | None
    reason: str | None


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def package_version(dist: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def onnxruntime_version() -> str | None:
    return package_version("onnxruntime-gpu") or package_version("onnxruntime")


@functools.cache
def tensorrt_version() -> str | None:
    """``tensorrt.__version__`` when the TensorRT Python package imports, else None."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except Exception:  # a broken install (missing libnvinfer) is "not usable", not a crash
        return None
    return str(tensorrt.__version__)


def _load_cuda_driver() -> ctypes.CDLL | None:
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@functools.cache
def scan_gpus() -> GpuScan:
    """Ask the CUDA driver (libcuda) for its devices; say why not when it cannot answer."""
    lib = _load_cuda_driver()
    if lib is None:
        return GpuScan((), None, "the NVIDIA driver library libcuda.so.1 is not installed")
    rc = lib.cuInit(0)
    if rc == _CUDA_ERROR_NO_DEVICE:
        return GpuScan((), None, "the NVIDIA driver reports no GPU")
    if rc != 0:
        return GpuScan((), None, f"the NVIDIA driver failed to initialise (CUresult {rc})")
    version = ctypes.c_int(0)
    driver = None
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return GpuScan((), driver, "the NVIDIA driver reports no GPU")
    return GpuScan(tuple(_describe_device(lib, i) for i in range(count.value)), driver, None)


def _describe_device(lib: ctypes.CDLL, index: int) -> Gpu:
    dev = ctypes.c_int(0)
    lib.cuDeviceGet(ctypes.byref(dev), index)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, dev)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev)
    mem = ctypes.c_size_t(0)
    total_mem = getattr(lib, "cuDeviceTotalMem_v2", None) or lib.cuDeviceTotalMem
    total_mem(ctypes.byref(mem), dev)
    return Gpu(
        index=index,
        name=name.value.decode(errors="replace"),
        compute_capability=f"{major.value}.{minor.value}",
        memory_mib=mem.value // (1 << 20),
    )


def current_gpu() -> Gpu | None:
    """The GPU work runs on: device 0 as the driver numbers them (CUDA_VISIBLE_DEVICES applies)."""
    scan = scan_gpus()
    return scan.gpus[0] if scan.gpus else None


def describe_environment(threads: int | None = None) -> dict:
    """The machine and software a benchmark ran on, as plain JSON values."""
    scan = scan_gpus()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "cores_available": available_cores(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "onnxruntime": onnxruntime_version(),
        "onnx": package_version("onnx"),
        "tensorrt": tensorrt_version(),
        "torch": package_version("torch"),
        "numpy": package_version("numpy"),
        "gpu": [asdict(g) for g in scan.gpus] or None,
        "cuda_driver": scan.driver,
    }
