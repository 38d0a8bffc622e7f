"""`slim` on the export forms users produce: a static batch, float16 models, dynamic height/width.

Each form is exported by torch.onnx (dynamo) from a small model pruned the way Chase leaves it,
then slimmed through the CLI; the rounding rules of low-precision outputs are checked on
hand-built graphs whose difference is known to be rounding only, or known to be real.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.export import Dim

from chase_deploy.cli import main
from chase_deploy.verify import RTOL, compare, float32_twin, rtol_for
from tests.slim_models import Group, MobileBlock, VGGFlat, chase_prune, randomize_bn


def _export(model: nn.Module, example: torch.Tensor, path: Path, dynamic=None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=["input"],
            output_names=["logits"],
            verbose=False,
        )
    return path


def _pruned(model: nn.Module, groups, tmp: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = randomize_bn(model)
    plan = chase_prune(model, groups(model), 0.5)
    path = tmp / "plan.json"
    path.write_text(json.dumps(plan))
    return model, path


def _slim(model_path: Path, plan: Path, *extra: str):
    out = model_path.with_name("slim.onnx")
    args = ["slim", str(model_path), "--plan", str(plan), "--out", str(out), *extra]
    result = CliRunner().invoke(main, args)
    report_path = out.with_name("slim.report.json")
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return result, report


BATCH = {0: Dim("batch", min=1, max=1024)}
BATCH_HW = {
    0: Dim("batch", min=1, max=1024),
    2: Dim("height", min=8, max=1024),
    3: Dim("width", min=8, max=1024),
}


def test_static_batch_is_verified_at_its_own_size(tmp_path: Path) -> None:
    model, plan = _pruned(MobileBlock(), lambda m: m.groups(), tmp_path)
    onnx_path = _export(model, torch.randn(4, 3, 16, 16), tmp_path / "static.onnx")
    assert onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    result, report = _slim(onnx_path, plan)
    assert result.exit_code == 0, result.output
    assert report["lossless"] and report["max_abs_diff"] <= RTOL
    assert report["verified_batch_sizes"] == [4, 4, 4]
    assert report["verified_input_shapes"] == {"input": [4, 3, 16, 16]}


def test_dynamic_height_width_takes_a_size_the_graph_accepts(tmp_path: Path) -> None:
    model, plan = _pruned(MobileBlock(), lambda m: m.groups(), tmp_path)
    onnx_path = _export(model, torch.randn(2, 3, 16, 16), tmp_path / "hw.onnx", {"x": BATCH_HW})
    result, report = _slim(onnx_path, plan)
    assert result.exit_code == 0, result.output
    assert report["lossless"] and report["verified_batch_sizes"] == [1, 3, 2]
    assert report["verified_input_shapes"] == {"input": [1, 3, 32, 32]}  # the first candidate
    assert report["flops"]["dense"] > report["flops"]["slim"] > 0  # counted at that size
    result, report = _slim(onnx_path, plan, "--input-shape", "2,3,24,20")
    assert result.exit_code == 0, result.output
    assert report["lossless"] and report["verified_input_shapes"] == {"input": [1, 3, 24, 20]}


def test_dynamic_height_width_of_a_flattening_classifier_is_refused_clearly(
    tmp_path: Path,
) -> None:
    """VGGFlat's classifier reads a 4x4 map, and the exporter computes the flattened size from
    the input's height and width: the channel-to-feature map is unknown, so say how to export."""
    model, plan = _pruned(VGGFlat(), lambda m: m.groups(), tmp_path)
    onnx_path = _export(model, torch.randn(2, 3, 16, 16), tmp_path / "vgg.onnx", {"x": BATCH_HW})
    result, report = _slim(onnx_path, plan)
    assert result.exit_code == 2 and report is None
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "export with a fixed height/width" in message


