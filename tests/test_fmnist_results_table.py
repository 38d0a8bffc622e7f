"""recipes/fashion_mnist/results_table.py --distill: each row against dense over the seeds both
have, unfinished runs left out, the 1-point verdict."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results():
    spec = importlib.util.spec_from_file_location(
        "fmnist_results_table", ROOT / "recipes/fashion_mnist/results_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fmnist_results_table"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["fmnist_results_table"]


def _run(runs: Path, name: str, seed: int, acc: float, finished: bool = True) -> None:
    run = runs / name / f"seed{seed}"
    run.mkdir(parents=True)
    epochs = [
        {"event": "epoch", "val_acc": 0.5, "seconds": 10.0, "channel_sparsity": 0.25},
        {"event": "channels", "step": 3},
        {"event": "epoch", "val_acc": acc, "seconds": 30.0, "channel_sparsity": 0.5},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if finished:
        (run / "final.pt").write_bytes(b"")


def test_distill_rows_against_dense_over_shared_seeds(tmp_path: Path, results) -> None:
    for seed, acc in enumerate([0.88, 0.87, 0.89]):
        _run(tmp_path, "dense_w8", seed, acc)
    _run(tmp_path, "chase_sc05_fromdense_w8", 0, 0.875)
    _run(tmp_path, "chase_sc05_fromdense_w8", 2, 0.875)
    _run(tmp_path, "chase_sc05_fromdense_w8", 1, 0.10, finished=False)  # still training
    _run(tmp_path, "chase_sc05_kd_w8", 0, 0.85)
    lines = results.distill_table(tmp_path, "_w8")
    assert len(lines) == 5  # header, rule, dense, the two rows with finished runs
    dense, fromdense, kd = lines[2], lines[4], lines[3]
    assert "| 3 | 88.00 ± 1.00 | 0: 88.00, 1: 87.00, 2: 89.00 | +0.00 (3 seeds) | yes |" in dense
    # seeds 0 and 2 only: (87.5 − 88) and (87.5 − 89) average −1.00, which is within 1 point
    assert "(`chase_sc05_fromdense_w8`) | 2 | 87.50 ± 0.00 | 0: 87.50, 2: 87.50 | -1.00 (2 seeds) | yes |" in fromdense  # fmt: skip
    assert fromdense.endswith("| 0.50 | 20 |")
    assert "(`chase_sc05_kd_w8`) | 1 | 85.00 ± 0.00 | 0: 85.00 | -3.00 (1 seeds) | no |" in kd
