"""The two int8 forms ``quantize`` writes, as ONNX Runtime quantization settings.

``cpu``: what ONNX Runtime's CPU provider runs fast. uint8 activations (asymmetric), int8 weights
per output channel, every operator ONNX Runtime can quantize. After graph optimization the CPU
provider fuses each DequantizeLinear -> op -> QuantizeLinear group into one integer kernel:
Conv (with its Relu, which the asymmetric range makes redundant) -> QLinearConv, residual Add ->
QLinearAdd, Gemm -> QGemm, MatMul -> QLinearMatMul; pooling runs on uint8 directly. Quantizing
only Conv/Gemm/MatMul leaves a Q/DQ pair (and float ops) around every residual Add and Relu,
which measured slower (docs/int8.md).

``tensorrt``: symmetric int8 everywhere (zero points 0), the only integer form TensorRT's explicit
quantization accepts, with Q/DQ where TensorRT fuses them: on the inputs of Conv, Gemm and MatMul
(activation and weight, weights per output channel) and on both inputs of every residual Add,
so TensorRT can run the Add inside the int8 convolution that produces one of its inputs.
Outputs are not quantized (the next consumer's input Q/DQ does that), Q/DQ pairs are not shared
between consumers (TensorRT fuses a pair into one consumer) and biases stay fp32 (TensorRT adds
them in the convolution's own precision). Relu stays an explicit node: with zero point 0 it
cannot be folded into the range, and TensorRT fuses it into the convolution anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from train.config import INT8_TARGETS

TARGETS = INT8_TARGETS
METHODS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999  # of |x| for the percentile method (ONNX Runtime's default)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    activation: str  # "uint8" or "int8"
    symmetric_activations: bool
    op_types: tuple[str, ...] | None  # None: every operator ONNX Runtime can quantize
    extra_options: dict[str, Any] = field(default_factory=dict)


SPECS = {
    "cpu": TargetSpec("cpu", "uint8", False, None),
    "tensorrt": TargetSpec(
        "tensorrt",
        "int8",
        True,
        ("Conv", "Gemm", "MatMul", "Add"),
        {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": True,
            "DedicatedQDQPair": True,
            "QuantizeBias": False,
            "OpTypesToExcludeOutputQuantization": ["Conv", "Gemm", "MatMul", "Add"],
        },
    ),
}


def quantize_static_kwargs(target: str, method: str) -> dict[str, Any]:
    """The keyword arguments of ``onnxruntime.quantization.quantize_static`` for one target."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    spec = SPECS[target]
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    extra = dict(spec.extra_options)
    if method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    return {
        "quant_format": QuantFormat.QDQ,
        "activation_type": QuantType.QUInt8 if spec.activation == "uint8" else QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "reduce_range": False,
        "op_types_to_quantize": list(spec.op_types) if spec.op_types else None,
        "calibrate_method": calibrate,
        "extra_options": extra,
    }