class Positional(nn.Module):
    """A learned 20x20 positional map added after the convs: 20x20 inputs only, a size no common
    candidate has, while nothing on the pruned path depends on the size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 4, 20, 20))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.bn(self.conv1(x)))) + self.pos
        return self.head(y.mean((2, 3)))


def test_dynamic_height_width_with_no_runnable_size_is_refused(tmp_path: Path) -> None:
    groups = lambda m: [Group(["conv1"], ["conv2"], 6)]  # noqa: E731
    model, plan = _pruned(Positional(), groups, tmp_path)
    onnx_path = _export(model, torch.randn(2, 3, 20, 20), tmp_path / "pos.onnx", {"x": BATCH})
    exported = onnx.load(str(onnx_path))  # torch.export fixes H/W at 20; the graph need not
    for axis, name in ((2, "height"), (3, "width")):
        exported.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = name
    del exported.graph.value_info[:]
    onnx.save(exported, str(onnx_path))
    result, report = _slim(onnx_path, plan)
    assert result.exit_code == 2 and report is None
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "dynamic 'input' axis 2 (height)" in message and "--input-shape N,C,H,W" in message
    result, report = _slim(onnx_path, plan, "--input-shape", "1,3,20,20")
    assert result.exit_code == 0, result.output
    assert report["lossless"] and report["verified_input_shapes"] == {"input": [1, 3, 20, 20]}


def test_input_shape_must_fit_the_models_fixed_axes(tmp_path: Path) -> None:
    model, plan = _pruned(MobileBlock(), lambda m: m.groups(), tmp_path)
    onnx_path = _export(model, torch.randn(2, 3, 16, 16), tmp_path / "b.onnx", {"x": BATCH})
    result, _ = _slim(onnx_path, plan, "--input-shape", "1,3,32,32")
    assert result.exit_code == 2
    assert "axis 2 of input 'input' is fixed at 16 in the model; give 16 there" in result.output


def test_float16_model_slims_and_reports_its_dtype(tmp_path: Path) -> None:
    model, plan = _pruned(VGGFlat(), lambda m: m.groups(), tmp_path)
    example = torch.randn(2, 3, 16, 16).half()
    onnx_path = _export(model.half(), example, tmp_path / "fp16.onnx", {"x": BATCH})
    result, report = _slim(onnx_path, plan)
    assert result.exit_code == 0, result.output
    assert report["lossless"] and report["output_dtype"] == "float16"
    assert report["float32_max_abs_diff"] <= RTOL * max(1.0, report["max_abs_reference"])
    assert "8 ulps of float16" in report["tolerance"]


def test_float16_model_with_live_pruned_channels_names_the_real_cause(tmp_path: Path) -> None:
    model, plan = _pruned(VGGFlat(), lambda m: m.groups(), tmp_path)
    with torch.no_grad():
        model.features[4].weight.fill_(0.5)  # the consumer reads the pruned channels after all
    example = torch.randn(2, 3, 16, 16).half()
    onnx_path = _export(model.half(), example, tmp_path / "fp16.onnx", {"x": BATCH})
    result, report = _slim(onnx_path, plan)
    assert result.exit_code == 2 and report is None
    assert "float16 outputs" in result.output
    assert (
        "the float32 twins differ too" in result.output
        and "consumers are not zero" in result.output
    )


# --------------------------------------------------------------- rounding, on hand-built graphs


def _matmul_model(
    weight: np.ndarray, split: bool, low: int = TensorProto.FLOAT16
) -> onnx.ModelProto:
    """y = x @ W with 16-bit float input and output. ``split`` computes the same function as two
    half-width products, each rounded to the 16-bit type before they add: a slim model's
    different blocking, whose only difference is rounding. ``low`` FLOAT keeps all in float32.
    """
    k, h = weight.shape[0], weight.shape[0] // 2
    w32 = weight.astype(np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [
            (w32, "W"),
            (w32[:h], "Wa"),
            (w32[h:], "Wb"),
            (np.array([0], np.int64), "s0"),
            (np.array([h], np.int64), "s1"),
            (np.array([k], np.int64), "s2"),
            (np.array([1], np.int64), "axis"),
        ]
    ]
    nodes = [helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT)]
    if not split:
        nodes.append(helper.make_node("MatMul", ["x32", "W"], ["y32"]))
    else:
        for part, (lo, hi) in (("a", ("s0", "s1")), ("b", ("s1", "s2"))):
            nodes += [
                helper.make_node("Slice", ["x32", lo, hi, "axis"], [f"x{part}"]),
                helper.make_node("MatMul", [f"x{part}", f"W{part}"], [f"y{part}"]),
                helper.make_node("Cast", [f"y{part}"], [f"r{part}"], to=low),
                helper.make_node("Cast", [f"r{part}"], [f"z{part}"], to=TensorProto.FLOAT),
            ]
        nodes.append(helper.make_node("Add", ["za", "zb"], ["y32"]))
    nodes.append(helper.make_node("Cast", ["y32"], ["y"], to=low))
    graph = helper.make_graph(
        nodes,
        "mm",
        [helper.make_tensor_value_info("x", low, ["N", k])],
        [helper.make_tensor_value_info("y", low, ["N", weight.shape[1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((64, 8)) * 8.0  # outputs in the tens


def test_float16_rounding_is_lossless_and_a_real_difference_is_not() -> None:
    w = _weights()
    reference = _matmul_model(w, split=False)
    result = compare(reference, _matmul_model(w, split=True))
    assert result.dtype == "float16" and result.ran_in == "float16"
    assert result.rtol == rtol_for("float16") == 8 * 2.0**-10
    # the case: beyond the fixed 1e-4, yet only rounding ...
    assert result.max_abs_diff > RTOL * max(1.0, result.max_abs_reference)
    assert result.float32_max_abs_diff <= RTOL * max(1.0, result.max_abs_reference)
    assert result.lossless and result.cause is None

    changed = w.copy()
    changed[5] += 1.0  # a consumer row that is not zero: a real difference
    lossy = compare(reference, _matmul_model(changed, split=True))
    assert not lossy.lossless
    assert lossy.float32_max_abs_diff > RTOL * max(1.0, lossy.max_abs_reference)
    assert "float32 twins differ too" in lossy.cause and "not float16 rounding" in lossy.cause


def test_bfloat16_models_are_verified_as_float32_twins() -> None:
    """ONNX Runtime's CPU provider has no bfloat16 kernels: the twins decide, at 1e-4."""
    w = _weights()
    reference = _matmul_model(w, split=False, low=TensorProto.BFLOAT16)
    result = compare(reference, _matmul_model(w, split=True, low=TensorProto.BFLOAT16))
    assert result.dtype == "bfloat16" and result.ran_in == "float32 twin"
    assert result.rtol == RTOL and result.lossless
    assert result.float32_max_abs_diff == result.max_abs_diff
    assert "float32 twins" in result.to_dict()["tolerance"]
    changed = w.copy()
    changed[5] += 1.0
    lossy = compare(reference, _matmul_model(changed, split=True, low=TensorProto.BFLOAT16))
    assert not lossy.lossless and "compared as float32 twins" in lossy.cause


