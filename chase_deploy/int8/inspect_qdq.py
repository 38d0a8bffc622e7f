"""What a QDQ model contains, and what ONNX Runtime's CPU provider makes of it.

Used to refuse an already quantized input, to describe the Q/DQ format in the report (types,
zero points, per-channel axes) and to count the share of multiply-accumulates that run in int8:
- ``tensorrt``: a Conv/Gemm/MatMul whose activation and weight both arrive through
  DequantizeLinear runs in int8 (TensorRT's explicit quantization fuses the DQ into the layer);
- ``cpu``: a layer runs in int8 when, after ONNX Runtime's graph optimization (the optimized
  model it writes with ``SessionOptions.optimized_model_filepath``), an integer kernel
  (QLinearConv, QGemm, QLinearMatMul, ConvInteger, MatMulInteger, ...) consumes its int8 weight.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

Q_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
# Operators that exist only in quantized models (ONNX and ONNX Runtime's com.microsoft domain).
QUANTIZED_OPS = (
    *Q_OPS,
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearConcat",
    "QLinearLeakyRelu",
    "QLinearSigmoid",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)
INTEGER_KERNELS = (
    "QLinearConv",
    "QLinearConvTranspose",
    "QLinearMatMul",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
)
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantized_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes that only a quantized model has."""
    return [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]


@dataclass(frozen=True)
class QdqFormat:
    """The Q/DQ format of a model, for the report and the tests."""

    quantize_linear: int
    dequantize_linear: int
    activation_types: tuple[str, ...]  # element types of the QuantizeLinear outputs
    activation_zero_points: tuple[int, ...]  # distinct zero points of the activations
    weight_types: tuple[str, ...]
    weight_axes: dict[str, int | None]  # quantized weight -> per-channel axis (None: per tensor)
    quantized_layers: dict[str, tuple[bool, bool]]  # layer node -> (activation DQ, weight DQ)

    def to_json(self) -> dict:
        per_channel = sum(a is not None for a in self.weight_axes.values())
        return {
            "quantize_linear": self.quantize_linear,
            "dequantize_linear": self.dequantize_linear,
            "activation_types": list(self.activation_types),
            "activation_zero_points": list(self.activation_zero_points),
            "weight_types": list(self.weight_types),
            "per_channel_weights": per_channel,
            "per_tensor_weights": len(self.weight_axes) - per_channel,
        }


def qdq_format(model: onnx.ModelProto) -> QdqFormat:
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    qs = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    act_types, act_zps = set(), set()
    for q in qs:
        if len(q.input) > 2 and q.input[2] in inits:
            zp = numpy_helper.to_array(inits[q.input[2]])
            act_types.add(str(zp.dtype))
            act_zps.update(int(v) for v in np.unique(zp))
    weight_types, axes = set(), {}
    for dq in dqs:
        if dq.input[0] in inits and dq.input[0] not in {o for q in qs for o in q.output}:
            data = inits[dq.input[0]]
            if data.data_type == onnx.TensorProto.INT32:
                continue  # a quantized bias
            weight_types.add(str(numpy_helper.to_array(data).dtype))
            scale = inits.get(dq.input[1])
            per_channel = scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            axes[dq.input[0]] = axis if per_channel else None
    layers = {}
    for node in graph.node:
        if node.op_type in LAYER_OPS and len(node.input) > 1:
            act, weight = (producer.get(i) for i in node.input[:2])
            layers[node.name] = (
                act is not None and act.op_type == "DequantizeLinear",
                weight is not None and weight.op_type == "DequantizeLinear",
            )
    return QdqFormat(
        len(qs),
        len(dqs),
        tuple(sorted(act_types)),
        tuple(sorted(act_zps)),
        tuple(sorted(weight_types)),
        axes,
        layers,
    )


def layer_weights(model: onnx.ModelProto) -> dict[str, str]:
    """Layer node -> the int8 initializer its weight is dequantized from."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = {}
    for node in model.graph.node:
        if node.op_type in LAYER_OPS and len(node.input) > 1:
            dq = producer.get(node.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear":
                found[node.name] = dq.input[0]
    return found


@dataclass(frozen=True)
class OrtCpuPlan:
    """The graph ONNX Runtime's CPU provider runs after optimization."""

    ops: dict[str, int]  # op type -> count
    integer_weights: frozenset[str]  # initializers consumed by integer kernels

    def to_json(self) -> dict:
        return {
            "ops": self.ops,
            "integer_kernels": sum(self.ops.get(k, 0) for k in INTEGER_KERNELS),
        }


def ort_cpu_plan(model_path: str | Path) -> OrtCpuPlan:
    """Optimize ``model_path`` as the CPU provider does (all levels) and read the result."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="chase-int8-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3  # the "hardware specific optimizations" notice
        options.intra_op_num_threads = 1
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(optimized))
    ops = Counter(n.op_type for n in model.graph.node)
    weights = {i for n in model.graph.node if n.op_type in INTEGER_KERNELS for i in n.input}
    return OrtCpuPlan(dict(sorted(ops.items())), frozenset(weights))


def int8_macs(
    layer_macs: dict[str, int], qdq: onnx.ModelProto, target: str, plan: OrtCpuPlan | None
) -> dict:
    """MACs of the layers that run in int8 on ``target``, of all ``layer_macs`` (node -> MACs)."""
    if target == "cpu":
        assert plan is not None
        weights = layer_weights(qdq)
        int8 = {n for n, w in weights.items() if w in plan.integer_weights}
        counted_by = "ONNX Runtime CPU optimized graph: layers run by integer kernels"
    else:
        int8 = {n for n, (a, w) in qdq_format(qdq).quantized_layers.items() if a and w}
        counted_by = "Q/DQ placement: layers with int8 activation and weight"
    total = sum(layer_macs.values())
    quantized = sum(m for n, m in layer_macs.items() if n in int8)
    return {
        "int8": quantized,
        "total": total,
        "share": quantized / total if total else 0.0,
        "layers_int8": len(int8 & set(layer_macs)),
        "layers": len(layer_macs),
        "counted_by": counted_by,
    }
