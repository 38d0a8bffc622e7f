"""The rule registry: adding an op is one decorated function, and an op has one rule."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from chase_deploy.graph.registry import RULES, rule
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


def tan_model():
    rng = np.random.default_rng(11)
    conv, inits = producer(rng)
    consumer = rng.standard_normal((4, C, 1, 1))
    consumer[:, DROPPED] = 0
    nodes = [
        conv,
        helper.make_node("Tan", ["t0"], ["t1"], name="tan"),
        helper.make_node("Conv", ["t1", "c.weight"], ["y"], name="c_conv"),
    ]
    return build(nodes, [*inits, const("c.weight", consumer)], ["N", 4, 8, 8])


def test_an_op_without_a_rule_stops_the_walk_and_one_decorated_function_adds_it():
    model = tan_model()
    the_plan = plan(p={"out_channels": C, "kept": KEPT})
    with pytest.raises(BadInput, match=r"node tan \(Tan\) is an op chase-deploy does not slim"):
        slim_model(model, parse_plan(the_plan))
    assert "Tan" not in RULES
    try:

        @rule("Tan")
        def tan(state, node, live, start):
            state.set(node.outputs[0], live[0][1])  # each channel on its own

        shapes = init_shapes(slim_ok(model, the_plan))
    finally:
        RULES.pop("Tan", None)
    assert shapes["p.weight"] == (len(KEPT), 3, 3, 3)
    assert shapes["c.weight"] == (4, len(KEPT), 1, 1)


def test_an_op_has_one_rule():
    with pytest.raises(ValueError, match="op Relu already has a channel rule"):
        rule("Relu")(lambda state, node, live, start: None)
    assert RULES["Relu"].__name__ == "unary"
