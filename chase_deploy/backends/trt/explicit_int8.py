"""TensorRT engines from int8 Q/DQ models: explicit quantization, nothing to ask the builder.

A model from ``chase-deploy quantize --target tensorrt`` carries its int8 scales in
QuantizeLinear/DequantizeLinear pairs. TensorRT builds it by explicit quantization on the same
strongly typed network as every other engine: the Q/DQ nodes say where int8 runs, so no
precision flag (BuilderFlag.INT8, deprecated with implicit quantization) and no calibrator are
involved, and the ONNX model goes to the parser unchanged. TensorRT's int8 is symmetric: a
zero point other than 0 (``--target cpu``'s uint8 activations) cannot be built and is refused.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from chase_deploy.int8.inspect_qdq import qdq_format
from train.errors import BadInput

INT8 = "int8"  # the precision an explicit-quantization engine's sidecar records


def explicit_int8(path: str | Path, model: onnx.ModelProto, precision: str) -> dict | None:
    """The Q/DQ description of a TensorRT-ready int8 model, None for a float model.

    BadInput for a Q/DQ model TensorRT cannot build (uint8 or non-zero zero points) and for a
    reduced ``precision`` asked of one (its precision is in the model).
    """
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return None
    fmt = qdq_format(model)
    if precision != "fp32":
        raise BadInput(
            f"--precision {precision}: {path} is an int8 Q/DQ model, built by explicit "
            "quantization as it is; leave --precision out"
        )
    types = set(fmt.activation_types) | set(fmt.weight_types)
    if types != {"int8"} or fmt.activation_zero_points not in ((), (0,)):
        raise BadInput(
            f"{path} is quantized for ONNX Runtime's CPU (activations {', '.join(fmt.activation_types)}, "
            f"zero points {list(fmt.activation_zero_points)[:4]}); TensorRT takes symmetric int8: "
            f"quantize the fp32 model with `chase-deploy quantize MODEL.onnx --target tensorrt`"
        )
    layers = fmt.quantized_layers
    return {
        "quantization": "explicit (Q/DQ), symmetric int8",
        "quantize_linear": fmt.quantize_linear,
        "dequantize_linear": fmt.dequantize_linear,
        "int8_layers": sum(a and w for a, w in layers.values()),
        "layers": len(layers),
    }
