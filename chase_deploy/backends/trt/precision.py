"""Convert an fp32 ONNX model to fp16 or bf16 while its inputs and outputs stay fp32.

chase-deploy builds strongly typed TensorRT networks (on TensorRT 10 by request, on 11 always):
each tensor runs in the type the ONNX graph gives it, so reduced precision has to be in the
model itself. fp16 uses onnxconverter-common's converter
(Microsoft's, the one ONNX Runtime documents), which casts the fp32 graph inputs to fp16 and the
fp16 results back to fp32. bf16 reuses that pass and then retypes every fp16 tensor to bf16,
taking the weights from the fp32 originals (converting through fp16 would clamp them to ±65504
and lose small values). bf16 Conv/pooling need opset 22, so older models are upgraded first.

BatchNormalization stays fp32, its scale, bias and running statistics included (casts around it):
a variance rounded to fp16/bf16 moves every output of its channel. Exports fold BatchNorm into the
Conv before it, so this only concerns the ones no Conv precedes (a pre-activation BN after a
concat or a residual Add).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from train.config import PRECISIONS
from train.errors import BadInput, one_line

FP16_MAX = 65504.0
FP32_OPS = ("BatchNormalization",)  # computed in fp32 with fp32 parameters (module doc)
BF16_MIN_OPSET = 22  # first opset whose Conv, pooling and Resize accept bfloat16


def convert_precision(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """Return a copy of ``model`` computing in ``precision``; fp32 returns the model unchanged."""
    if precision not in PRECISIONS:
        raise BadInput(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return model
    if not _has_float32(model):
        raise BadInput(
            "the model has no fp32 weights or inputs to convert: is it converted already?"
        )
    return to_float16(model) if precision == "fp16" else to_bfloat16(model)


def convert_file(src: str | Path, dst: str | Path, precision: str) -> Path:
    """Convert the ONNX file ``src`` and write the result atomically to ``dst``."""
    from train.atomic import write_bytes

    try:
        model = onnx.load(str(src))
    except Exception as e:
        raise BadInput(f"cannot read ONNX model {src}: {one_line(e)}") from e
    converted = convert_precision(model, precision)
    write_bytes(dst, converted.SerializeToString())
    return Path(dst)


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 everywhere inside the graph, fp32 at its inputs and outputs."""
    from onnxconverter_common import float16

    originals = _float32_arrays(model)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = float16.convert_float_to_float16(
                work,
                keep_io_types=True,
                max_finite_val=FP16_MAX,
                min_positive_val=1e-7,
                op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
            )
        except ValueError as e:  # the converter's own guard against converting twice
            if "already converted" not in str(e):
                raise
            raise BadInput("the model computes in fp16 already: it was converted already") from e
    clamped = [w for w in caught if "truncated" in str(w.message)]
    if clamped:
        warnings.warn(
            f"fp16 conversion clamped values of {len(clamped)} tensors to the fp16 range",
            stacklevel=2,
        )
    _fp32_parameters(out, originals)
    _check(out, "fp16")
    return out


def _fp32_parameters(model: onnx.ModelProto, originals: dict[str, np.ndarray]) -> None:
    """Feed the ``FP32_OPS`` their parameters from the fp32 originals. The converter keeps those
    ops in fp32 but stores every initializer in fp16 and casts it back, which rounds a running
    variance to 11 bits; here each such ``Cast(fp16 initializer)`` input is replaced by an fp32
    initializer with the original values, and what no node reads any more is dropped."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    added: set[str] = set()
    for node in graph.node:
        if node.op_type not in FP32_OPS:
            continue
        for k in range(1, len(node.input)):
            cast = producer.get(node.input[k])
            if cast is None or cast.op_type != "Cast" or cast.input[0] not in originals:
                continue
            name = f"{cast.input[0]}_fp32"
            if name not in added:
                graph.initializer.append(numpy_helper.from_array(originals[cast.input[0]], name))
                added.add(name)
            node.input[k] = name
    if not added:
        return
    while True:  # drop the Casts and fp16 initializers that nothing reads now
        read = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Cast" and not set(n.output) & read]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def to_bfloat16(model: onnx.ModelProto) -> onnx.ModelProto:
    """bf16 everywhere inside the graph, fp32 at its inputs and outputs (opset >= 22)."""
    model = _at_least_opset(model, BF16_MIN_OPSET)
    originals = _float32_arrays(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fp16 clamping is irrelevant: values come from fp32
        half = to_float16(model)
    graph = half.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(_bf16_tensor(init, originals.get(init.name)))
    for node in graph.node:
        _retype_node(node, originals)
    for info in [*graph.input, *graph.output]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
            info.type.tensor_type.elem_type = TensorProto.BFLOAT16
    del graph.value_info[:]  # stale fp16 annotations; shape inference re-derives them
    half = onnx.shape_inference.infer_shapes(half, check_type=True, strict_mode=True)
    _check(half, "bf16")
    return half


def _retype_node(node: onnx.NodeProto, originals: dict[str, np.ndarray]) -> None:
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
            attr.i = TensorProto.BFLOAT16
        if attr.t.data_type == TensorProto.FLOAT16:
            key = f"{node.output[0]}/{attr.name}" if node.output else ""
            attr.t.CopyFrom(_bf16_tensor(attr.t, originals.get(key)))
        for t in attr.tensors:
            if t.data_type == TensorProto.FLOAT16:
                t.CopyFrom(_bf16_tensor(t, None))


def _bf16_tensor(tensor: onnx.TensorProto, original: np.ndarray | None) -> onnx.TensorProto:
    import ml_dtypes

    values = original if original is not None else numpy_helper.to_array(tensor)
    out = numpy_helper.from_array(np.asarray(values, np.float32).astype(ml_dtypes.bfloat16))
    out.name = tensor.name
    return out


def _float32_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """fp32 initializers by name and fp32 node-attribute tensors by ``output/attr``."""
    arrays = {
        init.name: numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.data_type == TensorProto.FLOAT
    }
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.t.data_type == TensorProto.FLOAT and node.output:
                arrays[f"{node.output[0]}/{attr.name}"] = numpy_helper.to_array(attr.t)
    return arrays


def _at_least_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return model
    try:
        return onnx.version_converter.convert_version(model, opset)
    except Exception as e:
        raise BadInput(
            f"bf16 needs ONNX opset {opset} and upgrading this opset-{current} model failed "
            f"({one_line(e)}): export it with opset {opset}"
        ) from e


def _has_float32(model: onnx.ModelProto) -> bool:
    if any(i.data_type == TensorProto.FLOAT for i in model.graph.initializer):
        return True
    return any(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in model.graph.input)


def _check(model: onnx.ModelProto, precision: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise BadInput(
            f"the {precision} conversion produced an invalid model: {one_line(e)}"
        ) from e
