"""`chase-deploy run` with ``deploy.int8``: dense, slim and their int8 versions in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chase_deploy.cli import main
from tests.conftest import write_recipe

PNG = b"\x89PNG\r\n\x1a\n"
MODELS = ["dense.int8.onnx", "dense.onnx", "slim.int8.onnx", "slim.onnx"]


@pytest.mark.slow
def test_run_with_int8_benches_and_reports_four_models(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        deploy={
            "batch_sizes": [1, 4],
            "duration_s": 0.2,
            "warmup_ms": 20,
            "round_to": 2,
            "backends": ["ort-cpu"],
            "int8": True,
        },
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(recipe), "--out", str(out), "--device", "cpu"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    stages = json.loads((out / "stages.json").read_text())
    quantized = stages["quantize"]
    assert sorted(quantized) == ["dense.int8", "slim.int8"]
    for name, row in quantized.items():
        assert row["target"] == "cpu" and row["samples"] == 192  # all 6 training batches of 32
        report = json.loads((out / f"{name}.json").read_text())
        assert report["top1_int8"] == row["top1_int8"] == stages["accuracy"][name]
        assert report["top1_fp32"] == stages["accuracy"][name.split(".")[0]]
    bench = json.loads((out / "bench_ort-cpu.json").read_text())
    benched = [(Path(r["model"]).name, r["batch"]) for r in bench["results"]]
    assert sorted(benched) == sorted((m, b) for m in MODELS for b in (1, 4))
    assert [Path(r["model"]).name for r in bench["results"][:4]] == [
        "dense.onnx",
        "slim.onnx",
        "dense.int8.onnx",
        "slim.int8.onnx",
    ]  # one interleaved run, dense fp32 first (the speedup reference)
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith(("| dense", "| slim"))]
    table = [r for r in rows if "MB |" in r]
    assert [r.split("|")[1].strip() for r in table] == ["dense", "slim", "dense.int8", "slim.int8"]
    for row in table:
        size = float(row.split("|")[5].strip().removesuffix(" MB"))
        name = row.split("|")[1].strip()
        assert size == pytest.approx((out / f"{name}.onnx").stat().st_size / 1e6, abs=1e-3)
        top1 = float(row.split("|")[2].strip().removesuffix("%"))
        assert top1 == pytest.approx(100 * stages["accuracy"][name], abs=0.01)
    assert "`quantize --target cpu --method minmax`" in report
    front = out / "front_ort-cpu.png"
    assert front.read_bytes().startswith(PNG) and f"]({front.name})" in report


def test_a_run_dir_written_before_a_key_existed_is_the_same_recipe(tmp_path: Path) -> None:
    """recipe.yaml of a run from before deploy.int8 existed: still the same recipe."""
    import yaml

    from chase_deploy.commands.run import _check_same_recipe
    from train.config import load_recipe
    from train.errors import BadInput

    recipe = write_recipe(tmp_path / "r.yaml")
    spec = load_recipe(recipe)
    saved = spec.to_dict()
    del saved["deploy"]["int8"], saved["deploy"]["int8_target"]
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved))
    _check_same_recipe(out, spec)  # no refusal
    with pytest.raises(BadInput, match="different recipe"):
        _check_same_recipe(out, load_recipe(recipe, ["deploy.int8=true"]))
