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
