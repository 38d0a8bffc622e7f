"""The optional extras fit together (issue 13, defect 8).

The ``[tensorrt]`` extra must install the TensorRT major version and CUDA major version that the
TensorRT provider of onnxruntime-gpu links, or ``ort-trt`` and ``tensorrt`` load two different
TensorRTs (or none). And no extra may list a package the code never imports.
"""

from __future__ import annotations

import re
from pathlib import Path

import onnxruntime
import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
TRT_PROVIDER = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"


def extra(name: str) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["optional-dependencies"][name])}


def tensorrt_requirement() -> Requirement:
    (req,) = [r for n, r in extra("tensorrt").items() if n.startswith("tensorrt")]
    return req


def test_tensorrt_extra_is_tensorrt_10_for_cuda_13_with_the_matching_onnxruntime():
    req = tensorrt_requirement()
    assert req.name == "tensorrt-cu13"
    assert req.specifier.contains("10.14.1.48") and not req.specifier.contains("11.0.0.114")
    ort = extra("tensorrt")["onnxruntime-gpu"]
    assert ort.specifier.contains("1.31.1") and not ort.specifier.contains("1.30.0")


@pytest.mark.skipif(not TRT_PROVIDER.is_file(), reason="onnxruntime here has no TensorRT provider")
def test_tensorrt_extra_matches_what_the_installed_provider_links():
    """Read the sonames the provider library needs and check the extra admits them."""
    data = TRT_PROVIDER.read_bytes()
    (nvinfer,) = set(re.findall(rb"libnvinfer\.so\.(\d+)\x00", data))
    (cudart,) = set(re.findall(rb"libcudart\.so\.(\d+)\x00", data))
    req = tensorrt_requirement()
    major = int(nvinfer)
    assert any(req.specifier.contains(f"{major}.{minor}.0") for minor in range(20))
    assert not req.specifier.contains(f"{major + 1}.0.0")
    assert req.name == f"tensorrt-cu{int(cudart)}"


def test_no_extra_names_a_package_the_code_does_not_import():
    sources = "\n".join(
        p.read_text() for d in ("chase_deploy", "train") for p in (ROOT / d).rglob("*.py")
    )
    assert "cuda.cudart" not in sources  # gone in cuda-python 13
    if "cuda-python" in extra("tensorrt"):
        assert "cuda.bindings" in sources
