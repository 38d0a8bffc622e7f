"""FLOPs and parameters of an ONNX model, per layer, from its weights and inferred shapes.

One multiply-add counts as 2 FLOPs (dense ImageNet ResNet-50 = 8.18 GFLOPs at 224x224), per sample
(batch 1). Only Conv, ConvTranspose, Gemm and MatMul with a constant weight count: they are
where the time goes. Sparse FLOPs count only non-zero weights (what unstructured sparsity could
skip on hardware that supports it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from chase_deploy.graph.reading import (
    constant_values,
    import_graph,
    layer_name,
    layer_nodes,
    static_shape,
    weight_axes,
    with_shapes,
)


@dataclass
class LayerCost:
    node: str  # ONNX node name (stable across surgery)
    name: str  # the plan's name for the layer
    op: str
    weight_shape: list[int]
    out_axis: int  # weight axis of the output channels
    in_axis: int  # weight axis of the input channels (per group)
    group: int
    out_channels: int
    in_channels: int
    alive_out: int  # output channels with a non-zero weight
    alive_in: int  # input channels with a non-zero weight
    params: int  # weight + bias elements
    nonzero: int  # non-zero weight elements
    flops: int
    sparse_flops: int


def layer_costs(model: onnx.ModelProto) -> list[LayerCost]:
    graph = import_graph(with_shapes(model))
    return [_cost(node) for node in layer_nodes(graph)]


def total_params(model: onnx.ModelProto) -> int:
    """Elements of every floating-point initializer (weights, biases, norm parameters)."""
    count = 0
    for init in model.graph.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        if np.issubdtype(dtype, np.floating):
            count += int(np.prod(init.dims, dtype=np.int64))
    return count


def _cost(node: gs.Node) -> LayerCost:
    weight = constant_values(node.inputs[1])
    out_axis, in_axis = weight_axes(node, weight)
    group = int(node.attrs.get("group", 1)) if node.op in ("Conv", "ConvTranspose") else 1
    positions = _positions(node)
    nonzero = int(np.count_nonzero(weight))
    bias = 0
    if len(node.inputs) > 2 and node.inputs[2].name:
        values = constant_values(node.inputs[2])
        bias = 0 if values is None else int(values.size)
    return LayerCost(
        node=node.name,
        name=layer_name(node),
        op=node.op,
        weight_shape=[int(d) for d in weight.shape],
        out_axis=out_axis,
        in_axis=in_axis,
        group=group,
        out_channels=int(weight.shape[out_axis]) * (group if node.op == "ConvTranspose" else 1),
        in_channels=int(weight.shape[in_axis]) * (group if node.op == "Conv" else 1),
        alive_out=_alive(weight, out_axis),
        alive_in=_alive(weight, in_axis),
        params=int(weight.size) + bias,
        nonzero=nonzero,
        flops=2 * int(weight.size) * positions,
        sparse_flops=2 * nonzero * positions,
    )


def _positions(node: gs.Node) -> int:
    """How many times per sample each weight is used (output pixels, input pixels for
    ConvTranspose, tokens for MatMul)."""
    if node.op == "Gemm":
        return 1
    tensor = node.inputs[0] if node.op == "ConvTranspose" else node.outputs[0]
    shape = static_shape(tensor) or []
    dims = shape[2:] if node.op in ("Conv", "ConvTranspose") else shape[1:-1]
    if not all(isinstance(d, int) for d in dims):
        return 0  # unknown spatial size: counted as zero rather than guessed
    return int(np.prod(dims, dtype=np.int64))


def _alive(weight: np.ndarray, axis: int) -> int:
    other = tuple(a for a in range(weight.ndim) if a != axis)
    return int(np.count_nonzero(np.any(weight != 0, axis=other)))
