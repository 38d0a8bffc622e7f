"""Tiny ONNX models for the backend, bench and build tests (built with onnx.helper: instant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(
    path: Path, width: int = 8, batch: int | str = "N", size: int = 8, seed: int = 0
) -> Path:
    """Conv(3->width, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(width->10)."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(
            (rng.standard_normal((width, 3, 3, 3)) * 0.2).astype(np.float32), "w1"
        ),
        numpy_helper.from_array((rng.standard_normal(width) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((10, width)) * 0.2).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def fake_engine(path: Path, tensorrt: str, gpu: str, capability: str) -> Path:
    """Bytes that are not ONNX, with a build sidecar naming a TensorRT version and GPU."""
    import json

    path.write_bytes(b"\x00not-a-real-engine\x00" * 8)
    sidecar = {
        "format": "chase-deploy-engine",
        "version": 1,
        "tensorrt": tensorrt,
        "gpu": {"name": gpu, "compute_capability": capability},
        "precision": "fp32",
    }
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar))
    return path
