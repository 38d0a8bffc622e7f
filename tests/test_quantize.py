"""`chase-deploy quantize`: calibration data, the Q/DQ form of each target, the report's numbers
against an independent ONNX Runtime evaluation, and every refusal (exit 2, one line, nothing
written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from int8_models import prototype_net, residual_net
from onnx import numpy_helper

from chase_deploy.cli import main
from chase_deploy.int8.calibration import (
    CalibrationReader,
    calibration_batches,
    load_data,
    resolve_source,
)
from chase_deploy.int8.inspect_qdq import qdq_format
from chase_deploy.int8.quantize import Settings, quantize_file
from tests.conftest import write_recipe
from train.config import load_recipe
from train.data import build_data


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "tiny.yaml")


def quantize(*args):
    return CliRunner().invoke(main, ["quantize", *map(str, args)])


def refused(result, *fragments) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- calibration data ----------------------------------------------------------------------------


def test_calibration_batches_are_seeded_exact_and_untransformed(recipe):
    spec = load_recipe(recipe)
    data = load_data(spec, 100)
    batches = list(calibration_batches(data, 100))
    assert [len(b) for b in batches] == [64, 36]  # exactly 100, in batches of at most 64
    again = np.concatenate(list(calibration_batches(load_data(spec, 100), 100)))
    np.testing.assert_array_equal(np.concatenate(batches), again)  # same source, same images
    other = load_recipe(recipe, ["seed=4"])
    shifted = np.concatenate(list(calibration_batches(load_data(other, 100), 100)))
    assert not np.array_equal(shifted, again)  # the recipe's seed draws them
    # The evaluation transform of the training images at the seeded permutation's indices: no
    # crop or flip (the recipe's data.crop_padding and flip are on), only the normalization.
    loader = data.train
    order = loader._plan(0)
    indices = torch.cat(order)[:100]
    raw = loader.images[indices].float() / 255.0
    np.testing.assert_allclose(again, ((raw - 0.5) / 0.25).numpy(), atol=1e-6)
    assert len(set(indices.tolist())) == 100  # no image twice


def test_reader_feeds_the_input_and_counts(recipe):
    data = load_data(load_recipe(recipe), 40)
    reader = CalibrationReader(calibration_batches(data, 40), "input")
    fed = []
    while (item := reader.get_next()) is not None:
        assert list(item) == ["input"] and item["input"].dtype == np.float32
        fed.append(len(item["input"]))
    assert fed == [40] and reader.samples == 40


def test_too_many_samples_is_refused(recipe):
    data = load_data(load_recipe(recipe), 64)
    with pytest.raises(Exception, match="--calib-samples 500: the training data has 192 images"):
        calibration_batches(data, 500)


def test_source_is_a_run_dir_or_a_recipe(tmp_path, recipe):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(recipe.read_text())
    assert resolve_source(run).kind == "run" and resolve_source(recipe).kind == "recipe"
    assert resolve_source(run).recipe == load_recipe(recipe)


# -- Q/DQ form of each target --------------------------------------------------------------------


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _dq_of(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if tensor in n.output), None)


def test_cpu_form(tmp_path, recipe):
    net = residual_net(tmp_path / "r.onnx")
    quantize_file(net, recipe, tmp_path / "r.int8.onnx", Settings(samples=64))
    model = onnx.load(str(tmp_path / "r.int8.onnx"))
    inits = _initializers(model)
    fmt = qdq_format(model)
    assert fmt.activation_types == ("uint8",) and fmt.weight_types == ("int8",)
    # every weight per output channel: Conv weights on axis 0, the Gemm (transB=1) on axis 0
    assert fmt.weight_axes == {f"{w}_quantized": 0 for w in ("c1.w", "c2.w", "sc.w", "fc.w")}
    for name, axis in fmt.weight_axes.items():
        zero = inits[name.replace("_quantized", "_zero_point")]
        assert zero.dtype == np.int8 and not zero.any()  # symmetric int8 weights
        assert inits[name.replace("_quantized", "_scale")].shape == (inits[name].shape[axis],)
    assert all(fmt.quantized_layers[n] == (True, True) for n in ("c1", "c2", "sc", "fc"))
    # the Relus are folded into the uint8 ranges, the Add is quantized
    ops = [n.op_type for n in model.graph.node]
    assert "Relu" not in ops and "Add" in ops
    report = json.loads((tmp_path / "r.int8.json").read_text())
    assert report["onnxruntime_cpu"]["ops"]["QLinearConv"] == 3
    assert report["onnxruntime_cpu"]["ops"]["QLinearAdd"] == 1
    assert report["onnxruntime_cpu"]["ops"]["QGemm"] == 1
    assert report["int8_macs"]["share"] == 1.0 and report["int8_macs"]["layers_int8"] == 4


def test_tensorrt_form(tmp_path, recipe):
    net = residual_net(tmp_path / "r.onnx")
    out = tmp_path / "r.trt.onnx"
    quantize_file(net, recipe, out, Settings(target="tensorrt", samples=64))
    model = onnx.load(str(out))
    inits = _initializers(model)
    fmt = qdq_format(model)
    assert fmt.activation_types == ("int8",) and fmt.activation_zero_points == (0,)
    zero_points = [v for k, v in inits.items() if k.endswith("_zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert set(fmt.weight_axes.values()) == {0}
    assert not any(v.dtype == np.int32 for v in inits.values())  # biases stay fp32
    nodes = {n.name: n for n in model.graph.node}
    for layer in ("c1", "c2", "sc", "fc"):  # activation and weight through Q/DQ
        assert fmt.quantized_layers[layer] == (True, True)
    for tensor in nodes["add"].input:  # both inputs of the residual Add
        assert _dq_of(model, tensor).op_type == "DequantizeLinear"
    consumers = [n for n in model.graph.node for i in n.input if i in nodes["add"].output]
    assert [n.op_type for n in consumers] == ["Relu"]  # no Q/DQ on the Add's output
    assert "Relu" in [n.op_type for n in model.graph.node]  # kept: zero point 0 cannot fold it
    dq_outputs = [n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    readers = [sum(o in n.input for n in model.graph.node) for o in dq_outputs]
    assert set(readers) == {1}  # every Q/DQ pair has a single consumer
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["target"] == "tensorrt" and report["int8_macs"]["share"] == 1.0


# -- the report ----------------------------------------------------------------------------------


def test_report_matches_an_independent_evaluation(tmp_path, recipe):
    net = residual_net(tmp_path / "r.onnx", seed=2)
    result = quantize(net, "--calib", recipe, "--calib-samples", 96, "--allow-drop")
    assert result.exit_code == 0, result.output
    out = tmp_path / "r.int8.onnx"
    report = json.loads((tmp_path / "r.int8.json").read_text())
    spec = load_recipe(recipe)
    data = build_data(spec.data, spec.seed)
    predictions = {}
    labels = torch.cat([y for _, y in data.val.batches(0)]).numpy()
    for name, path in (("fp32", net), ("int8", out)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.cat([x for x, _ in data.val.batches(0)]).numpy()
        predictions[name] = session.run(None, {"input": x})[0].argmax(1)
    assert report["val_samples"] == len(labels) == 64
    assert report["top1_fp32"] == (predictions["fp32"] == labels).mean()
    assert report["top1_int8"] == (predictions["int8"] == labels).mean()
    assert report["agreement"] == (predictions["fp32"] == predictions["int8"]).mean()
    assert report["drop_points"] == pytest.approx(100 * (report["top1_fp32"] - report["top1_int8"]))
    assert report["calibration"]["samples"] == 96 and report["method"] == "minmax"
    assert report["target"] == "cpu" and report["calibration"]["seed"] == 3
    import hashlib

    assert report["sha256"]["fp32"] == hashlib.sha256(net.read_bytes()).hexdigest()
    assert report["sha256"]["int8"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert "top-1 fp32" in result.stdout and "wrote" in result.stdout


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods(tmp_path, recipe, method):
    net = prototype_net(tmp_path / "p.onnx")
    report = quantize_file(net, recipe, None, Settings(method=method, samples=64))
    assert report["method"] == method and report["top1_fp32"] == 1.0
    assert report["top1_int8"] >= 0.99 and (tmp_path / "p.int8.onnx").is_file()


# -- refusals ------------------------------------------------------------------------------------


def test_refusal_under_max_drop_writes_nothing(tmp_path, recipe):
    net = prototype_net(tmp_path / "p.onnx", nuisance=1e4)  # int8 cannot keep its scores apart
    before = files(tmp_path)
    result = quantize(net, "--calib", recipe, "--calib-samples", 64)
    refused(result, "points below fp32 100.00%", "--max-drop 1", "--allow-drop")
    assert files(tmp_path) == before
    allowed = quantize(net, "--calib", recipe, "--calib-samples", 64, "--allow-drop")
    assert allowed.exit_code == 0, allowed.output
    report = json.loads((tmp_path / "p.int8.json").read_text())
    assert report["top1_fp32"] == 1.0 and report["drop_points"] > 50 and report["allow_drop"]


def test_within_max_drop_is_written(tmp_path, recipe):
    net = prototype_net(tmp_path / "p.onnx")
    result = quantize(net, "--calib", recipe, "--max-drop", 0, "--calib-samples", 64)
    assert result.exit_code == 0, result.output
    assert files(tmp_path) == ["p.int8.json", "p.int8.onnx", "p.onnx", "tiny.yaml"]


def test_already_quantized_model(tmp_path, recipe):
    net = prototype_net(tmp_path / "p.onnx")
    assert quantize(net, "--calib", recipe, "--calib-samples", 64).exit_code == 0
    before = files(tmp_path)
    refused(
        quantize(tmp_path / "p.int8.onnx", "--calib", recipe),
        "p.int8.onnx is already quantized",
        "DequantizeLinear",
    )
    assert files(tmp_path) == before


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"channels": 1}, "synthetic images have 3 channel(s), "),
        ({"size": 16}, "synthetic images are 8x8"),
        ({"classes": 6}, "synthetic has 4 classes"),
    ],
)
def test_calibration_data_that_does_not_fit(tmp_path, recipe, kwargs, fragment):
    net = prototype_net(tmp_path / "p.onnx", **kwargs)
    before = files(tmp_path)
    refused(quantize(net, "--calib", recipe), fragment, "--calib")
    assert files(tmp_path) == before


def test_run_dir_without_data(tmp_path):
    net = prototype_net(tmp_path / "p.onnx")
    empty = tmp_path / "run"
    empty.mkdir()
    refused(quantize(net, "--calib", empty), "run directory without data", "recipe.yaml")
    refused(quantize(net, "--calib", tmp_path / "nowhere"), "no such run directory or recipe")
    assert files(tmp_path) == ["p.onnx", "run"]


def test_recipe_whose_data_is_missing(tmp_path):
    recipe = write_recipe(
        tmp_path / "c.yaml", data={"name": "cifar10", "root": str(tmp_path / "none")}
    )
    net = prototype_net(tmp_path / "p.onnx", size=32)
    refused(quantize(net, "--calib", recipe), "none")
    assert files(tmp_path) == ["c.yaml", "p.onnx"]


def test_unwritable_output(tmp_path, recipe):
    net = prototype_net(tmp_path / "p.onnx")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    refused(
        quantize(net, "--calib", recipe, "--out", blocker / "x.onnx"), "--out", "not a directory"
    )
    refused(quantize(net, "--calib", recipe, "--out", tmp_path / "x.bin"), "ending in .onnx")
    refused(quantize(net, "--calib", recipe, "--out", net), "is the input model")
    assert files(tmp_path) == ["blocker", "p.onnx", "tiny.yaml"]


def test_fixed_batch_model(tmp_path, recipe):
    net = prototype_net(tmp_path / "p.onnx", batch=16)
    refused(quantize(net, "--calib", recipe, "--calib-samples", 40), "fixed batch size of 16")
    report = quantize_file(net, recipe, None, Settings(samples=48))
    assert report["calibration"]["samples"] == 48 and report["val_samples"] == 64
    assert report["top1_fp32"] == 1.0
    net = prototype_net(tmp_path / "p20.onnx", batch=20)
    report = quantize_file(net, recipe, None, Settings(samples=None))  # what `run` asks for
    assert report["calibration"]["samples"] == 180  # whole batches of 20 among the 192 images


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--target", "gpu"], "--target 'gpu' is not one of cpu, tensorrt"),
        (["--method", "mse"], "--method 'mse' is not one of minmax, entropy, percentile"),
        (["--calib-samples", "0"], "--calib-samples '0'"),
        (["--max-drop", "-1"], "--max-drop '-1'"),
    ],
)
def test_bad_options(tmp_path, recipe, args, fragment):
    net = prototype_net(tmp_path / "p.onnx")
    refused(quantize(net, "--calib", recipe, *args), fragment)
    assert files(tmp_path) == ["p.onnx", "tiny.yaml"]
