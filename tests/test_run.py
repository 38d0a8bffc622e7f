"""`chase-deploy run` end to end on a shortened recipe: every stage, the report, resumability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chase_deploy.cli import main
from tests.conftest import write_recipe

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_run_end_to_end_and_resume(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        deploy={
            "batch_sizes": [1, 4],
            "duration_s": 0.2,
            "warmup_ms": 20,
            "round_to": 2,
            "backends": ["ort-cpu"],
        },
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(recipe), "--out", str(out), "--device", "cpu"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    for name in (
        "final.pt",
        "dense.onnx",
        "slim.onnx",
        "slim_report.json",
        "bench_ort-cpu.json",
        "report.md",
    ):
        assert (out / name).is_file(), name
    for name in ("training.png", "widths.png", "bench_ort-cpu.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    bench = json.loads((out / "bench_ort-cpu.json").read_text())
    assert sorted((Path(r["model"]).name, r["batch"]) for r in bench["results"]) == [
        ("dense.onnx", 1),
        ("dense.onnx", 4),
        ("slim.onnx", 1),
        ("slim.onnx", 4),
    ]
    report = (out / "report.md").read_text()
    assert (
        "## Dense vs slim" in report
        and "| slim |" in report
        and "![training curves](training.png)" in report
    )
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) >= {"train", "slim", "build", "bench", "accuracy"}
    acc = stages["accuracy"]
    assert acc["dense"] == pytest.approx(acc["slim"])  # lossless slimming keeps every prediction

    again = CliRunner().invoke(
        main, ["run", str(recipe), "--out", str(out), "--device", "cpu"], catch_exceptions=False
    )
    assert again.exit_code == 0
    for stage in ("train", "slim", "build", "bench", "accuracy"):
        assert f"[{stage}] done already" in again.output


def test_run_refuses_another_recipe_in_the_same_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text("seed: 99\n")
    recipe = write_recipe(tmp_path / "r.yaml")
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(out)])
    assert result.exit_code == 2 and "different recipe" in result.output


def test_run_refuses_an_unwritable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    recipe = write_recipe(tmp_path / "r.yaml")
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(blocker / "run")])
    assert result.exit_code == 2 and "cannot write there" in result.output
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(blocker / "run")])
    assert result.exit_code == 2 and "cannot write there" in result.output


def test_run_benches_onnx_backends_only(monkeypatch):
    """``run`` compares dense.onnx with slim.onnx: with ``deploy.backends: [auto]`` the usable
    torch backends (which run .pt2 programs) are not among its backends."""
    from types import SimpleNamespace

    import chase_deploy.backends as backends
    from chase_deploy.pipeline import _backends

    monkeypatch.setattr(backends, "usable_backends", lambda: ["ort-cpu", "torch-cpu", "torch-cuda"])
    recipe = SimpleNamespace(deploy=SimpleNamespace(backends=["auto"]))
    assert _backends(recipe) == ["ort-cpu"]
