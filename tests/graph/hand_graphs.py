"""Hand-built ONNX graphs for the rule tests: a pruned Conv producer and the graph around it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chase_deploy.graph.surgery import slim_model
from chase_deploy.verify import compare
from train.plan import parse_plan

C = 6  # channels of the pruned layer
KEPT = [0, 2, 3, 5]
DROPPED = [1, 4]


def const(name: str, values) -> onnx.TensorProto:
    values = np.asarray(values)
    return numpy_helper.from_array(
        values.astype(np.int64 if values.dtype.kind == "i" else np.float32), name
    )


def build(nodes, inits, out_shape, out_name="y", in_shape=("N", 3, 8, 8)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def producer(rng, name="p", c=C):
    """Conv 3->c whose DROPPED rows and bias are zero (as Chase leaves them)."""
    w = rng.standard_normal((c, 3, 3, 3))
    b = rng.standard_normal(c)
    w[DROPPED] = 0
    b[DROPPED] = 0
    return (
        helper.make_node(
            "Conv",
            ["input", f"{name}.weight", f"{name}.bias"],
            ["t0"],
            pads=[1, 1, 1, 1],
            name=f"{name}_conv",
        ),
        [const(f"{name}.weight", w), const(f"{name}.bias", b)],
    )


def plan(**layers) -> dict:
    return {"format": "chase-channel-plan", "version": 1, "layers": layers}


def slim_ok(model, the_plan):
    result = slim_model(model, parse_plan(the_plan))
    check = compare(model, result.model, batch_sizes=(1, 2))
    assert check.lossless, check
    assert check.max_abs_reference > 0.1
    return result.model


def init_shapes(model) -> dict:
    return {i.name: tuple(i.dims) for i in model.graph.initializer}
