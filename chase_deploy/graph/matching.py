"""Which PyTorch module each layer node of the exported graph is.

The group analysis speaks in module names (the trainer's language), the walk in ONNX nodes. A
layer node matches the Conv/ConvTranspose/Linear module whose weight it holds: by its weight
initializer's name (``NAME.weight``) or the module the exporter's metadata names, checked
against the module's weight shape. A module called twice in forward (shared weights), a grouped
ConvTranspose and a node matching no module are excluded here, with the reason; a depthwise conv
is noted: it carries its input's channels instead of starting its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs
from torch import nn

from chase_deploy.graph.reading import (
    constant_name,
    constant_values,
    layer_name,
    layer_nodes,
    metadata_layer,
)
from train.channel_axes import CONV, CONV_TRANSPOSE

NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
)


@dataclass
class Layers:
    """The model's Conv/Linear modules matched to the graph's layer nodes."""

    modules: dict[str, nn.Module]
    layer_of: dict[int, str] = field(default_factory=dict)  # id(node) -> module name
    node_of: dict[str, gs.Node] = field(default_factory=dict)
    depthwise: set[str] = field(default_factory=set)
    excluded: dict[str, str] = field(default_factory=dict)  # module -> why it is not prunable

    def width(self, name: str) -> int:
        """Output channels of layer ``name``."""
        module = self.modules[name]
        if isinstance(module, nn.Linear):
            return module.out_features
        return module.out_channels

    def kind(self, name: str) -> str:
        """The member kind (``train.groups``) of layer ``name``."""
        module = self.modules[name]
        if isinstance(module, nn.Linear):
            return "linear"
        if isinstance(module, CONV_TRANSPOSE):
            return "conv_transpose"
        return "conv"


def match_layers(graph: gs.Graph, modules: dict[str, nn.Module]) -> Layers:
    """Map every Conv/Gemm/MatMul node to its module; a layer used twice is not prunable."""
    layers = Layers(modules)
    seen: dict[str, int] = {}
    for node in layer_nodes(graph):
        name = _module_of_layer(node, modules)
        if name is None:
            layers.excluded.setdefault(
                layer_name(node),
                f"ONNX node {node.name} ({node.op}) matches no Conv/Linear module of the model",
            )
            continue
        seen[name] = seen.get(name, 0) + 1
        layers.layer_of[id(node)] = name
        layers.node_of[name] = node
        module = modules[name]
        groups = getattr(module, "groups", 1)
        if groups > 1 and isinstance(module, CONV_TRANSPOSE):
            layers.excluded[name] = f"a grouped ConvTranspose (groups={groups})"
        elif groups > 1 and module.in_channels == groups:
            layers.depthwise.add(name)
    for name, count in seen.items():
        if count > 1:
            layers.excluded[name] = f"called {count} times in forward (shared weights)"
    return layers


def _module_of_layer(node: gs.Node, modules: dict[str, nn.Module]) -> str | None:
    weight = constant_name(node.inputs[1])
    candidates = [weight[: -len(".weight")]] if weight.endswith(".weight") else []
    meta = metadata_layer(node)
    if meta:
        candidates.append(meta)
    values = constant_values(node.inputs[1])
    for name in candidates:
        module = modules.get(name)
        if not isinstance(module, CONV + CONV_TRANSPOSE + (nn.Linear,)):
            continue
        shape = tuple(module.weight.shape)
        onnx_shape = tuple(values.shape)
        if node.op == "MatMul":
            onnx_shape = onnx_shape[::-1]
        elif node.op == "Gemm" and not node.attrs.get("transB", 0):
            onnx_shape = onnx_shape[::-1]
        if onnx_shape == shape:
            return name
    return None


def norm_module(node: gs.Node, modules: dict[str, nn.Module]) -> str | None:
    """The per-channel norm module a BatchNormalization/InstanceNormalization node is."""
    candidates = []
    weight = constant_name(node.inputs[1])
    if weight.endswith(".weight"):
        candidates.append(weight[: -len(".weight")])
    meta = getattr(node, "torch_module", None)
    if meta is not None:
        candidates.append(meta[0])
    for name in candidates:
        module = modules.get(name)
        if isinstance(module, NORMS):
            if isinstance(module, nn.GroupNorm) and module.num_groups != module.num_channels:
                continue
            return name
    return None