def test_float32_models_keep_the_fixed_tolerance() -> None:
    w = _weights()
    same = compare(
        _matmul_model(w, False, low=TensorProto.FLOAT),
        _matmul_model(w, True, low=TensorProto.FLOAT),
    )
    assert same.dtype == "float32" and same.rtol == RTOL and same.lossless
    assert same.float32_max_abs_diff is None  # nothing to widen
    changed = w.copy()
    changed[5] += 1e-2
    lossy = compare(
        _matmul_model(w, False, low=TensorProto.FLOAT),
        _matmul_model(changed, True, low=TensorProto.FLOAT),
    )
    assert not lossy.lossless and lossy.cause == "the pruned channels' consumers are not zero"


def test_float32_twin_widens_every_16bit_tensor() -> None:
    model = _matmul_model(_weights(), split=True, low=TensorProto.BFLOAT16)
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float16), "half"))
    twin = float32_twin(model)
    assert {i.data_type for i in twin.graph.initializer} == {TensorProto.FLOAT, TensorProto.INT64}
    assert {a.i for n in twin.graph.node if n.op_type == "Cast" for a in n.attribute} == {
        TensorProto.FLOAT
    }
    assert twin.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert twin.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    onnx.checker.check_model(twin, full_check=True)


# --------------------------------------------------------------- well-formed inputs, no tracebacks


def test_a_shape_the_model_cannot_take_is_bad_input(tmp_path: Path) -> None:
    from tests.slim_models import make_checkpoint

    make_checkpoint(tmp_path / "c.pt")  # a 1-channel 16x16 model
    result = CliRunner().invoke(
        main,
        [
            "slim",
            str(tmp_path / "c.pt"),
            "--input-shape",
            "2,3,16,16",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "the model does not run on input shape 2,3,16,16" in result.output
    assert not (tmp_path / "o").exists()


def test_inspect_of_a_json_file_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "channel_plan.json"
    path.write_text(json.dumps({"format": "chase-channel-plan", "version": 1, "layers": {}}))
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2 and "not an ONNX model" in result.output


def test_inspect_counts_flops_of_a_dynamic_height_width_model(tmp_path: Path) -> None:
    model, _ = _pruned(MobileBlock(), lambda m: m.groups(), tmp_path)
    onnx_path = _export(model, torch.randn(2, 3, 16, 16), tmp_path / "hw.onnx", {"x": BATCH_HW})
    result = CliRunner().invoke(main, ["inspect", str(onnx_path), "--json"])
    assert result.exit_code == 0, result.output
    flops = json.loads(result.output)["flops"]
    assert flops["dense"] > flops["slim"] > 0  # counted at the size slim would verify (32x32)
