"""``torch-cuda`` on ``.pt2`` programs: CUDA graphs, precisions, compile, the bench contract.

GPU-marked: ``tests/gpu/check.sh`` runs these on the lendable H200 box; they skip without torch
CUDA and a GPU. This module imports only torch, numpy, onnx and the project (no click, no
onnx-graphsurgeon), so it collects on that box.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chase_deploy.backends import get_backend, missing_pieces
from chase_deploy.backends.base import random_inputs
from chase_deploy.backends.pytorch import _flatten
from chase_deploy.bench import benchmark
from tests.torch_models import dense_and_slim

DROPPED = (1, 4, 6)
needs_cuda = pytest.mark.skipif(
    bool(missing_pieces("torch-cuda")), reason="needs torch with CUDA and an NVIDIA GPU"
)


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    return dense_and_slim(tmp_path_factory.mktemp("pt2"), DROPPED)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("precision", "channels_last", "compile_"),
    [("fp32", False, False), ("bf16", True, False), ("bf16", True, True)],
)
def test_torch_cuda_graphs_and_outputs(programs, precision, channels_last, compile_):
    backend = get_backend(
        "torch-cuda", precision=precision, channels_last=channels_last, compile=compile_
    )
    model = backend.load(programs["slim"], [1, 8])
    name = model.inputs[0].name
    tol = backend.output_tolerance
    for batch in (1, 8):
        x = random_inputs(model.inputs, batch, seed=batch)[name]
        (out,) = model.run({name: x})
        with torch.no_grad():
            expected = programs["masked"](torch.from_numpy(x)).numpy()
        assert np.abs(out - expected).max() <= tol * max(1.0, np.abs(expected).max())
        timer = model.timer(batch)
        assert all(timer() > 0 for _ in range(3))
    info = backend.describe()
    assert info["timer"] == "cuda-events"
    assert info["cuda_graphs"] is True, info["cuda_graph_failures"]
    model.close()


@needs_cuda
@pytest.mark.gpu
def test_torch_cuda_benchmark_contract(programs):
    result = benchmark(
        [programs["dense"], programs["slim"]],
        backend="torch-cuda",
        batches=[1, 16],
        warmup_ms=5,
        duration_s=0.05,
        options={"precision": "bf16", "channels_last": True},
        check_outputs=True,
    )
    assert [r["batch"] for r in result["results"]] == [1, 1, 16, 16]
    assert all(r["latency_ms"]["min"] > 0 for r in result["results"])
    env = result["environment"]
    assert env["backend"]["device"] != "cpu" and env["backend"]["cuda_graphs"] is True
    assert all(c["passed"] for c in env["output_check"])


@needs_cuda
@pytest.mark.gpu
def test_torch_cuda_graph_replays_each_rotated_input(programs):
    """The next input is copied into the graph's buffers before each replay: replay k computes
    the k-th batch of the rotation, as an eager run of that batch does."""
    from chase_deploy.backends import rotation

    backend = get_backend("torch-cuda", precision="bf16", channels_last=True)
    model = backend.load(programs["slim"], [4])
    timer = model.timer(4)
    feeds = rotation.rotating_inputs(model.inputs, 4)
    assert model.graphs_used and len(feeds) == 64
    for k in range(66):
        assert timer() > 0
        if k not in (0, 1, 2, 63, 64, 65):
            continue
        (replayed,) = [t.float().cpu().numpy() for t in _flatten(model._current.outputs)]
        (expected,) = model.run(feeds[k % len(feeds)])
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(replayed - expected).max() <= backend.output_tolerance * scale, k
    model.close()
