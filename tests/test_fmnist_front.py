"""recipes/fashion_mnist/front.py: run discovery by name and the verdicts against the fronts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def front():
    import sys

    spec = importlib.util.spec_from_file_location(
        "fmnist_front", ROOT / "recipes/fashion_mnist/front.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fmnist_front"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["fmnist_front"]


def _row(kind, width, fp32, int8, top1, top1_int8, sc=0.0, skip=False, std=0.1):
    return {
        "kind": kind,
        "width": width,
        "sc": sc,
        "skip": skip,
        "throughput_fp32": fp32,
        "throughput_int8": int8,
        "top1_fp32": (top1, std),
        "top1_int8": (top1_int8, std),
    }


def test_discover_reads_the_queue_names(tmp_path, front):
    for name in (
        "dense_w12/seed0",
        "dense_w16/seed1",
        "chase_sc05_w16/seed0",
        "chase_sc05_w16_sc0.3/seed2",
        "chase_sc05_skip_w16_sc0.6/seed0",
        "chase_sc05_w8/seed0",  # another width: not this study's Chase
        "chase_sc05_fromdense_w16/seed0",  # another recipe
        "dense_w14/seed0",  # not finished: no final.pt
    ):
        (tmp_path / name).mkdir(parents=True)
        if name != "dense_w14/seed0":
            (tmp_path / name / "final.pt").write_bytes(b"")
    found = {
        c.name: (c.kind, c.width, c.sc, c.skip, len(c.runs)) for c in front.discover(tmp_path, 16)
    }
    assert found == {
        "dense_w12": ("dense", 12, 0.0, False, 1),
        "dense_w16": ("dense", 16, 0.0, False, 1),
        "chase_sc05_w16": ("chase", 16, 0.5, False, 1),
        "chase_sc05_w16_sc0.3": ("chase", 16, 0.3, False, 1),
        "chase_sc05_skip_w16_sc0.6": ("chase", 16, 0.6, True, 1),
    }


def test_front_at_interpolates_inside_only(front):
    points = [(100.0, 80.0), (200.0, 90.0)]
    assert front.front_at(points, 150.0) == pytest.approx(85.0)
    assert front.front_at(points, 99.0) is None and front.front_at(points, 201.0) is None


def test_verdicts_name_the_dominating_dense_model(front):
    rows = [
        _row("dense", 12, 300.0, 900.0, 86.0, 85.9),
        _row("dense", 16, 100.0, 250.0, 88.0, 88.0),
        _row("chase", 16, 200.0, 500.0, 85.0, 84.95, sc=0.5),  # fp32: below w12; int8: faster than
        # every dense fp32 model except w12 (300 < 500: on the thin-dense front), below w12 int8
        _row("chase", 16, 400.0, 950.0, 84.0, 84.0, sc=0.6, skip=True),  # fastest of all
    ]
    lines = front.verdicts(rows)
    assert len(lines) == 8
    first = lines[0]
    assert first.startswith("- Chase S_c 0.5 fp32 (200 items/s, 85.00 %) vs the thin-dense front:")
    assert "**below** it: dense width 12 fp32 is faster (300 items/s) and 1.00 points" in first
    assert "the front interpolated at this speed: 87.00 % (-2.00)" in first
    int8_vs_thin = lines[2]
    assert "S_c 0.5 int8" in int8_vs_thin and "on it: faster than every model" in int8_vs_thin
    int8_vs_int8 = lines[3]
    assert (
        "**below** it: dense width 12 int8 is faster (900 items/s) and 0.95 points" in int8_vs_int8
    )
    assert all("on it: faster than every model" in lines[i] for i in (4, 6, 7))
    assert "**below** it: dense width 12 int8 is faster (900 items/s) and 1.90 points" in lines[5]
    assert "(within noise)" not in first  # 1.00 points > 0.1 std
    close = front.verdicts([rows[0], _row("chase", 16, 200.0, 500.0, 85.95, 85.0, std=0.2)])
    assert "0.05 points more accurate (within noise)" in close[0]


def _finished_run(runs: Path, name: str, seed: int, top1: float, plan: dict | None) -> Path:
    """What prepare() leaves in a finished run: slim report, int8 report, the training plan."""
    import json

    run = runs / name / f"seed{seed}"
    (run / "front").mkdir(parents=True)
    (run / "final.pt").write_bytes(b"")
    deployed = "dense" if name.startswith("dense") else "slim"
    slim = {"params": {deployed: 1000 + seed}, "flops": {deployed: 2_500_000}}
    (run / "front" / "slim_report.json").write_text(json.dumps(slim))
    report = {"top1_fp32": top1, "top1_int8": top1 - 0.001, "int8_macs": {"share": 1.0}}
    (run / "front" / f"{deployed}.int8.json").write_text(json.dumps(report))
    if plan is not None:
        (run / "channel_plan.json").write_text(json.dumps(plan))
    return run


def test_records_add_up_seeds_from_runs_that_are_gone(tmp_path, front):
    """Seed 0 was recorded in an earlier session; seed 1 is on disk now: both are in the row."""
    import json

    records = tmp_path / "records.json"
    plan = {"format": "chase-channel-plan", "version": 1, "layers": {}}
    _finished_run(tmp_path / "a", "chase_sc05_w16", 0, 0.87, plan)
    front.update_records(front.discover(tmp_path / "a", 16), records)
    first = json.loads(records.read_text())
    assert first == {
        "chase_sc05_w16": {
            "0": {
                "top1_fp32": 0.87,
                "top1_int8": 0.869,
                "int8_mac_share": 1.0,
                "params": 1000,
                "mflops": 2.5,
                "plan": plan,
            }
        }
    }
    runs = tmp_path / "b"  # a new machine: seed 0's directory is gone
    _finished_run(runs, "chase_sc05_w16", 1, 0.85, plan)
    configs = front.discover(runs, 16, front.load_records(records))
    front.update_records(configs, records)
    (config,) = configs
    assert sorted(config.seeds) == [0, 1] and [r.name for r in config.runs] == ["seed1"]
    assert sorted(json.loads(records.read_text())["chase_sc05_w16"]) == ["0", "1"]
    rows = front.summarize(configs, {"results": []}, runs)
    assert rows[0]["seed_list"] == [0, 1] and rows[0]["benched"] == "run"
    assert rows[0]["top1_fp32"] == pytest.approx((86.0, 2**0.5))
    assert rows[0]["params"] == 1000  # the first seed's model

    # a configuration only in the records (another width's Chase is not this study's)
    only = front.discover(
        tmp_path / "empty", 16, {"dense_w12": {"2": {}}, "chase_sc05_w8": {"0": {}}}
    )
    assert [(c.name, sorted(c.seeds), c.runs) for c in only] == [("dense_w12", [2], [])]


@pytest.fixture()
def synthetic_calibration(front, monkeypatch):
    """Calibrate speed twins on synthetic 28x28 images: CI has no Fashion-MNIST."""
    from chase_deploy.int8.calibration import CalibrationSource
    from train.config import load_recipe

    path = ROOT / "recipes/fashion_mnist/dense.yaml"
    sets = ["data.name=synthetic", "data.channels=1", "data.image_size=28", "data.num_val=64"]

    def source(width):
        return CalibrationSource(path, "recipe", load_recipe(path, [*sets, f"model.width={width}"]))

    monkeypatch.setattr(front, "twin_calibration", source)


def test_speed_twin_has_the_trained_runs_layer_widths(tmp_path, front, synthetic_calibration):
    """An untrained network slimmed with a run's recorded plan: same params and MFLOPs as the
    run's slim model (itself from other weights), quantized; a record it cannot match stops."""
    import json

    import onnx
    import torch

    from chase_deploy.export import export_onnx
    from chase_deploy.graph.flops import layer_costs, total_params
    from chase_deploy.graph.surgery import slim_model
    from tests.derived_groups import groups_for
    from tests.slim_models import randomize_bn
    from tests.test_slicing import random_plan
    from train.models import create_model

    kwargs = {"width": 8, "in_channels": 1, "num_classes": 10}
    plan = random_plan(groups_for("resnet_quick", (1, 28, 28), True, **kwargs), seed=4)
    torch.manual_seed(7)  # "the trained run": other weights than the twin's, no repeated BN
    trained = randomize_bn(create_model("resnet_quick", **kwargs), seed=5)
    trained = export_onnx(trained, (2, 1, 28, 28)).model
    dense_params = total_params(trained)
    trained = slim_model(trained, plan, round_to=8).model
    entry = {
        "params": total_params(trained),
        "mflops": sum(c.flops for c in layer_costs(trained)) / 1e6,
        "plan": plan.to_dict(),
    }
    assert entry["params"] < dense_params
    config = front.parse_name("chase_sc05_skip_w8", 8)
    config.seeds = {3: entry}
    fp32 = front.bench_model(config, tmp_path, int8=False)
    assert fp32 == tmp_path / "front_twins" / "chase_sc05_skip_w8" / "slim.onnx"
    twin = onnx.load(str(fp32))
    assert total_params(twin) == entry["params"]
    assert [c.flops for c in layer_costs(twin)] == [c.flops for c in layer_costs(trained)]
    int8 = front.bench_model(config, tmp_path, int8=True)
    report = json.loads(int8.with_suffix(".json").read_text())
    assert report["target"] == "cpu" and report["int8_macs"]["share"] == pytest.approx(1.0)

    wrong = front.parse_name("dense_w8", 8)
    wrong.seeds = {0: {"params": 123, "mflops": 1.0, "plan": None}}
    with pytest.raises(SystemExit, match="speed twin of dense_w8: .* but the record says 123"):
        front.bench_model(wrong, tmp_path, int8=False)
    assert not (tmp_path / "front_twins" / "dense_w8").exists()
