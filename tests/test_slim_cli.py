"""``chase-deploy slim`` through the CLI: both modes, the report contract, and every bad input
(exit 2, one line, nothing written)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from chase_deploy.cli import main
from tests.slim_models import make_checkpoint


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_bad_input(result, pattern: str, folder: Path, before: set[Path]) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern in lines[0], lines[0]
    assert set(folder.rglob("*")) == before  # nothing written, no temp files left


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> dict:
    """A pruned resnet20 checkpoint slimmed once (TorchScript export: fast)."""
    folder = tmp_path_factory.mktemp("pruned")
    ckpt = folder / "final.pt"
    plan = make_checkpoint(ckpt, "resnet20", {}, [3, 8, 8], prune_skip=True, frac=0.4, seed=21)
    result = run("slim", ckpt, "--exporter", "torchscript", "--round-to", "4")
    assert result.exit_code == 0, result.output
    plan_path = folder / "plan.json"
    plan_path.write_text(json.dumps(plan))
    return {
        "folder": folder,
        "ckpt": ckpt,
        "plan": plan,
        "plan_path": plan_path,
        "dense": folder / "dense.onnx",
    }


def test_checkpoint_mode_writes_models_and_report(pruned):
    folder = pruned["folder"]
    report = json.loads((folder / "slim_report.json").read_text())
    assert report["lossless"] is True and report["max_abs_diff"] <= 1e-4 * max(
        1, report["max_abs_reference"]
    )
    assert report["exporter"] == "torchscript" and report["opset"] == 18 and report["round_to"] == 4
    assert report["flops"]["dense"] > report["flops"]["slim"] > 0
    assert report["flops"]["sparse"] <= report["flops"]["slim"]
    assert report["params"]["dense"] > report["params"]["slim"] > 0
    assert report["onnx"] == {
        "dense": str(folder / "dense.onnx"),
        "slim": str(folder / "slim.onnx"),
    }
    assert {"export_s", "surgery_s", "verify_s", "pt2_s", "total_s"} <= set(report["timings"])
    pt2 = report["pt2"]
    assert pt2["dense"] == str(folder / "dense.pt2")
    check = pt2["verification"]["dense"]
    assert check["lossless"] is True and check["verified_batch_sizes"] == [1, 3, 2]
    assert check["sha256"] == report["sha256"]["dense_pt2"]
    assert hashlib.sha256((folder / "dense.pt2").read_bytes()).hexdigest() == check["sha256"]
    assert pt2["slim"] == str(folder / "slim.pt2") and pt2["missing"] is None
    slim_check = pt2["verification"]["slim"]
    assert slim_check["lossless"] is True
    assert hashlib.sha256((folder / "slim.pt2").read_bytes()).hexdigest() == slim_check["sha256"]
    rows = {r["name"]: r for r in report["layers"]}
    for key, entry in pruned["plan"]["layers"].items():
        row = rows[key]
        assert row["out_before"] == entry["out_channels"]
        assert row["out_after"] == len(row["kept"]) and row["out_after"] % 4 == 0
        assert set(entry["kept"]) <= set(row["kept"])
    slim = onnx.load(str(folder / "slim.onnx"))
    onnx.checker.check_model(slim, full_check=True)
    assert len(slim.graph.initializer) > 0


def test_checkpoint_mode_default_exporter_and_out_dir(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    make_checkpoint(ckpt, "resnet_quick", {"width": 4}, [1, 8, 8], seed=22)
    out = tmp_path / "deploy"
    result = run("slim", ckpt, "--out", out, "--input-shape", "3,1,8,8")
    assert result.exit_code == 0, result.output
    assert "lossless" in result.stdout
    report = json.loads((out / "slim_report.json").read_text())
    assert report["exporter"] == "dynamo" and report["input_shape"] == [3, 1, 8, 8]
    assert sorted(p.name for p in out.iterdir()) == [
        "dense.onnx",
        "dense.pt2",
        "slim.onnx",
        "slim.pt2",
        "slim_report.json",
    ]
    assert "note: slim.pt2 not written" not in result.stderr


def test_onnx_mode_writes_slim_model_and_report(pruned, tmp_path):
    out = tmp_path / "cut.onnx"
    result = run("slim", pruned["dense"], "--plan", pruned["plan_path"], "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cut.report.json").read_text())
    assert report["lossless"] is True and report["round_to"] == 1
    rows = {r["name"]: r for r in report["layers"]}
    for key, entry in pruned["plan"]["layers"].items():
        assert rows[key]["out_after"] == len(entry["kept"])
    assert onnx.load(str(out)).graph.input[0].name == "input"


def test_onnx_mode_without_a_plan_removes_the_zero_channels(pruned, tmp_path):
    """The masked export of a Chase run holds its pruned channels as zeros (rows and the columns
    that read them): slim finds them without the plan and removes at least those, losslessly."""
    out = tmp_path / "zeros.onnx"
    result = run("slim", pruned["dense"], "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "zeros.report.json").read_text())
    assert report["lossless"] is True and report["plan_path"] is None
    assert report["plan_source"] == "the model's zero channels"
    rows = {r["name"]: r for r in report["layers"]}
    for key, entry in pruned["plan"]["layers"].items():
        assert set(rows[key]["kept"]) <= set(entry["kept"]), key
    assert report["params"]["slim"] < report["params"]["dense"]


def write_plan(path: Path, plan: dict) -> Path:
    path.write_text(json.dumps(plan))
    return path


def edited_plan(pruned, key="layer1.0.conv1", **entry) -> dict:
    plan = json.loads(json.dumps(pruned["plan"]))
    plan["layers"][key].update(entry)
    return plan


def tiny_softmax_model(path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "p.weight")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "p.weight"], ["a"], name="conv"),
            helper.make_node("Softmax", ["a"], ["y"], axis=1, name="over_c"),
        ],
        "t",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(path))


BAD_PLANS = {
    "not in the graph": lambda p: {
        **p["plan"],
        "layers": {**p["plan"]["layers"], "layer9.conv": {"out_channels": 4, "kept": [0]}},
    },
    "out of range": lambda p: edited_plan(p, kept=[0, 1, 16]),
    "twice": lambda p: edited_plan(p, kept=[0, 1, 1, 2]),
    "is empty": lambda p: edited_plan(p, kept=[]),
    "out_channels 32 disagrees": lambda p: edited_plan(p, out_channels=32),
    "same kept set": lambda p: edited_plan(p, key="layer1.1.conv2", kept=[0, 1, 2]),
}


@pytest.mark.parametrize("message", sorted(BAD_PLANS))
def test_bad_plans_exit_2_and_write_nothing(pruned, tmp_path, message):
    plan = write_plan(tmp_path / "plan.json", BAD_PLANS[message](pruned))
    before = set(tmp_path.rglob("*"))
    result = run("slim", pruned["dense"], "--plan", plan, "--out", tmp_path / "out.onnx")
    assert_bad_input(result, message, tmp_path, before)


def test_bad_files_exit_2_and_write_nothing(pruned, tmp_path):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not a model\n" * 10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(pruned["dense"].read_bytes()[:5000])
    bad_json = tmp_path / "plan.txt"
    bad_json.write_text("{'layers': oops")
    cut_ckpt = tmp_path / "cut.pt"
    cut_ckpt.write_bytes(pruned["ckpt"].read_bytes()[:3000])
    softmax_model = tmp_path / "softmax.onnx"
    tiny_softmax_model(softmax_model)
    softmax_plan = write_plan(
        tmp_path / "softmax.json",
        {
            "format": "chase-channel-plan",
            "version": 1,
            "layers": {"p": {"out_channels": 4, "kept": [0, 2]}},
        },
    )
    out = tmp_path / "out.onnx"
    before = set(tmp_path.rglob("*"))
    cases = [
        (("slim", not_onnx, "--plan", pruned["plan_path"], "--out", out), "not an ONNX model"),
        (
            ("slim", truncated, "--plan", pruned["plan_path"], "--out", out),
            "not an ONNX model or truncated",
        ),
        (("slim", pruned["dense"], "--plan", bad_json, "--out", out), "not JSON"),
        (
            ("slim", softmax_model, "--plan", softmax_plan, "--out", out),
            "node over_c (Softmax) normalizes over the channel axis",
        ),
        (("slim", softmax_model, "--out", out), "no channel is exactly zero"),
        (("slim", pruned["dense"], "--plan", pruned["plan_path"]), "--out SLIM.onnx is required"),
        (("slim", tmp_path / "missing.pt"), "no such file"),
        (("slim", cut_ckpt), "not a readable torch checkpoint (truncated or corrupt?)"),
        (
            ("slim", pruned["dense"], "--plan", pruned["plan_path"], "--out", tmp_path),
            "is a directory",
        ),
        (("slim", pruned["ckpt"], "--out", bad_json), "is a file"),
    ]
    for args, message in cases:
        assert_bad_input(run(*args), message, tmp_path, before)


def test_checkpoint_problems_exit_2(tmp_path):
    plain = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    no_shape = tmp_path / "noshape.pt"
    make_checkpoint(no_shape, "mlp", {"input_size": 8, "hidden": [8]}, input_shape=None)
    before = set(tmp_path.rglob("*"))
    assert_bad_input(run("slim", plain), "not a chase checkpoint", tmp_path, before)
    assert_bad_input(run("slim", no_shape), "pass --input-shape", tmp_path, before)
    assert_bad_input(
        run("slim", no_shape, "--input-shape", "1,x"), "--input-shape", tmp_path, before
    )


def test_lossy_result_is_refused_unless_allowed(pruned, tmp_path):
    dense = onnx.load(str(pruned["dense"]))
    consumer = next(i for i in dense.graph.initializer if i.name == "layer1.0.conv2.weight")
    values = numpy_helper.to_array(consumer).copy()
    values[:] = 1.0  # the pruned channels are read again: removing them changes the output
    consumer.CopyFrom(numpy_helper.from_array(values, consumer.name))
    lossy = tmp_path / "lossy.onnx"
    onnx.save(dense, str(lossy))
    out = tmp_path / "out.onnx"
    before = set(tmp_path.rglob("*"))
    result = run("slim", lossy, "--plan", pruned["plan_path"], "--out", out)
    assert_bad_input(result, "not lossless", tmp_path, before)
    result = run("slim", lossy, "--plan", pruned["plan_path"], "--out", out, "--allow-lossy")
    assert result.exit_code == 0 and out.is_file()
    assert "NOT lossless" in result.stdout
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["lossless"] is False and report["max_abs_diff"] > 1e-3
