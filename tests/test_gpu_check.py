"""The GPU check's scripts (tests/gpu/) run here, on the CPU path of ``--dry-run``, so their first
run on the GPU box does not die on something a CPU could have caught.

ResNet-50 with the Table-15 widths at 32x32: ``prepare`` with a stand-in slicer for bottleneck
plans (the real one is ``train/slicing.py``), then the benchmark (torch-cpu, eager, the output
gate) and the summary. The real ``check.sh`` is run the same way by hand (see README).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

GPU_DIR = Path(__file__).resolve().parent / "gpu"


def load(name: str):
    sys.path.insert(0, str(GPU_DIR))
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_plan_rounding_and_phases():
    prepare, bench = load("prepare"), load("bench_resnet50")
    from slim_speedup import chase_model

    model, _, layers = chase_model(seed=0)
    from train.plan import parse_plan

    plan = parse_plan({"format": "chase-channel-plan", "version": 1, "layers": layers})
    rounded = prepare.rounded_plan(model, plan, 8)
    for key, entry in plan.layers.items():
        wide = rounded.layers[key].kept
        assert len(wide) % 8 == 0 and set(entry.kept) <= set(wide)
        assert len(wide) - len(entry.kept) < 8
    assert bench.plan_phases(["eager", "compiled"], [1, 32, 256]) == [
        ("eager", 1),
        ("eager", 32),
        ("eager", 256),
        ("compiled", 256),
        ("compiled", 32),
        ("compiled", 1),
    ]
    assert bench.estimate_s("compiled", []) == bench.FIRST_COMPILE_S


@pytest.mark.slow
def test_dry_run_prepares_gates_and_times_all_three_models(tmp_path):
    prepare, bench, summary = load("prepare"), load("bench_resnet50"), load("summary")
    info = prepare.prepare(tmp_path / "work", dry_run=True)  # the real slicer
    models = info["models"]
    assert sorted(models) == ["dense", "slim", "slim_r8"]
    assert all(m["lossless"] for m in models.values())
    assert 1.3 < models["slim"]["flop_bound"] < models["slim_r8"]["flop_bound"] + 0.2
    out = tmp_path / "out"
    code = bench.main(
        ["--prepared", str(tmp_path / "work"), "--out", str(out / "bench.json"), "--dry-run"]
        + ["--modes", "eager", "--budget-s", "600"]
    )
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["complete"] and report["missing"] == []
    assert [(p["mode"], p["batch"], p["status"]) for p in report["phases"]] == [
        ("eager", 1, "done"),
        ("eager", 2, "done"),
    ]
    assert all(c["passed"] for p in report["phases"] for c in p["output_check"])
    assert {(r["model"], r["batch"]) for r in report["table"]} == {
        (m, b) for m in ("dense", "slim", "slim_r8") for b in (1, 2)
    }
    assert report["environment"]["backend"]["precision"] == "bf16"
    assert report["environment"]["backend"]["channels_last"] is True
    (out / "steps.tsv").write_text("prepare\t0\t20\nbench\t0\t30\n")
    assert summary.main(["--out", str(out), "--seconds", "50", "--dry-run"]) == 0
    check = json.loads((out / "check.json").read_text())
    assert check["status"] == "incomplete"  # no GPU tests report in this folder
    assert check["bench"]["goal"]["what"].startswith("slim_r8 at batch 256")
