"""fp16 / bf16 ONNX conversion: outputs close to fp32, inputs and outputs stay fp32.

Tolerances (max |difference| over the outputs, relative to max(1, max |fp32 output|)): fp16
5e-3 (unit roundoff 4.9e-4, a few layers deep), bf16 5e-2 (unit roundoff 3.9e-3). fp16 runs in
ONNX Runtime's CPU provider; ONNX Runtime has no bf16 CPU kernels, so bf16 runs in ONNX's
reference evaluator.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator

from chase_deploy.backends.trt.precision import convert_file, convert_precision
from tests.bench_models import conv_net
from train.errors import BadInput

FP16_TOL = 5e-3
BF16_TOL = 5e-2


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> onnx.ModelProto:
    """A small residual CNN exported by torch 2.13's default (dynamo) exporter at opset 18."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.bn(self.conv(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(0)
    model = Block().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in (model.stem[1], model.bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("export") / "block.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 8, 8),),
        str(path),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )
    return onnx.load(str(path))


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _io_types(model: onnx.ModelProto) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def _float_initializer_types(model: onnx.ModelProto) -> set[int]:
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    return {i.data_type for i in model.graph.initializer if i.data_type in floats}


def test_exporter_model_is_opset_18(exported):
    assert [o.version for o in exported.opset_import if o.domain == ""] == [18]


def test_fp16_matches_fp32_in_onnx_runtime(exported):
    half = convert_precision(exported, "fp16")
    assert _io_types(half) == {TensorProto.FLOAT}
    assert _float_initializer_types(half) == {TensorProto.FLOAT16}
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref, out = _ort(exported, x), _ort(half, x)
    assert out.dtype == np.float32 and out.shape == ref.shape == (4, 5)
    err = float(np.abs(out - ref).max())
    assert err <= FP16_TOL * max(1.0, float(np.abs(ref).max()))
    assert err > 0  # it really computed in fp16


def test_bf16_matches_fp32_in_the_reference_evaluator(exported):
    brain = convert_precision(exported, "bf16")
    assert [o.version for o in brain.opset_import if o.domain == ""] == [22]
    assert _io_types(brain) == {TensorProto.FLOAT}
    assert _float_initializer_types(brain) == {TensorProto.BFLOAT16}
    onnx.checker.check_model(brain, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = _ort(exported, x)
    (out,) = ReferenceEvaluator(brain).run(None, {"input": x})
    assert out.dtype == np.float32
    err = float(np.abs(out - ref).max())
    assert 0 < err <= BF16_TOL * max(1.0, float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def preactivation(tmp_path_factory) -> onnx.ModelProto:
    """BatchNorm after a residual Add, which no export can fold into a Conv."""
    import torch
    from torch import nn

    class PreActivation(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(3, 8, 1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = torch.relu(self.bn(self.a(x) + self.b(x)))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    model = PreActivation().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(1e-4, 2.0)  # small variances: fp16 would round them
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.3, 0.3)
    path = tmp_path_factory.mktemp("export") / "preact.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 8, 8),),
        str(path),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
    )
    return onnx.load(str(path))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_batchnorm_stays_fp32_with_its_original_statistics(preactivation, precision):
    converted = convert_precision(preactivation, precision)
    fp32 = {i.name: onnx.numpy_helper.to_array(i) for i in preactivation.graph.initializer}
    inits = {i.name: i for i in converted.graph.initializer}
    producer = {o: n for n in converted.graph.node for o in n.output}
    norms = [n for n in converted.graph.node if n.op_type == "BatchNormalization"]
    originals = [n for n in preactivation.graph.node if n.op_type == "BatchNormalization"]
    assert len(norms) == len(originals) == 1
    for node, original in zip(norms, originals, strict=True):
        assert producer[node.input[0]].op_type == "Cast"  # X cast up to fp32
        for name, source in zip(node.input[1:], original.input[1:], strict=True):
            assert inits[name].data_type == TensorProto.FLOAT  # scale, bias, mean, var
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(inits[name]), fp32[source])
    low = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[precision]
    assert {inits[n].data_type for n in ("a.weight", "b.weight", "fc.weight")} == {low}
    read = {i for n in converted.graph.node for i in n.input}
    assert set(inits) <= read  # no fp16 copy of a BN parameter is left behind
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = _ort(preactivation, x)
    if precision == "fp16":
        out = _ort(converted, x)
        tol = FP16_TOL
    else:
        (out,) = ReferenceEvaluator(converted).run(None, {"input": x})
        tol = BF16_TOL
    assert float(np.abs(out - ref).max()) <= tol * max(1.0, float(np.abs(ref).max()))


def test_bf16_weights_come_from_fp32_not_fp16(tmp_path):
    path = conv_net(tmp_path / "m.onnx", width=4)
    model = onnx.load(str(path))
    model.graph.initializer[1].CopyFrom(
        onnx.numpy_helper.from_array(np.array([1e5, 1e-6, -3.0, 0.0], np.float32), "b1")
    )
    brain = convert_precision(model, "bf16")
    b1 = next(i for i in brain.graph.initializer if i.name == "b1")
    values = onnx.numpy_helper.to_array(b1).astype(np.float32)
    np.testing.assert_allclose(values, [1e5, 1e-6, -3.0, 0.0], rtol=4e-3)  # fp16 would clamp 1e5


def test_helper_model_fp16_in_onnx_runtime(tmp_path):
    model = onnx.load(str(conv_net(tmp_path / "m.onnx", width=16)))
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    ref, out = _ort(model, x), _ort(convert_precision(model, "fp16"), x)
    assert np.abs(out - ref).max() <= FP16_TOL * max(1.0, float(np.abs(ref).max()))


def test_fp32_is_a_no_op_and_converting_twice_is_refused(tmp_path):
    model = onnx.load(str(conv_net(tmp_path / "m.onnx")))
    assert convert_precision(model, "fp32") is model
    half = convert_precision(model, "fp16")
    with pytest.raises(BadInput, match="converted already"):
        convert_precision(half, "fp16")
    with pytest.raises(BadInput, match="precision 'int8' is not one of fp32, fp16, bf16"):
        convert_precision(model, "int8")


def test_convert_file(tmp_path):
    src = conv_net(tmp_path / "m.onnx")
    dst = convert_file(src, tmp_path / "out" / "m.fp16.onnx", "fp16")
    assert _io_types(onnx.load(str(dst))) == {TensorProto.FLOAT}
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x01\x02junk")
    with pytest.raises(BadInput, match="cannot read ONNX model"):
        convert_file(junk, tmp_path / "j16.onnx", "fp16")
    assert not (tmp_path / "j16.onnx").exists()
