"""``bench --backend torch-cpu|torch-cuda`` on ``.pt2`` programs.

The GPU side is in ``test_torch_cuda.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from chase_deploy.backends import get_backend
from chase_deploy.backends.base import random_inputs
from chase_deploy.cli import main
from tests.bench_models import conv_net
from tests.torch_models import dense_and_slim, masked_net, write_pt2
from train.errors import BadInput

DROPPED = (1, 4, 6)


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    return dense_and_slim(tmp_path_factory.mktemp("pt2"), DROPPED)


def bench(*args):
    return CliRunner().invoke(
        main, ["bench", "--duration-s", "0.03", "--warmup-ms", "2", *map(str, args)]
    )


def test_bench_torch_cpu_dense_against_slim_in_one_interleaved_run(tmp_path, programs):
    out = tmp_path / "bench.json"
    result = bench(
        programs["dense"],
        programs["slim"],
        "--backend",
        "torch-cpu",
        "--batch",
        "1,3",
        "--threads",
        "1",
        "--check-outputs",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [(r["model"], r["backend"], r["batch"]) for r in data["results"]] == [
        (str(programs[m]), "torch-cpu", b) for b in (1, 3) for m in ("dense", "slim")
    ]
    for row in data["results"]:
        assert set(row["latency_ms"]) == {"median", "mean", "p90", "p99", "min"}
        assert row["throughput"] == pytest.approx(row["batch"] * 1000 / row["latency_ms"]["mean"])
    env = data["environment"]
    assert env["backend"]["timer"] == "perf_counter" and env["backend"]["mode"] == "eager"
    assert env["backend"]["intra_op_threads"] == 1 and env["threads"] == 1
    assert [(c["batch"], c["passed"]) for c in env["output_check"]] == [(1, True), (3, True)]
    assert env["method"]["slices"] == 4  # the interleaving of bench.interleave
    assert torch.get_num_threads() == 1  # restored after the run


def test_torch_cpu_runs_like_the_masked_model_in_each_precision(programs):
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)}
    with torch.no_grad():
        expected = programs["masked"](torch.from_numpy(feeds["x"])).numpy()
    for precision, channels_last, tol in [
        ("fp32", False, 1e-5),
        ("fp32", True, 1e-5),
        ("bf16", True, 5e-2),
        ("fp16", False, 1e-2),
    ]:
        backend = get_backend(
            "torch-cpu", threads=1, precision=precision, channels_last=channels_last
        )
        model = backend.load(programs["slim"], [3])
        name = model.inputs[0].name
        (out,) = model.run({name: feeds["x"]})
        assert out.dtype == np.float32 and out.shape == (3, 5)
        assert np.abs(out - expected).max() <= tol * max(1.0, np.abs(expected).max()), precision
        assert model.timer(3)() > 0
        model.close()
        info = backend.describe()
        assert (info["precision"], info["channels_last"]) == (precision, channels_last)


def test_check_outputs_refuses_models_that_differ(tmp_path, programs):
    other = write_pt2(tmp_path / "other.pt2", masked_net(seed=5))
    out = tmp_path / "r.json"
    result = bench(
        programs["dense"], other, "--backend", "torch-cpu", "--check-outputs", "--json", out
    )
    assert result.exit_code == 2
    assert "other.pt2 at batch 1: its outputs differ" in result.stderr
    assert "nothing was timed" in result.stderr
    assert not out.exists()


def test_files_for_the_wrong_backend_are_refused(tmp_path, programs):
    onnx_model = conv_net(tmp_path / "m.onnx")
    result = bench(onnx_model, "--backend", "torch-cpu")
    assert result.exit_code == 2 and "m.onnx is an ONNX model: the torch backends run .pt2" in (
        result.stderr
    )
    result = bench(programs["dense"])
    assert result.exit_code == 2
    assert "dense.pt2 is a PyTorch .pt2 program: bench it with --backend torch-cpu" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compile"], "--compile applies to the torch-cpu and torch-cuda backends only"),
        (["--channels-last"], "--channels-last applies to the torch-cpu and torch-cuda"),
        (["--precision", "bf16"], "--precision bf16: the ONNX Runtime backends run"),
        (["--precision", "int8", "--backend", "torch-cpu"], "--precision 'int8' is not one of"),
    ],
)
def test_torch_flags_elsewhere_are_refused(tmp_path, args, message):
    result = bench(conv_net(tmp_path / "m.onnx"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_batch_beyond_the_programs_range_is_refused(tmp_path):
    from chase_deploy import torch_export

    with pytest.raises(BadInput, match="takes batch sizes up to"):
        get_backend("torch-cpu", threads=1).load(
            write_pt2(tmp_path / "m.pt2", masked_net()), [torch_export.MAX_BATCH + 1]
        )


@pytest.mark.slow
def test_torch_cpu_compiled_matches_eager(programs):
    """torch.compile on the CPU (Inductor's C++ backend): one compile serves batches 2 and 5."""
    backend = get_backend("torch-cpu", threads=1, compile=True)
    model = backend.load(programs["slim"], [2, 5])
    name = model.inputs[0].name
    for batch in (2, 5):
        feeds = {name: random_inputs(model.inputs, batch, seed=batch)[name]}
        (out,) = model.run(feeds)
        with torch.no_grad():
            expected = programs["masked"](torch.from_numpy(feeds[name])).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
        assert model.timer(batch)() > 0
    assert "torch.compile" in backend.describe()["mode"]
    model.close()
