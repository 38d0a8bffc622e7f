"""ONNX channel surgery on exported models: lossless slimming, coupling, rounding, shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from chase_deploy.export import export_onnx
from chase_deploy.graph.flops import layer_costs
from chase_deploy.graph.surgery import slim_model
from chase_deploy.verify import compare
from tests.derived_groups import groups_for
from tests.slim_models import ConcatNet, MobileBlock, VGGFlat, chase_prune, randomize_bn
from train.errors import BadInput
from train.models import create_model, list_models
from train.plan import parse_plan

# Small inputs keep every registry model fast; the ImageNet stem still leaves a 1x1 map.
REGISTRY = {
    "mlp": ({}, (2, 1, 28, 28)),
    "resnet20": ({}, (2, 3, 16, 16)),
    "resnet32": ({}, (2, 3, 8, 8)),
    "resnet50": ({"num_classes": 10}, (2, 3, 32, 32)),
    "resnet50_cifar": ({}, (2, 3, 8, 8)),
    "resnet_quick": ({"width": 8}, (2, 1, 16, 16)),
    "vgg16": ({}, (2, 3, 16, 16)),
    "vgg19": ({}, (2, 3, 16, 16)),
}


def weights(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {i.name: tuple(i.dims) for i in model.graph.initializer}


def slim_and_check(model, shape, plan, exporter="torchscript", round_to=1):
    exported = export_onnx(model, shape, exporter=exporter)
    result = slim_model(exported.model, parse_plan(plan), round_to=round_to)
    check = compare(
        exported.model, result.model, batch_sizes=(1, 3), reference_session=exported.session
    )
    assert check.lossless, check
    assert check.max_abs_reference > 0.1  # the comparison saw real outputs
    return exported.model, result


def test_registry_covers_every_model():
    assert sorted(REGISTRY) == list_models()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_model_slims_losslessly(name):
    kwargs, shape = REGISTRY[name]
    model = randomize_bn(create_model(name, **kwargs))
    groups = groups_for(name, shape[1:], **kwargs)
    plan = chase_prune(model, groups, frac=0.4, seed=1)
    dense, result = slim_and_check(model, shape, plan)
    before, after = weights(dense), weights(result.model)
    for key, entry in plan["layers"].items():
        assert after[f"{key}.weight"][0] == len(entry["kept"]) < before[f"{key}.weight"][0]
    for group in groups:
        kept = len(plan["layers"][group.producers[0]]["kept"])
        for consumer in group.consumers:
            per_channel = before[f"{consumer}.weight"][1] // group.width
            assert after[f"{consumer}.weight"][1] == kept * per_channel
    assert sum(np.prod(s) for s in after.values()) < sum(np.prod(s) for s in before.values())


@pytest.mark.parametrize("name", ["resnet20", "resnet_quick"])
def test_prune_skip_slims_whole_residual_streams(name):
    kwargs, shape = REGISTRY[name]
    model = randomize_bn(create_model(name, **kwargs))
    groups = groups_for(name, shape[1:], True, **kwargs)
    streams = [g for g in groups if g.kind == "stream"]
    assert streams
    plan = chase_prune(model, groups, frac=0.3, seed=2)
    dense, result = slim_and_check(model, shape, plan)
    after = weights(result.model)
    for stream in streams:
        kept = len(plan["layers"][stream.producers[0]]["kept"])
        for producer in stream.producers:
            assert after[f"{producer}.weight"][0] == kept
        assert sorted(stream.producers) in result.coupled or any(
            set(stream.producers) <= set(c) for c in result.coupled
        )
    assert after["fc.weight"][1] == len(plan["layers"][streams[-1].producers[0]]["kept"])


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_vgg_with_flattened_classifier(exporter):
    model = randomize_bn(VGGFlat())
    plan = chase_prune(model, model.groups(), frac=0.5, seed=3)
    _, result = slim_and_check(model, (2, 3, 16, 16), plan, exporter=exporter)
    kept = len(plan["layers"]["features.4"]["kept"])
    assert weights(result.model)["classifier.1.weight"] == (10, kept * 16)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_mobilenet_block_depthwise_and_residual(exporter):
    model = randomize_bn(MobileBlock())
    plan = chase_prune(model, model.groups(prune_skip=True), frac=0.4, seed=4)
    dense, result = slim_and_check(model, (2, 3, 8, 8), plan, exporter=exporter)
    dw = next(
        n for n in result.model.graph.node if n.op_type == "Conv" and n.input[1].startswith("dw.")
    )
    kept = len(plan["layers"]["expand"]["kept"])
    assert (
        onnx.helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == kept
    )
    assert weights(result.model)["dw.weight"] == (kept, 1, 3, 3)
    assert weights(result.model)["head.weight"] == (5, len(plan["layers"]["stem"]["kept"]))
    assert ["project", "stem"] in result.coupled


def test_concat_maps_kept_channels_with_offsets():
    model = randomize_bn(ConcatNet())
    plan = model.prune(seed=5)
    _, result = slim_and_check(model, (2, 3, 8, 8), plan)
    ka, kb = (len(plan["layers"][k]["kept"]) for k in "ab")
    assert weights(result.model)["c.weight"] == (4, ka + kb, 3, 3)


def test_dynamic_batch_axis_and_io_are_preserved():
    model = randomize_bn(create_model("resnet_quick", width=8))
    plan = chase_prune(model, groups_for("resnet_quick", (1, 16, 16), width=8), seed=6)
    dense, result = slim_and_check(model, (2, 1, 16, 16), plan, exporter="dynamo")
    for a, b in (
        (dense.graph.input, result.model.graph.input),
        (dense.graph.output, result.model.graph.output),
    ):
        assert [(v.name, str(v.type)) for v in a] == [(v.name, str(v.type)) for v in b]
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    check = compare(dense, result.model, batch_sizes=(7,))
    assert check.lossless and check.batch_sizes == [7]


def test_round_to_widens_to_multiples_and_stays_lossless():
    model = randomize_bn(create_model("resnet20"))
    plan = chase_prune(model, groups_for("resnet20", (3, 16, 16)), frac=0.45, seed=7)
    dense, exact = slim_and_check(model, (2, 3, 16, 16), plan)
    _, rounded = slim_and_check(model, (2, 3, 16, 16), plan, round_to=8)
    for key, entry in rounded.plan.layers.items():
        original = plan["layers"][key]
        assert set(original["kept"]) <= set(entry.kept)
        assert len(entry.kept) % 8 == 0 or len(entry.kept) == entry.out_channels
        assert weights(rounded.model)[f"{key}.weight"][0] == len(entry.kept)
    flops = {
        name: sum(c.flops for c in layer_costs(m))
        for name, m in (("dense", dense), ("exact", exact.model), ("rounded", rounded.model))
    }
    assert flops["exact"] < flops["rounded"] < flops["dense"]


def test_round_to_prefers_the_largest_remaining_rows():
    model = randomize_bn(create_model("resnet20"))
    plan = chase_prune(model, groups_for("resnet20", (3, 16, 16)), frac=0.6, seed=8)  # 6 of 16
    layer = "layer1.0.conv1"
    kept = plan["layers"][layer]["kept"]
    spare = [c for c in range(16) if c not in kept][-1]  # give one pruned row a large weight
    with torch.no_grad():
        model.layer1[0].conv1.weight[spare] = 5.0
        model.layer1[0].conv2.weight[:, spare] = 0.0
    exported = export_onnx(model, (2, 3, 16, 16), exporter="torchscript")
    result = slim_model(exported.model, parse_plan(plan), round_to=8)
    assert spare in result.plan.layers[layer].kept
    assert len(result.plan.layers[layer].kept) == 8


def test_inconsistent_stream_plan_names_the_layers():
    model = randomize_bn(create_model("resnet20"))
    plan = chase_prune(model, groups_for("resnet20", (3, 16, 16), True), seed=9)
    plan["layers"]["layer1.1.conv2"] = {"out_channels": 16, "kept": list(range(10))}
    exported = export_onnx(model, (2, 3, 16, 16), exporter="torchscript")
    with pytest.raises(BadInput, match=r"layer1\.1\.conv2.*same kept set") as err:
        slim_model(exported.model, parse_plan(plan))
    assert "\n" not in str(err.value)


def test_partial_stream_plan_is_completed_with_the_stream():
    """A plan naming one conv of a residual stream gets every other conv summed into it (the
    stem, the other blocks' last convs), keeping the same channels, each addition named."""
    model = randomize_bn(create_model("resnet20"))
    exported = export_onnx(model, (2, 3, 16, 16), exporter="torchscript")
    plan = {
        "format": "chase-channel-plan",
        "version": 1,
        "layers": {"layer1.0.conv2": {"out_channels": 16, "kept": [0, 1, 2]}},
    }
    result = slim_model(exported.model, parse_plan(plan))
    assert [a.key for a in result.added] == ["conv1", "layer1.1.conv2", "layer1.2.conv2"]
    for a in result.added:
        assert a.entry.kept == (0, 1, 2) and a.partner == "layer1.0.conv2"
        assert result.plan.layers[a.key] == a.entry
    assert ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"] in result.coupled


def test_pruning_the_graph_output_is_refused():
    model = randomize_bn(create_model("resnet20"))
    exported = export_onnx(model, (2, 3, 16, 16), exporter="torchscript")
    plan = {
        "format": "chase-channel-plan",
        "version": 1,
        "layers": {"fc": {"out_channels": 10, "kept": [0, 1]}},
    }
    with pytest.raises(BadInput, match="graph output 'logits'"):
        slim_model(exported.model, parse_plan(plan))
