"""ONNX channel surgery: remove the channels a plan prunes, on the graph alone.

``slim_model`` finds each plan key's layer, follows the kept channels through the graph
(``chase_deploy.graph.walk``), optionally widens kept sets to a multiple of ``round_to``, slices every
affected constant, then clears stale shapes, re-infers them and runs the full ONNX checker. Graph
inputs and outputs (and so the dynamic batch axis) are never touched.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from chase_deploy.graph.completion import Added, Disagree, complete
from chase_deploy.graph.graph_groups import GraphGroups, graph_groups
from chase_deploy.graph.plan_rounding import round_plan
from chase_deploy.graph.reading import (
    constant_name,
    constant_values,
    find_layers,
    import_graph,
    weight_axes,
    with_shapes,
)
from chase_deploy.graph.stops import ChannelStop
from chase_deploy.graph.tracks import Flow
from chase_deploy.graph.walk import walk
from train.channel_axes import grouped_columns
from train.errors import BadInput, one_line
from train.plan import ChannelPlan


@dataclass
class SlimResult:
    model: onnx.ModelProto
    plan: ChannelPlan  # the plan applied, after completion and rounding
    coupled: list[list[str]]  # plan layers that share one channel stream
    seconds: float
    added: list[Added] = field(default_factory=list)  # layers the graph forced into the plan
    notes: list[str] = field(default_factory=list)  # what the user should know (rounding)


def slim_model(model: onnx.ModelProto, plan: ChannelPlan, round_to: int = 1) -> SlimResult:
    """Return a physically smaller copy of ``model`` without the channels ``plan`` prunes."""
    start = time.perf_counter()
    graph = import_graph(with_shapes(model))
    probed: list[GraphGroups] = []

    def groups() -> GraphGroups:  # probed once, only when needed
        if not probed:
            probed.append(graph_groups(graph))
        return probed[0]

    layers = find_layers(graph, list(plan.layers))
    _check_widths(layers, plan)
    plan, layers, flow, added = _run_completing(graph, layers, plan, groups)
    notes: list[str] = []
    if round_to > 1:
        plan, notes = round_plan(plan, layers, flow, round_to, groups)
        flow = _run(graph, layers, plan)
    _apply(graph, flow)
    slim = _finish(graph, model)
    coupled = sorted(sorted(group) for group in flow.coupled)
    return SlimResult(slim, plan, coupled, time.perf_counter() - start, added, notes)


def _run_completing(
    graph: gs.Graph,
    layers: dict[str, list[gs.Node]],
    plan: ChannelPlan,
    groups: Callable[[], GraphGroups],
) -> tuple[ChannelPlan, dict[str, list[gs.Node]], Flow, list[Added]]:
    """The plan's walk; where it stops at a coupled layer the plan leaves out, the plan is
    completed with what the graph forces (``completion``) and walked again."""
    try:
        return plan, layers, _run(graph, layers, plan), []
    except ChannelStop as stop:
        try:
            completed, added = complete(graph, plan, layers, groups())
        except Disagree:
            raise stop from None
        if not added:
            raise
    layers = find_layers(graph, list(completed.layers))
    return completed, layers, _run(graph, layers, completed), added


def _check_widths(layers: dict[str, list[gs.Node]], plan: ChannelPlan) -> None:
    for key, nodes in layers.items():
        for node in nodes:
            weight = constant_values(node.inputs[1])
            width = weight.shape[weight_axes(node, weight)[0]]
            if width != plan.layers[key].out_channels:
                raise BadInput(
                    f"plan layer {key!r}: out_channels {plan.layers[key].out_channels} disagrees "
                    f"with the graph, whose {node.op} {node.name} has {width} output channels; "
                    f"the plan was made for another model"
                )


def _run(graph: gs.Graph, layers: dict[str, list[gs.Node]], plan: ChannelPlan) -> Flow:
    starts: dict[int, tuple[str, np.ndarray]] = {}
    for key, nodes in layers.items():
        entry = plan.layers[key]
        if not entry.pruned:
            continue
        for node in nodes:
            if id(node) in starts:
                raise BadInput(
                    f"plan layers {starts[id(node)][0]!r} and {key!r} name the same layer"
                )
            starts[id(node)] = (key, np.asarray(entry.kept, dtype=np.int64))
    return walk(graph, starts).flow


def _apply(graph: gs.Graph, flow: Flow) -> None:
    names = set(graph.tensors())
    made: dict[tuple, gs.Constant] = {}  # one constant per (original, new values): shared
    for edit in flow.slices:
        values = constant_values(edit.node.inputs[edit.index])
        if edit.segments > 1:
            new = _take_grouped(values, edit.indices, edit.segments)
        else:
            new = np.take(values, edit.indices, axis=edit.axis)
        _replace(graph, names, made, edit.node, edit.index, new)
    for edit in flow.values:
        _replace(graph, names, made, edit.node, edit.index, edit.values)
    for edit in flow.attrs:
        if edit.value is None:
            edit.node.attrs.pop(edit.name, None)
        else:
            edit.node.attrs[edit.name] = edit.value


def _take_grouped(weight: np.ndarray, kept: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's weight [out, in/groups, k...] reading only the ``kept`` input channels
    (the same number in every group): each group's rows keep their own group's columns."""
    rows, per = weight.shape[0] // groups, weight.shape[1]
    blocks = [
        np.take(weight[g * rows : (g + 1) * rows], cols, axis=1)
        for g, cols in enumerate(grouped_columns(kept, groups, per))
    ]
    return np.concatenate(blocks, axis=0)


