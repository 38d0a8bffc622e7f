"""The quickstart recipe as shipped: Chase at 90 % sparsity and 50 % channel sparsity on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chase_deploy.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _final_epoch(out: Path) -> dict:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["event"] == "epoch"][-1]


@pytest.mark.slow
def test_quickstart_accuracy_against_its_dense_twin(tmp_path: Path) -> None:
    recipe = str(ROOT / "recipes" / "quickstart.yaml")
    chase = CliRunner().invoke(
        main, ["train", recipe, "--out", str(tmp_path / "chase"), "--device", "cpu"]
    )
    assert chase.exit_code == 0, chase.output
    dense_args = ["--set", "chase.density=1.0", "--set", "chase.channel_sparsity=0"]
    dense = CliRunner().invoke(
        main, ["train", recipe, "--out", str(tmp_path / "dense"), "--device", "cpu", *dense_args]
    )
    assert dense.exit_code == 0, dense.output
    c, d = _final_epoch(tmp_path / "chase"), _final_epoch(tmp_path / "dense")
    assert c["channel_sparsity"] == 0.5
    assert abs(c["density"] - 0.1) <= 0.001
    assert c["val_acc"] >= 0.95
    assert d["val_acc"] >= 0.98
    assert c["val_acc"] >= d["val_acc"] - 0.02
