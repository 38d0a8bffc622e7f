"""bench: interleaving, statistics, speedup arithmetic, the JSON contract, table and plot."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import numpy as np
import pytest

from chase_deploy import stats
from chase_deploy.backends.base import Backend, InputSpec, LoadedModel
from chase_deploy.bench import (
    benchmark,
    format_table,
    interleave,
    slice_count,
    write_results,
)
from chase_deploy.commands.params import BatchSizes
from tests.bench_models import conv_net
from train.errors import BadInput

RESULT_KEYS = {"model", "backend", "batch", "latency_ms", "throughput", "speedup"}
LATENCY_KEYS = {"median", "mean", "p90", "p99", "min"}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_interleave_alternates_slices_and_counts_iterations():
    clock, calls = FakeClock(), []

    def timer(name, ms):
        def once():
            calls.append(name)
            clock.now += ms / 1000
            return ms

        return once

    # 0.5 s per model -> 4 slices of 0.125 s: A (31.25 ms) runs 4 iterations a slice, B (62.5 ms)
    # 2 (binary fractions, so the fake clock adds up exactly).
    out = interleave(
        [timer("A", 31.25), timer("B", 62.5)], warmup_ms=0, duration_s=0.5, clock=clock
    )
    assert calls[:2] == ["A", "B"]  # warm-up: one run each
    runs = [(name, len(list(group))) for name, group in groupby(calls[2:])]
    assert runs == [("A", 4), ("B", 2)] * 4
    assert [len(s) for s in out[0]] == [4, 4, 4, 4]
    assert out[1] == [[62.5, 62.5]] * 4


def test_interleave_runs_a_slow_model_once_per_slice_and_warms_up_by_time():
    clock, calls = FakeClock(), []

    def slow():
        calls.append("slow")
        clock.now += 0.5
        return 500.0

    def fast():
        calls.append("fast")
        clock.now += 1 / 1024
        return 1000 / 1024

    out = interleave([slow, fast], warmup_ms=20 * 1000 / 1024, duration_s=0.2, clock=clock)
    assert calls[:22] == ["slow"] + ["fast"] * 20 + ["slow"]  # one slow run covers its warm-up
    assert [len(s) for s in out[0]] == [1] * slice_count(0.2)


def test_slice_count_bounds():
    assert slice_count(0.05) == 4
    assert slice_count(2.0) == 10
    assert slice_count(600) == 50


class FakeModel(LoadedModel):
    def __init__(self, path: Path, ms_per_item: float, calls: list):
        self.path, self.ms_per_item, self.calls = path, ms_per_item, calls
        self.inputs = [InputSpec("x", (None, 4), np.dtype(np.float32))]

    def run(self, feeds):
        return [feeds["x"]]

    def timer(self, batch):
        def once():
            self.calls.append((self.path.name, batch))
            return self.ms_per_item * batch

        return once


class FakeBackend(Backend):
    name = "fake"
    timer_kind = "fake"
    threads = 3

    def __init__(self, speeds: dict[str, float]):
        self.speeds, self.calls = speeds, []

    def load(self, path, batches):
        return FakeModel(Path(path), self.speeds[Path(path).name], self.calls)

    def describe(self):
        return {"backend": self.name, "timer": self.timer_kind}


def test_benchmark_contract_speedup_and_throughput_arithmetic():
    backend = FakeBackend({"dense.onnx": 2.0, "slim.onnx": 0.5, "other.onnx": 4.0})
    models = ["runs/dense.onnx", "runs/slim.onnx", "runs/other.onnx"]
    result = benchmark(models, backend=backend, batches=[1, 8], warmup_ms=0, duration_s=0.01)
    assert set(result) == {"results", "environment"}
    rows = result["results"]
    assert [(r["model"], r["batch"]) for r in rows] == [(m, b) for b in (1, 8) for m in models]
    for row in rows:
        assert set(row) == RESULT_KEYS
        assert set(row["latency_ms"]) == LATENCY_KEYS
        assert row["backend"] == "fake"
        ms = {"dense.onnx": 2.0, "slim.onnx": 0.5, "other.onnx": 4.0}[
            Path(row["model"]).name
        ] * row["batch"]
        assert row["latency_ms"] == {"median": ms, "mean": ms, "p90": ms, "p99": ms, "min": ms}
        assert row["throughput"] == pytest.approx(row["batch"] * 1000 / ms)
    assert [r["speedup"] for r in rows] == [1.0, 4.0, 0.5, 1.0, 4.0, 0.5]
    env = result["environment"]
    assert env["threads"] == 3 and env["backend"] == {"backend": "fake", "timer": "fake"}
    assert env["method"]["throughput"].startswith("batch * 1000 / mean")
    assert {"cpu", "cores", "python", "onnxruntime", "tensorrt", "torch", "gpu"} <= set(env)
    json.dumps(result)  # plain JSON values only


def test_benchmark_interleaves_models_round_robin_per_batch():
    backend = FakeBackend({"a.onnx": 1.0, "b.onnx": 1.0})
    benchmark(["a.onnx", "b.onnx"], backend=backend, batches=[2, 4], warmup_ms=0, duration_s=0.02)
    runs = [key for key, _ in groupby(backend.calls)]
    n = slice_count(0.02)
    expected = [
        (m, b) for b in (2, 4) for m in ["a.onnx", "b.onnx"] * (n + 1)
    ]  # warm-up + n slices
    assert runs == expected


def test_unstable_slices_and_few_iterations_warn():
    row = {
        "model": "m.onnx",
        "batch": 8,
        "iterations": 4,
        "slices": 4,
        "cv_iterations": 0.3,
        "cv_slices": 0.2,
    }
    from chase_deploy.bench import _warnings

    warnings = _warnings(row)
    assert len(warnings) == 2
    assert "slices disagree (CV 20.0% > 5%)" in warnings[0]
    assert "only 4 iterations" in warnings[1]
    assert _warnings({**row, "iterations": 100, "cv_slices": 0.01}) == []


def test_stats_numbers():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s == {
        "median": 3.0,
        "mean": 4.0,
        "p90": pytest.approx(7.6),
        "p99": pytest.approx(9.76),
        "min": 1.0,
    }
    assert stats.throughput(8, 4.0) == 2000.0
    assert stats.speedup(3.0, 2.0) == 1.5
    assert stats.coefficient_of_variation([5.0]) == 0.0
    assert stats.slice_variation([[1.0, 1.0], [1.0, 1.0]]) == 0.0
    assert stats.slice_variation([[1.0], [2.0]]) == pytest.approx(np.std([1, 2], ddof=1) / 1.5)


def test_parse_batches():
    parse_batches = BatchSizes().convert
    assert parse_batches("1,8,32", None, None) == [1, 8, 32]
    assert parse_batches(" 4 ", None, None) == [4]
    for bad in ("0", "1,-8", "1.5", "a", "", "1,,2", "8,8"):
        with pytest.raises(BadInput):
            parse_batches(bad, None, None)


def test_benchmark_refuses_bad_settings():
    backend = FakeBackend({"a.onnx": 1.0})
    for kwargs, match in [
        ({"batches": [0]}, "positive integers"),
        ({"batches": [1.5]}, "positive integers"),
        ({"duration_s": 0}, "duration"),
        ({"warmup_ms": -1}, "warmup"),
        ({"threads": 0}, "threads"),
    ]:
        with pytest.raises(BadInput, match=match):
            benchmark(["a.onnx"], backend=backend, **kwargs)
    with pytest.raises(BadInput, match="unknown backend"):
        benchmark(["a.onnx"], backend="cuda")
    assert backend.calls == []


def test_real_ort_run_table_json_and_plot(tmp_path):
    dense = conv_net(tmp_path / "dense.onnx", width=32, size=16)
    slim = conv_net(tmp_path / "slim.onnx", width=8, size=16)
    result = benchmark([dense, slim], batches=[1, 4], warmup_ms=5, duration_s=0.05, threads=1)
    rows = result["results"]
    assert len(rows) == 4 and rows[0]["speedup"] == 1.0 and rows[2]["speedup"] == 1.0
    for row in rows:
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"]
        assert row["throughput"] == pytest.approx(row["batch"] * 1000 / lat["mean"])
    assert rows[1]["speedup"] == pytest.approx(
        rows[0]["latency_ms"]["median"] / rows[1]["latency_ms"]["median"]
    )
    env = result["environment"]
    assert env["threads"] == 1 and env["backend"]["intra_op_threads"] == 1
    assert env["backend"]["timer"] == "perf_counter"

    table = format_table(result)
    lines = table.splitlines()
    assert lines[0].split() == [
        "model",
        "batch",
        "median",
        "ms",
        "mean",
        "ms",
        "p90",
        "ms",
        "p99",
        "ms",
        "min",
        "ms",
        "items/s",
        "speedup",
    ]
    assert lines[1].split()[0] == "dense.onnx" and lines[1].split()[-1] == "1.00x"
    assert "1 threads" in table and "items/s = batch / mean latency" in table

    out_json, out_png = tmp_path / "out" / "bench.json", tmp_path / "out" / "bench.png"
    write_results(result, out_json, out_png)
    assert json.loads(out_json.read_text()) == json.loads(json.dumps(result))
    data = out_png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert sorted(p.name for p in out_json.parent.iterdir()) == ["bench.json", "bench.png"]


def test_write_results_leaves_nothing_when_the_plot_fails(tmp_path, monkeypatch):
    import chase_deploy.plots

    def broken(result):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(chase_deploy.plots, "plot_bench", broken)
    result = {"results": [], "environment": {}}
    with pytest.raises(RuntimeError):
        write_results(result, tmp_path / "r.json", tmp_path / "r.png")
    assert list(tmp_path.iterdir()) == []