def _replace(
    graph: gs.Graph,
    names: set[str],
    made: dict[tuple, gs.Constant],
    node: gs.Node,
    index: int,
    values: np.ndarray,
) -> None:
    """Give ``node.inputs[index]`` new values. A constant shared with other nodes is copied,
    and readers of one constant that need the same new values share one copy."""
    if index == len(node.inputs):
        base = f"{node.name}.input{index}"
        node.inputs.append(gs.Constant(_fresh(names, f"{base}.slim"), np.ascontiguousarray(values)))
        return
    tensor = node.inputs[index]
    key = (constant_name(tensor), values.dtype.str, values.shape, _digest(values))
    if key in made and np.array_equal(made[key].values, values):  # not edited since
        node.inputs[index] = made[key]
        return
    if isinstance(tensor, gs.Constant) and all(user is node for user in tensor.outputs):
        tensor.values = np.ascontiguousarray(values)
        made[key] = tensor
        return
    copy = gs.Constant(_fresh(names, f"{constant_name(tensor)}.slim"), np.ascontiguousarray(values))
    node.inputs[index] = made[key] = copy


def _fresh(names: set[str], name: str) -> str:
    """``name``, or ``name1``, ``name2``... whichever the graph does not use yet."""
    base, n = name, 1
    while name in names:
        name, n = f"{base}{n}", n + 1
    names.add(name)
    return name


def _digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def _finish(graph: gs.Graph, original: onnx.ModelProto) -> onnx.ModelProto:
    """Drop stale shapes, export, re-infer and check; graph inputs/outputs stay as they were."""
    io = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in io:
            tensor.shape = None
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph, do_type_check=False, opset_imports=list(original.opset_import))
    model.ir_version = original.ir_version
    model.producer_name, model.producer_version = original.producer_name, original.producer_version
    for prop in original.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    try:
        model = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx raises several C++-backed types
        raise BadInput(
            f"the slimmed graph fails ONNX checks ({one_line(e)}); an op between pruned layers is not "
            f"channel-preserving: leave those layers out of the plan"
        ) from None
    _check_outputs(original, model)
    return model


def _check_outputs(original: onnx.ModelProto, slim: onnx.ModelProto) -> None:
    def dims(model: onnx.ModelProto) -> list:
        return [
            (o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
            for o in model.graph.output
        ]

    if dims(original) != dims(slim) or [i.name for i in original.graph.input] != [
        i.name for i in slim.graph.input
    ]:
        raise BadInput(
            "the slimmed graph's inputs/outputs differ from the original's; leave the last layer out of the plan"
        )
