"""recipes/fashion_mnist/width_study.py: per-seed gaps from run directories, the recorded
seeds where a run directory is absent, unfinished runs left out, and the sizes it prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location(
        "fmnist_width_study", ROOT / "recipes/fashion_mnist/width_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fmnist_width_study"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["fmnist_width_study"]


def _run(runs: Path, name: str, seed: int, accs: list[float], finished: bool = True) -> None:
    run = runs / name / f"seed{seed}"
    run.mkdir(parents=True)
    lines = [{"event": "exploration", "step": 1}]
    lines += [{"event": "epoch", "epoch": i + 1, "val_acc": a} for i, a in enumerate(accs)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if finished:
        (run / "final.pt").write_bytes(b"")


def test_gaps_pair_seeds_and_skip_unfinished_runs(tmp_path: Path, study) -> None:
    _run(tmp_path, "dense_w16", 0, [0.80, 0.90])
    _run(tmp_path, "dense_w16", 1, [0.85, 0.88])
    _run(tmp_path, "chase_sc05_w16", 0, [0.70, 0.87])
    _run(tmp_path, "chase_sc05_w16", 1, [0.86], finished=False)  # still training: left out
    _run(tmp_path, "dense_w32", 0, [0.91])
    rows = {r.width: r for r in study.collect(tmp_path)}

    # width 8 has no runs here: the README's per-seed numbers, marked as such
    assert rows[8].recorded == ("dense seeds 0, 1, 2", "Chase seeds 0, 1, 2")
    assert rows[8].dense == study.RECORDED[("dense", 8)]
    assert rows[8].gaps == pytest.approx({0: 0.0353, 1: 0.0365, 2: 0.0377})

    assert rows[16].dense == {0: 0.90, 1: 0.88} and rows[16].chase == {0: 0.87}
    assert rows[16].gaps == pytest.approx({0: 0.03}) and rows[16].recorded == ()
    assert rows[32].gaps == {} and rows[32].chase == {}
    assert rows[32].dense == {0: 0.91} and rows[32].recorded == ()  # the run beats the record

    # the sizes: resnet_quick's Conv/Linear weights and Chase's budget round(0.1 N)
    assert (rows[8].params, rows[8].weights, rows[8].kept) == (33_498, 32_336, 3_234)
    assert rows[16].weights == 126_496 and rows[16].kept == 12_650

    lines = study.table(list(rows.values())).splitlines()
    assert lines[2].startswith("| 8 | 33,498 | 32,336 | 3,234 | 88.09 ± 0.29 | 84.44 ± 0.25 |")
    assert "| 3.65 ± 0.12 | 3.53, 3.65, 3.77 |" in lines[2]
    assert "| 89.00 ± 1.41 | 87.00 | 3.00 | 3.00 | [0, 1] / [0] |" in lines[3]
    assert "| 91.00 | — | — | — | [0] / [] |" in lines[4]


def test_recorded_seeds_fill_in_beside_new_runs(tmp_path: Path, study) -> None:
    """Seed 0 at widths 16 and 32 was recorded before its directory was lost; seed 1 is new."""
    _run(tmp_path, "dense_w16", 1, [0.80, 0.8941])
    _run(tmp_path, "chase_sc05_w16", 1, [0.80, 0.8705])
    rows = {r.width: r for r in study.collect(tmp_path)}

    assert rows[16].dense == {0: 0.8961, 1: 0.8941} and rows[16].chase == {0: 0.8725, 1: 0.8705}
    assert rows[16].gaps == pytest.approx({0: 0.0236, 1: 0.0236})
    assert rows[16].recorded == ("dense seed 0", "Chase seed 0")
    assert rows[32].dense == {0: 0.9063} and rows[32].chase == {}
    assert rows[32].recorded == ("dense seed 0",)

    lines = study.table(list(rows.values())).splitlines()
    assert "| 89.51 ± 0.14 | 87.15 ± 0.14 | 2.36 ± 0.00 | 2.36, 2.36 |" in lines[3]
    assert lines[3].endswith("| [0, 1] / [0, 1] (recorded: dense seed 0; Chase seed 0) |")
    assert lines[4].endswith("| 90.63 | — | — | — | [0] / [] (recorded: dense seed 0) |")
