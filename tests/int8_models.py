"""Small ONNX models for the int8 tests (onnx.helper: instant), fitted to the tiny recipe's
synthetic data (3x8x8 images of 4 classes, each 60 % a fixed prototype)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from train.data.synthetic import PROTOTYPE_SEED


def _save(path: Path, nodes, inits, channels: int, size: int, classes: int, batch) -> Path:
    graph = helper.make_graph(
        nodes,
        "int8-test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def prototype_net(
    path: Path,
    classes: int = 4,
    channels: int = 3,
    size: int = 8,
    nuisance: float = 0.0,
    batch: int | str = "N",
) -> Path:
    """A nearest-class-mean classifier of the synthetic data: Flatten -> Gemm -> Gemm.

    The first Gemm scores each class against its expected normalized image; with ``nuisance``
    it also emits one more feature of that size, which the second Gemm ignores. Quantized per
    tensor, that feature stretches the range of the scores' tensor until int8 cannot tell the
    classes apart: fp32 stays near 100 %, int8 drops to about chance.
    """
    protos = torch.rand(
        classes, channels, size, size, generator=torch.Generator().manual_seed(PROTOTYPE_SEED)
    ).numpy()
    means = ((0.6 * protos + 0.2) - 0.5) / 0.25  # E[normalized image] of each class
    flat = means.reshape(classes, -1)
    w1 = np.concatenate([flat, np.full((1, flat.shape[1]), nuisance)]).astype(np.float32)
    b1 = np.concatenate([-0.5 * (flat**2).sum(1), [0.0]]).astype(np.float32)
    w2 = np.eye(classes, classes + 1, dtype=np.float32)
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
    ]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["scores"], transB=1, name="score"),
        helper.make_node("Gemm", ["scores", "w2"], ["logits"], transB=1, name="pick"),
    ]
    return _save(path, nodes, inits, channels, size, classes, batch)


def residual_net(
    path: Path, channels: int = 3, size: int = 8, classes: int = 4, width: int = 8, seed: int = 0
) -> Path:
    """Conv -> Relu -> Conv, plus a 1x1 Conv shortcut, Add -> Relu -> GlobalAveragePool ->
    Flatten -> Gemm: one residual Add between two Conv outputs, random weights."""
    rng = np.random.default_rng(seed)

    def arr(name, *shape, scale=0.3):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        arr("c1.w", width, channels, 3, 3),
        arr("c1.b", width, scale=0.1),
        arr("c2.w", width, width, 3, 3),
        arr("c2.b", width, scale=0.1),
        arr("sc.w", width, channels, 1, 1),
        arr("sc.b", width, scale=0.1),
        arr("fc.w", classes, width),
        arr("fc.b", classes, scale=0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "c1.w", "c1.b"], ["c1"], pads=[1] * 4, name="c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], pads=[1] * 4, name="c2"),
        helper.make_node("Conv", ["input", "sc.w", "sc.b"], ["sc"], name="sc"),
        helper.make_node("Add", ["c2", "sc"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["r2"], name="r2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
    ]
    return _save(path, nodes, inits, channels, size, classes, "N")
