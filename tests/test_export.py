"""Export: names the plan can find, dynamic batch, agreement with PyTorch, for both exporters."""

from __future__ import annotations

import io
import warnings

import onnx
import pytest
import torch

from chase_deploy.export import export_onnx, restore_layer_names
from chase_deploy.graph.reading import torchscript_module_path
from chase_deploy.graph.surgery import slim_model
from chase_deploy.verify import compare
from tests.derived_groups import groups_for
from tests.slim_models import chase_prune, randomize_bn
from train.errors import BadInput
from train.models import create_model
from train.plan import parse_plan


def names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_contract(exporter):
    model = randomize_bn(create_model("resnet_quick", width=4))
    exported = export_onnx(model, (1, 1, 8, 8), exporter=exporter)
    proto = exported.model
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    assert next(o.version for o in proto.opset_import if o.domain == "") >= 18
    assert exported.exporter == exporter and exported.max_abs_diff_torch < 1e-4
    # BatchNorm is folded into the convs and the fused weights carry the module names.
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    for group in groups_for("resnet_quick", (1, 8, 8), True, width=4):
        for layer in group.producers + group.consumers:
            assert f"{layer}.weight" in names(proto)


def test_opset_below_18_is_refused():
    with pytest.raises(BadInput, match="opset 18"):
        export_onnx(create_model("mlp"), (1, 1, 28, 28), opset=17)


def test_module_paths_from_torchscript_node_names():
    assert torchscript_module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert (
        torchscript_module_path("/layer2/layer2.0/downsample/downsample.0/Conv")
        == "layer2.0.downsample.0"
    )
    assert torchscript_module_path("/features/features.10/Conv") == "features.10"
    assert torchscript_module_path("/fc/Gemm") == "fc"
    assert torchscript_module_path("node_Conv_12") is None


def raw_torchscript(model: torch.nn.Module, shape) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(shape),),
            buffer,
            dynamo=False,
            opset_version=18,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def test_torchscript_fused_weights_get_their_module_names_back():
    model = randomize_bn(create_model("resnet20"))
    proto = raw_torchscript(model, (2, 3, 8, 8))
    assert "layer2.0.downsample.0.weight" not in names(proto)
    renamed = restore_layer_names(proto)
    assert {"layer1.0.conv1.weight", "layer1.0.conv1.bias", "layer2.0.downsample.0.weight"} <= set(
        renamed.values()
    )
    assert all(old.startswith("onnx::") for old in renamed)
    onnx.checker.check_model(proto)


def test_surgery_finds_layers_of_an_unrenamed_torchscript_export_by_node_scope():
    model = randomize_bn(create_model("resnet20"))
    plan = chase_prune(model, groups_for("resnet20", (3, 16, 16), True), seed=11)
    proto = raw_torchscript(model, (2, 3, 8, 8))
    result = slim_model(proto, parse_plan(plan))
    check = compare(proto, result.model, batch_sizes=(1, 4))
    assert check.lossless
    conv = next(n for n in result.model.graph.node if n.name == "/layer1/layer1.0/conv1/Conv")
    weight = next(i for i in result.model.graph.initializer if i.name == conv.input[1])
    assert weight.dims[0] == len(plan["layers"]["layer1.0.conv1"]["kept"])
