"""How the torch backends prepare what they time: rotated inputs, BatchNorm kept in fp32 at low
precision, and the batch axis marked dynamic for ``torch.compile`` only where the program has one.

CPU only; ``torch.compile`` runs with a Dynamo backend that counts the graphs it is given (the
batch marking is Dynamo's business, the same for Inductor).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chase_deploy import torch_export
from chase_deploy.backends import get_backend, pytorch, rotation
from chase_deploy.backends.base import InputSpec, random_inputs
from chase_deploy.backends.ort import OrtModel
from tests.torch_models import masked_net, write_pt2
from train.atomic import write_bytes

MIB = 1 << 20


def test_rotation_count_covers_128_mib_in_2_to_64_batches():
    assert rotation.rotation_count(1) == 64
    assert rotation.rotation_count(MIB) == 64
    assert rotation.rotation_count(10 * MIB) == 13
    assert rotation.rotation_count(64 * MIB) == 2
    assert rotation.rotation_count(300 * MIB) == 2
    spec = InputSpec("x", (None, 3, 224, 224), np.dtype(np.float32))
    assert rotation.batch_bytes([spec], 32) == 32 * 3 * 224 * 224 * 4
    feeds = rotation.rotating_inputs([spec], 32)
    assert len(feeds) == 7  # 7 x 18.4 MiB >= 128 MiB
    assert not np.array_equal(feeds[0]["x"], feeds[1]["x"])
    np.testing.assert_array_equal(feeds[3]["x"], random_inputs([spec], 32, seed=3)["x"])


def test_torch_cpu_timer_feeds_the_rotation_in_turn(tmp_path):
    path = write_pt2(tmp_path / "m.pt2", masked_net())
    backend = get_backend("torch-cpu", threads=1)
    model = backend.load(path, [3])
    seen = []
    module = model.fn
    model.fn = lambda x: seen.append(x.clone()) or module(x)
    timer = model.timer(3)
    count = rotation.rotation_count(rotation.batch_bytes(model.inputs, 3))
    assert count == 64
    for _ in range(count + 2):
        assert timer() > 0
    expected = rotation.rotating_inputs(model.inputs, 3)
    for k, x in enumerate(seen):
        np.testing.assert_array_equal(x.numpy(), expected[k % count]["x"])
    assert backend.describe()["inputs"] == rotation.DESCRIPTION
    model.close()


def test_ort_cpu_timer_feeds_the_rotation_in_turn():
    class Session:
        def __init__(self):
            self.fed = []

        def run(self, outputs, feeds):
            self.fed.append(feeds["x"])

    session = Session()
    spec = InputSpec("x", (None, 4), np.dtype(np.float32))
    timer = OrtModel("m.onnx", {2: session}, [spec]).timer(2)
    for _ in range(66):
        timer()
    assert [f[0, 0] for f in session.fed[64:]] == [f[0, 0] for f in session.fed[:2]]
    assert len({f.tobytes() for f in session.fed}) == 64


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_keeps_batchnorm_in_fp32(tmp_path, precision):
    net = masked_net()
    path = write_pt2(tmp_path / "m.pt2", net)
    backend = get_backend("torch-cpu", threads=1, precision=precision, channels_last=True)
    model = backend.load(path, [4])
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    dtypes = {
        n: t.dtype for n, t in [*model.module.named_parameters(), *model.module.named_buffers()]
    }
    for bn in ("bn1", "bn2"):
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert dtypes[f"{bn}.{name}"] == torch.float32
    assert {dtypes[n] for n in ("conv1.weight", "conv2.weight", "fc.weight", "fc.bias")} == {low}
    assert pytorch.batch_norm_tensors(model.module) == {
        f"{bn}.{name}"
        for bn in ("bn1", "bn2")
        for name in ("weight", "bias", "running_mean", "running_var")
    }
    x = random_inputs(model.inputs, 4, seed=1)["x"]
    (out,) = model.run({"x": x})
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(out - expected).max() <= backend.output_tolerance * max(
        1.0, np.abs(expected).max()
    )
    assert backend.describe()["batchnorm"] == "weights and running statistics kept in fp32"
    model.close()


def _counting_compile(monkeypatch) -> list:
    graphs = []

    def count(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(pytorch, "COMPILE_OPTIONS", {"backend": count})
    return graphs


def test_compiled_dynamic_program_one_graph_for_every_batch_above_1(tmp_path, monkeypatch):
    graphs = _counting_compile(monkeypatch)
    net = masked_net()
    model = get_backend("torch-cpu", threads=1, compile=True).load(
        write_pt2(tmp_path / "m.pt2", net), [5, 2, 1]
    )
    for batch, count in ((5, 1), (2, 1), (1, 2)):
        x = random_inputs(model.inputs, batch, seed=batch)["x"]
        (out,) = model.run({"x": x})
        with torch.no_grad():
            np.testing.assert_allclose(out, net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
        assert len(graphs) == count, batch  # 5 and 2 share one graph; batch 1 gets its own
    model.close()


def test_compiled_fixed_batch_program_is_not_marked_dynamic(tmp_path, monkeypatch):
    graphs = _counting_compile(monkeypatch)
    net = masked_net()
    program = torch.export.export(net, (torch.randn(4, 3, 8, 8),))
    program.example_inputs = None
    path = tmp_path / "fixed.pt2"
    write_bytes(path, torch_export.serialize(program))
    model = get_backend("torch-cpu", threads=1, compile=True).load(path, [4])
    assert model.dynamic_batch == [False]
    (tensor,) = model._tensors(random_inputs(model.inputs, 4))
    assert not getattr(tensor, "_dynamo_weak_dynamic_indices", set())
    assert not getattr(tensor, "_dynamo_dynamic_indices", set())
    x = random_inputs(model.inputs, 4, seed=2)["x"]
    (out,) = model.run({"x": x})
    with torch.no_grad():
        np.testing.assert_allclose(out, net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    assert len(graphs) == 1
    dynamic = get_backend("torch-cpu", threads=1, compile=True).load(
        write_pt2(tmp_path / "dynamic.pt2", net), [4]
    )
    (tensor,) = dynamic._tensors(random_inputs(dynamic.inputs, 4))
    assert getattr(tensor, "_dynamo_weak_dynamic_indices", set()) == {0}
    model.close()
    dynamic.close()
