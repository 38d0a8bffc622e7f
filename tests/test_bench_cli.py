"""`chase-deploy bench` through the CLI: a real run, and every bad input -> exit 2, one line, no files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from chase_deploy.cli import main
from chase_deploy.environment import Gpu
from tests.bench_models import conv_net, fake_engine


@pytest.fixture
def models(tmp_path):
    return conv_net(tmp_path / "dense.onnx", width=16), conv_net(tmp_path / "slim.onnx", width=8)


def bench(*args):
    """Short runs; options given in ``args`` come last and win."""
    return CliRunner().invoke(
        main, ["bench", "--duration-s", "0.03", "--warmup-ms", "2", *map(str, args)]
    )


def refused(result, *fragments):
    """Exit 2 with exactly one line on stderr starting 'error:' that names the problem."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_bench_writes_table_json_and_plot(tmp_path, models):
    out_json, out_png = tmp_path / "res" / "b.json", tmp_path / "res" / "b.png"
    result = bench(
        *models, "--batch", "1,2", "--threads", "1", "--json", out_json, "--plot", out_png
    )
    assert result.exit_code == 0, result.output
    assert "dense.onnx" in result.stdout and "slim.onnx" in result.stdout
    data = json.loads(out_json.read_text())
    assert [(r["model"], r["batch"]) for r in data["results"]] == [
        (str(models[0]), 1),
        (str(models[1]), 1),
        (str(models[0]), 2),
        (str(models[1]), 2),
    ]
    assert data["environment"]["threads"] == 1
    assert out_png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--backend", "onnxruntime"], ["unknown backend 'onnxruntime'"]),
        (["--batch", "1,0"], ["--batch '1,0'", "positive integers"]),
        (["--batch", "8,x"], ["--batch '8,x'"]),
        (["--batch", "-4"], ["--batch '-4'"]),
        (["--threads", "0"], ["--threads '0'"]),
        (["--duration-s", "0"], ["--duration-s '0'"]),
    ],
)
def test_bad_options(tmp_path, models, args, fragments):
    out = tmp_path / "out.json"
    refused(bench(*models, *args, "--json", out), *fragments)
    assert not out.exists()


@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt", "tensorrt", "torch-cuda"])
def test_unusable_backend_names_the_missing_piece(tmp_path, models, backend):
    from chase_deploy.backends import missing_pieces

    missing = missing_pieces(backend)
    if not missing:
        pytest.skip(f"{backend} works on this machine")
    out = tmp_path / "out.json"
    result = bench(*models, "--backend", backend, "--json", out)
    refused(result, f"backend {backend} is not usable here", *missing)
    assert not out.exists()


def test_files_that_are_neither_onnx_nor_engines(tmp_path, models):
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(models[0].read_bytes()[:150])
    refused(bench(models[0], truncated), "cut.onnx is neither an ONNX model", "ONNX parse failed")
    text = tmp_path / "readme.engine"
    text.write_text("hello\n")
    refused(bench(text), "readme.engine is neither an ONNX model")
    refused(bench(tmp_path / "nope.onnx"), "nope.onnx does not exist")


def test_fixed_batch_model_with_other_batch(tmp_path):
    fixed = conv_net(tmp_path / "fixed.onnx", batch=1)
    refused(bench(fixed, "--batch", "1,8"), "fixed batch size of 1", "--batch 1")


def test_output_paths_that_cannot_be_written(tmp_path, models):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    refused(bench(*models, "--json", blocker / "r.json"), "--json", "is not a directory")
    refused(bench(*models, "--json", tmp_path), "is a directory")
    refused(bench(*models, "--plot", tmp_path / "plot.jpg"), "ending in .png")
    refused(bench(*models, "--plot", blocker / "p.png"), "--plot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.onnx", "file.txt", "slim.onnx"]


def test_engine_on_an_onnx_runtime_backend(tmp_path):
    engine = fake_engine(tmp_path / "m.engine", "10.8.0", "NVIDIA L4", "8.9")
    refused(bench(engine), "m.engine is a TensorRT engine: bench it with --backend tensorrt")


@pytest.fixture
def pretend_tensorrt_machine(monkeypatch):
    """Make this machine look like one with TensorRT 10.8.0 on an NVIDIA L4 (no real TRT call)."""
    import chase_deploy.backends.probe as probe
    import chase_deploy.environment as environment

    monkeypatch.setattr(probe, "missing_pieces", lambda name: [])
    monkeypatch.setattr(environment, "tensorrt_version", lambda: "10.8.0")
    monkeypatch.setattr(environment, "current_gpu", lambda: Gpu(0, "NVIDIA L4", "8.9", 23034))


def test_engine_from_another_tensorrt_version(tmp_path, pretend_tensorrt_machine):
    engine = fake_engine(tmp_path / "m.engine", "10.3.0", "NVIDIA L4", "8.9")
    out = tmp_path / "r.json"
    refused(
        bench(engine, "--backend", "tensorrt", "--json", out),
        "built with TensorRT 10.3.0, this machine has TensorRT 10.8.0",
        "rebuild it here",
    )
    assert not out.exists()


def test_engine_from_another_gpu(tmp_path, pretend_tensorrt_machine):
    engine = fake_engine(tmp_path / "m.engine", "10.8.0", "NVIDIA A100-SXM4-80GB", "8.0")
    refused(
        bench(engine, "--backend", "tensorrt"),
        "built for NVIDIA A100-SXM4-80GB (compute capability 8.0), this GPU is NVIDIA L4 (8.9)",
    )
