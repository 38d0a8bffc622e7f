"""One rule per ONNX op type, registered with a decorator.

A rule is a function ``rule(state, node, live, start)``: ``state`` is the pass's ``PassState``,
``live`` the node's inputs that carry tracks as (input index, track), ``start`` the (plan key,
kept channels) when the node is a layer the pass starts at, else None. It sets the tracks of the
node's outputs (``state.set``), records edits (``state.slice``, ``state.flow.values``) and
raises a ``ChannelStop`` (``chase_deploy.graph.stops``) for what it cannot follow. A node with
no rule stops the pass when a track reaches it.

Adding an op is one decorated function, anywhere that is imported before the pass runs::

    from chase_deploy.graph.registry import rule

    @rule("Tan")
    def tan(state, node, live, start):
        state.set(node.outputs[0], live[0][1])  # each channel on its own: pass the track on

The built-in rules live in ``chase_deploy.graph.rules``.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_graphsurgeon as gs

from chase_deploy.graph.state import Live, PassState, Start

Rule = Callable[[PassState, gs.Node, Live, Start | None], None]

RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the rule of every op type in ``ops``."""

    def register(fn: Rule) -> Rule:
        for op in ops:
            if op in RULES:
                raise ValueError(f"op {op} already has a channel rule ({RULES[op].__name__})")
            RULES[op] = fn
        return fn

    return register
