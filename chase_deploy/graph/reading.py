"""Reading an ONNX graph for the channel engine: loading with clear errors, shapes, constants, and
finding the layer a plan key names.

Everything here is read-only; ``surgery`` decides what to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.json_format import ParseError
from google.protobuf.message import DecodeError

from train.errors import BadInput, one_line

# Ops whose weight input (index 1) defines a layer a plan can name.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check a model file; a missing, truncated or foreign file is ``BadInput``."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ParseError, ValueError, RuntimeError, OSError) as e:
        raise BadInput(
            f"{path}: not an ONNX model or truncated ({one_line(e, 200)}); export it again"
        ) from None
    return check_loaded(model, str(path))


def check_loaded(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """A protobuf that parsed can still be a foreign or cut-short file: check it is a model."""
    if not model.graph.node or not model.graph.output:
        raise BadInput(f"{source}: not an ONNX model or truncated (no graph nodes/outputs)")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise BadInput(f"{source}: invalid ONNX model ({one_line(e, 200)})") from None
    return model


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every intermediate shape inferred (ranks and static dims drive the rules)."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # onnx raises several types from C++
        raise BadInput(f"ONNX shape inference failed on the model: {one_line(e, 200)}") from None


def with_input_dims(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """A copy whose dynamic non-batch input axes take the sizes in ``shapes`` (the batch axis
    stays as it is): shapes, and so FLOPs, follow through a graph exported with dynamic H/W."""
    sized = onnx.ModelProto()
    sized.CopyFrom(model)
    for inp in sized.graph.input:
        given = shapes.get(inp.name)
        dims = inp.type.tensor_type.shape.dim
        if given is None or len(given) != len(dims):
            continue
        for axis, dim in enumerate(dims):
            if axis > 0 and not dim.HasField("dim_value"):
                dim.dim_value = int(given[axis])
    return sized


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """The graph, each node annotated with the PyTorch module that emitted it (``torch_module``:
    (module path, class name), from the dynamo exporter's metadata; None when absent)."""
    modules = node_modules(model)
    graph = gs.import_onnx(model)
    for node in graph.nodes:
        node.torch_module = modules.get(node.name)
    graph.toposort()
    return graph


SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"


def node_modules(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Node name -> (module path, module class) of the innermost module that emitted the node,
    read from the metadata torch's dynamo exporter writes (``name_scopes``, ``class_hierarchy``:
    one entry per enclosing module, then the op itself)."""
    out: dict[str, tuple[str, str]] = {}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.name] = counts.get(node.name, 0) + 1
    for node in model.graph.node:
        if not node.name or counts[node.name] > 1:
            continue
        props = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = ast.literal_eval(props.get(SCOPES_KEY, "[]"))
            classes = ast.literal_eval(props.get(CLASSES_KEY, "[]"))
        except (ValueError, SyntaxError):
            continue
        if len(scopes) >= 2 and len(classes) == len(scopes) and scopes[-2]:
            out[node.name] = (str(scopes[-2]), str(classes[-2]))
    return out


def metadata_layer(node: gs.Node) -> str | None:
    """The Conv/Linear module that emitted ``node``, by exporter metadata (None if unknown)."""
    meta = getattr(node, "torch_module", None)
    if meta is None:
        return None
    path, cls = meta
    short = cls.rsplit(".", 1)[-1]
    return path if ("Conv" in short or "Linear" in short) else None


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a tensor that is a constant, directly, via a Constant node or an Identity."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Identity":
        return constant_values(node.inputs[0])
    if node.op == "Constant":
        value = node.attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
        for key in ("value_float", "value_int"):
            if key in node.attrs:
                return np.asarray(node.attrs[key])
        for key in ("value_floats", "value_ints"):
            if key in node.attrs:
                return np.asarray(list(node.attrs[key]))
    return None


def constant_name(tensor: gs.Tensor) -> str:
    """The initializer name behind ``tensor`` (through Identity nodes), else its own name."""
    if not isinstance(tensor, gs.Constant) and len(tensor.inputs) == 1:
        node = tensor.inputs[0]
        if node.op == "Identity" and node.inputs:
            return constant_name(node.inputs[0])
    return tensor.name


def torchscript_module_path(node_name: str) -> str | None:
    """``/layer2/layer2.0/downsample/downsample.0/Conv`` -> ``layer2.0.downsample.0``: each
    TorchScript scope part is a child's attribute name, and children of a container repeat the
    container's own name (``layer2.0`` under ``layer2``)."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2 or not node_name.startswith("/"):
        return None
    path, last = "", ""
    for part in parts[:-1]:
        if path and last and part.startswith(last + "."):
            path += part[len(last) :]
        else:
            path = f"{path}.{part}" if path else part
        last = part
    return path or None


def layer_name(node: gs.Node) -> str:
    """What a plan calls this layer: its weight initializer without ``.weight``, else the
    TorchScript module path or the module the exporter's metadata names, else the node name."""
    if node.op in LAYER_OPS and len(node.inputs) > 1:
        name = constant_name(node.inputs[1])
        if name.endswith(".weight"):
            return name[: -len(".weight")]
        module = torchscript_module_path(node.name) or metadata_layer(node)
        if module:
            return module
        if constant_values(node.inputs[1]) is not None and not name.startswith("onnx::"):
            return name
    return torchscript_module_path(node.name) or node.name


def weight_axes(node: gs.Node, weight: np.ndarray) -> tuple[int, int]:
    """(output-channel axis, input-channel axis) of a layer's weight (its input 1).

    The one place this ONNX fact is written down: Conv weights are [out, in/group, k...],
    ConvTranspose [in, out/group, k...], Gemm [out, in] with ``transB`` else [in, out], MatMul
    [..., in, out]. Slicing, rounding scores and FLOP counts all ask here.
    """
    if node.op == "ConvTranspose":
        return 1, 0
    if node.op == "Gemm":
        return (0, 1) if node.attrs.get("transB", 0) else (1, 0)
    if node.op == "MatMul":
        return weight.ndim - 1, weight.ndim - 2
    return 0, 1


def layer_nodes(graph: gs.Graph) -> list[gs.Node]:
    """Every Conv/ConvTranspose/Gemm/MatMul whose weight (input 1) is a constant."""
    return [
        n
        for n in graph.nodes
        if n.op in LAYER_OPS and len(n.inputs) > 1 and constant_values(n.inputs[1]) is not None
    ]


def find_layers(graph: gs.Graph, keys: list[str]) -> dict[str, list[gs.Node]]:
    """Map plan keys to their layer nodes: by weight initializer name ``KEY.weight`` or ``KEY``
    first, then by module path: the TorchScript node scope (fused weights lose their names
    there) or, for an anonymous weight, the dynamo exporter's metadata (a Linear on channels-last
    input is a MatMul whose weight is its folded transpose, ``val_N``)."""
    by_weight: dict[str, list[gs.Node]] = {}
    by_scope: dict[str, list[gs.Node]] = {}
    for node in layer_nodes(graph):
        names = {node.inputs[1].name, constant_name(node.inputs[1])}
        for name in names:
            by_weight.setdefault(name, []).append(node)
        module = torchscript_module_path(node.name)
        if not module and not any(n.endswith(".weight") for n in names):
            module = metadata_layer(node)  # an anonymous weight (a Linear's folded transpose)
        if module:
            by_scope.setdefault(module, []).append(node)
    found: dict[str, list[gs.Node]] = {}
    for key in keys:
        nodes = by_weight.get(f"{key}.weight") or by_weight.get(key) or by_scope.get(key)
        if not nodes:
            raise BadInput(
                f"plan layer {key!r} is not in the graph: no Conv/ConvTranspose/Gemm/MatMul weight "
                f"named {key}.weight or {key}; use the PyTorch module names the model was exported with"
            )
        found[key] = list({id(n): n for n in nodes}.values())
    return found


def static_shape(tensor: gs.Tensor) -> list[int | str | None] | None:
    """Dims as ints where known, symbol strings or None where not; None if the rank is unknown."""
    if isinstance(tensor, gs.Constant):
        return list(tensor.shape)
    if tensor.shape is None:
        return None
    return [
        d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None)
        for d in tensor.shape
    ]
