"""Surgery on hand-built ONNX graphs (models from no exporter and no registry): every
channel-preserving op, MatMul/ConvTranspose layers, and a clear refusal for ops that touch the
channel axis."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from chase_deploy.graph.surgery import slim_model
from tests.graph.hand_graphs import (
    DROPPED,
    KEPT,
    C,
    build,
    const,
    init_shapes,
    plan,
    producer,
    slim_ok,
)
from train.errors import BadInput
from train.plan import parse_plan


def test_every_channel_preserving_op_then_conv_consumer():
    rng = np.random.default_rng(0)
    conv, inits = producer(rng)
    consumer = rng.standard_normal((4, C, 1, 1))
    consumer[:, DROPPED] = 0
    nodes = [
        conv,
        helper.make_node("BatchNormalization", ["t0", "s", "bb", "m", "v"], ["t1"], name="bn"),
        helper.make_node("Mul", ["t1", "scale"], ["t2"], name="mul"),  # per-channel [1,C,1,1]
        helper.make_node("Add", ["t2", "shift"], ["t3"], name="add"),  # per-channel [C,1,1]
        helper.make_node("Sigmoid", ["t3"], ["t4"], name="sig"),
        helper.make_node("Pad", ["t4", "pads"], ["t5"], name="pad"),
        helper.make_node("Resize", ["t5", "", "scales"], ["t6"], name="resize"),
        helper.make_node(
            "MaxPool", ["t6"], ["t7"], kernel_shape=[2, 2], strides=[2, 2], name="pool"
        ),
        helper.make_node("Clip", ["t7", "lo", "hi"], ["t8"], name="clip"),
        helper.make_node("Dropout", ["t8"], ["t9"], name="drop"),
        helper.make_node("ReduceMean", ["t9", "axes"], ["t10"], keepdims=1, name="mean"),
        helper.make_node("Conv", ["t10", "c.weight"], ["y"], name="c_conv"),
    ]
    inits += [
        const("s", rng.standard_normal(C)),
        const("bb", rng.standard_normal(C)),
        const("m", rng.standard_normal(C)),
        const("v", rng.random(C) + 0.5),
        const("scale", rng.standard_normal((1, C, 1, 1))),
        const("shift", rng.standard_normal((C, 1, 1))),
        const("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
        const("scales", [1.0, 1.0, 2.0, 2.0]),
        const("lo", np.float32(0.1)),
        const("hi", np.float32(0.9)),
        const("axes", [2, 3]),
        const("c.weight", consumer),
    ]
    model = build(nodes, inits, ["N", 4, 1, 1])
    slim = slim_ok(model, plan(p={"out_channels": C, "kept": KEPT}))
    shapes = init_shapes(slim)
    k = len(KEPT)
    assert shapes["p.weight"] == (k, 3, 3, 3) and shapes["p.bias"] == (k,)
    assert shapes["s"] == shapes["m"] == shapes["v"] == (k,)
    assert shapes["scale"] == (1, k, 1, 1) and shapes["shift"] == (k, 1, 1)
    assert shapes["c.weight"] == (4, k, 1, 1)


def test_matmul_head_after_flatten_and_exact_key_names():
    """A model from no exporter: weights without ``.weight``, a MatMul classifier + bias Add."""
    rng = np.random.default_rng(1)
    conv, inits = producer(rng, name="stem")
    head = rng.standard_normal((C * 4, 3))  # flatten of [C, 2, 2] -> C*4 features
    for c in DROPPED:
        head[c * 4 : (c + 1) * 4] = 0
    nodes = [
        conv,
        helper.make_node("Relu", ["t0"], ["t1"], name="relu"),
        helper.make_node(
            "AveragePool", ["t1"], ["t2"], kernel_shape=[4, 4], strides=[4, 4], name="pool"
        ),
        helper.make_node("Flatten", ["t2"], ["t3"], axis=1, name="flat"),
        helper.make_node("MatMul", ["t3", "head_w"], ["t4"], name="mm"),
        helper.make_node("Add", ["t4", "head_b"], ["y"], name="bias"),
    ]
    inits += [const("head_w", head), const("head_b", rng.standard_normal(3))]
    model = build(nodes, inits, ["N", 3])
    slim = slim_ok(model, plan(stem={"out_channels": C, "kept": KEPT}))
    assert init_shapes(slim)["head_w"] == (len(KEPT) * 4, 3)


def test_matmul_producer_slices_columns_and_bias():
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((5, C))
    b1 = rng.standard_normal(C)
    w1[:, DROPPED] = 0
    w2 = rng.standard_normal((C, 2))
    w2[DROPPED] = 0
    nodes = [
        helper.make_node("MatMul", ["input", "fc1"], ["a"], name="mm1"),
        helper.make_node("Add", ["a", "fc1_b"], ["b"], name="add1"),
        helper.make_node("Tanh", ["b"], ["c"], name="tanh"),
        helper.make_node("MatMul", ["c", "fc2"], ["y"], name="mm2"),
    ]
    model = build(
        nodes, [const("fc1", w1), const("fc1_b", b1), const("fc2", w2)], ["N", 2], in_shape=("N", 5)
    )
    slim = slim_ok(model, plan(fc1={"out_channels": C, "kept": KEPT}))
    shapes = init_shapes(slim)
    assert shapes["fc1"] == (5, 4) and shapes["fc1_b"] == (4,) and shapes["fc2"] == (4, 2)


def test_conv_transpose_producer_and_consumer():
    rng = np.random.default_rng(3)
    up = rng.standard_normal((3, C, 2, 2))  # ConvTranspose weight: [in, out, kh, kw]
    up_b = rng.standard_normal(C)
    up[:, DROPPED] = 0
    up_b[DROPPED] = 0
    down = rng.standard_normal((C, 2, 2, 2))
    down[DROPPED] = 0
    nodes = [
        helper.make_node(
            "ConvTranspose", ["input", "up.weight", "up.bias"], ["a"], strides=[2, 2], name="up"
        ),
        helper.make_node("LeakyRelu", ["a"], ["b"], name="act"),
        helper.make_node("ConvTranspose", ["b", "down.weight"], ["y"], name="down"),
    ]
    model = build(
        nodes,
        [const("up.weight", up), const("up.bias", up_b), const("down.weight", down)],
        ["N", 2, 17, 17],
    )
    slim = slim_ok(model, plan(up={"out_channels": C, "kept": KEPT}))
    shapes = init_shapes(slim)
    assert shapes["up.weight"] == (3, 4, 2, 2) and shapes["down.weight"] == (4, 2, 2, 2)


def test_concat_on_a_spatial_axis_couples_like_an_add():
    rng = np.random.default_rng(4)
    conv, inits = producer(rng)
    nodes = [conv, helper.make_node("Concat", ["t0", "input"], ["y"], axis=2, name="cat")]
    model = build(nodes, inits, ["N", C, 16, 8])
    with pytest.raises(
        BadInput, match=r"node cat \(Concat\) couples p \(keeps 4 of 6\) with graph input input"
    ):
        slim_model(model, parse_plan(plan(p={"out_channels": C, "kept": KEPT})))


UNSUPPORTED = {
    "Gather": (
        [helper.make_node("Gather", ["t0", "idx"], ["y"], axis=1, name="op")],
        [const("idx", [0, 1, 2])],
        ["N", 3, 8, 8],
    ),
    "DepthToSpace": (
        [helper.make_node("DepthToSpace", ["t0"], ["y"], blocksize=1, name="op")],
        [],
        ["N", C, 8, 8],
    ),
    "Softmax": (
        [helper.make_node("Softmax", ["t0"], ["y"], axis=1, name="op")],
        [],
        ["N", C, 8, 8],
    ),
    "Reshape": (
        [helper.make_node("Reshape", ["t0", "shape"], ["y"], name="op")],
        [const("shape", [0, 2, 3, 64])],
        ["N", 2, 3, 64],
    ),
    "LRN": ([helper.make_node("LRN", ["t0"], ["y"], size=3, name="op")], [], ["N", C, 8, 8]),
    "ReduceMean": (
        [helper.make_node("ReduceMean", ["t0", "ax"], ["y"], keepdims=1, name="op")],
        [const("ax", [1])],
        ["N", 1, 8, 8],
    ),
}


@pytest.mark.parametrize("op", sorted(UNSUPPORTED))
def test_ops_touching_the_channel_axis_are_refused_by_name(op):
    rng = np.random.default_rng(5)
    conv, inits = producer(rng)
    nodes, extra, out_shape = UNSUPPORTED[op]
    model = build([conv, *nodes], inits + extra, out_shape)
    with pytest.raises(
        BadInput, match=rf"^node op \({op}\) .*channel axis of p \(keeps 4 of 6\)"
    ) as err:
        slim_model(model, parse_plan(plan(p={"out_channels": C, "kept": KEPT})))
    assert "\n" not in str(err.value)


def test_unpruned_plan_entries_leave_the_graph_alone():
    rng = np.random.default_rng(6)
    conv, inits = producer(rng)
    model = build(
        [conv, helper.make_node("Softmax", ["t0"], ["y"], axis=1, name="op")], inits, ["N", C, 8, 8]
    )
    slim = slim_ok(model, plan(p={"out_channels": C, "kept": list(range(C))}))
    assert init_shapes(slim)["p.weight"] == (C, 3, 3, 3)


def test_shared_constants_are_copied_before_slicing():
    rng = np.random.default_rng(7)
    conv, inits = producer(rng)
    consumer = rng.standard_normal((2, C, 1, 1))
    consumer[:, DROPPED] = 0
    nodes = [
        conv,
        helper.make_node("Mul", ["t0", "gain"], ["t1"], name="mul_pruned"),
        helper.make_node("Conv", ["t1", "c.weight"], ["t2"], name="c_conv"),
        helper.make_node("Mul", ["t2", "gain2"], ["t3"], name="mul_other"),
        helper.make_node("ReduceSum", ["input", "ax"], ["s"], keepdims=1, name="sum"),
        helper.make_node("Mul", ["s", "gain"], ["u"], name="mul_shared"),  # [N,1,8,8]*[1,C,1,1]
        helper.make_node("Concat", ["t3", "u"], ["y"], axis=1, name="cat"),
    ]
    inits += [
        const("gain", rng.standard_normal((1, C, 1, 1))),
        const("c.weight", consumer),
        const("gain2", rng.standard_normal((1, 2, 1, 1))),
        const("ax", [1]),
    ]
    model = build(nodes, inits, ["N", 2 + C, 8, 8])
    slim = slim_ok(model, plan(p={"out_channels": C, "kept": KEPT}))
    shapes = init_shapes(slim)
    assert shapes["gain"] == (1, C, 1, 1)  # the unpruned user still sees every channel
    assert (1, len(KEPT), 1, 1) in shapes.values()
