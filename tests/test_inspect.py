"""``chase-deploy inspect`` and the FLOP/parameter counts behind it and behind slim_report.json."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from chase_deploy.cli import main
from chase_deploy.graph.flops import layer_costs, total_params
from tests.conftest import write_recipe
from tests.slim_models import make_checkpoint


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tiny(path=None) -> onnx.ModelProto:
    """Conv 3->4 (3x3, pad 1) on 8x8 with row 1 and 5 more weights zero, GAP, Gemm 4->2."""
    w = np.ones((4, 3, 3, 3), np.float32)
    w[1] = 0
    w[0, 0, 0, :] = 0  # 3 zeros
    w[2, 1, 1, 1:] = 0  # 2 zeros
    fc = np.ones((2, 4), np.float32)
    fc[:, 1] = 0
    graph = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["input", "conv.weight", "conv.bias"], ["a"], pads=[1, 1, 1, 1], name="conv"
            ),
            helper.make_node("GlobalAveragePool", ["a"], ["b"], name="gap"),
            helper.make_node("Flatten", ["b"], ["c"], name="flat"),
            helper.make_node(
                "Gemm", ["c", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc"
            ),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            numpy_helper.from_array(w, "conv.weight"),
            numpy_helper.from_array(np.zeros(4, np.float32), "conv.bias"),
            numpy_helper.from_array(fc, "fc.weight"),
            numpy_helper.from_array(np.zeros(2, np.float32), "fc.bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    if path is not None:
        onnx.save(model, str(path))
    return model


def test_flops_and_params_are_exact():
    conv, fc = layer_costs(tiny())
    assert conv.flops == 2 * 4 * 3 * 9 * 64 and fc.flops == 2 * 4 * 2
    assert conv.nonzero == 108 - 27 - 5 and conv.sparse_flops == 2 * 76 * 64
    assert (conv.alive_out, conv.alive_in, fc.alive_out, fc.alive_in) == (3, 3, 2, 3)
    assert conv.params == 108 + 4 and total_params(tiny()) == 108 + 4 + 8 + 2


def test_inspect_onnx_table_and_json(tmp_path):
    path = tmp_path / "tiny.onnx"
    tiny(path)
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    assert "conv" in result.stdout and "3/4" in result.stdout
    report = json.loads(run("inspect", path, "--json").stdout)
    conv = report["layers"][0]
    assert (
        conv["name"] == "conv"
        and conv["shape_before"] == [4, 3, 3, 3]
        and conv["shape_after"] == [3, 3, 3, 3]
    )
    assert conv["param_sparsity"] == round(32 / 108, 6) and conv["channel_sparsity"] == 0.25
    assert conv["flops_after"] == 2 * 3 * 3 * 9 * 64
    assert report["flops"]["dense"] == 2 * 4 * 3 * 9 * 64 + 16
    assert report["params"]["dense"] == 122


def test_inspect_checkpoint_matches_slim_report(tmp_path):
    ckpt = tmp_path / "final.pt"
    plan = make_checkpoint(ckpt, "resnet_quick", {"width": 8}, [1, 16, 16], seed=31)
    result = run("inspect", ckpt, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "checkpoint" and report["model"]["name"] == "resnet_quick"
    rows = {r["name"]: r for r in report["layers"]}
    for key, entry in plan["layers"].items():
        assert rows[key]["kept"] == entry["kept"]
        assert rows[key]["out_after"] == len(entry["kept"])
        assert rows[key]["channel_sparsity"] == round(
            1 - len(entry["kept"]) / entry["out_channels"], 6
        )
    assert run("slim", ckpt, "--exporter", "torchscript").exit_code == 0
    slim = json.loads((tmp_path / "slim_report.json").read_text())
    assert slim["flops"] == report["flops"] and slim["params"] == report["params"]
    table = run("inspect", ckpt).stdout
    assert (
        "layer1.0.conv1" in table and f"{len(plan['layers']['layer1.0.conv1']['kept'])}/8" in table
    )


def test_inspect_bad_paths_exit_2(tmp_path):
    garbage = tmp_path / "x.onnx"
    garbage.write_bytes(b"\x00\x01garbage")
    for path, message in ((tmp_path / "none.onnx", "no such file"), (garbage, "not an ONNX model")):
        result = run("inspect", path)
        assert result.exit_code == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("data", "shape", "classes"),
    [
        ({"name": "cifar10", "root": "not/downloaded/yet"}, [3, 32, 32], 10),
        ({"name": "cifar100", "root": "nowhere", "image_size": 16}, [3, 16, 16], 100),
        ({"name": "mnist", "root": "nowhere"}, [1, 28, 28], 10),
        ({"name": "fashion_mnist", "root": "nowhere"}, [1, 28, 28], 10),
        ({"name": "imagefolder", "root": "nowhere", "image_size": 32}, [3, 32, 32], 5),
    ],
)
def test_inspect_recipe_needs_no_data_on_disk(tmp_path, data, shape, classes):
    """The groups need only the input shape, which the recipe gives for built-in datasets
    (and for an ImageFolder tree once model.num_classes is set)."""
    model = {"name": "resnet_quick", "width": 4, "num_classes": classes}
    recipe = write_recipe(tmp_path / "r.yaml", model=model, data={"image_size": None, **data})
    report = json.loads(run("inspect", recipe, "--json").stdout)
    assert report["input_shape"] == shape and report["model"]["kwargs"]["num_classes"] == classes
    assert report["model"]["kwargs"]["in_channels"] == shape[0]
    names = [f"layer{i}.0.conv{j}" for i in (1, 2, 3) for j in (1, 2)]
    assert [g["name"] for g in report["groups"]] == names


def test_inspect_recipe_reads_the_data_only_when_it_alone_knows(tmp_path):
    """An ImageFolder tree's classes are its folders: without model.num_classes, the data is
    read, and a missing tree is refused in one line."""
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"name": "resnet_quick", "width": 4},
        data={"name": "imagefolder", "root": str(tmp_path / "missing"), "image_size": 32},
    )
    result = CliRunner().invoke(main, ["inspect", str(recipe)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "imagefolder" in line.lower()  # the data was read
