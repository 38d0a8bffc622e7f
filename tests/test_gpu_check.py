"""The GPU check's scripts (tests/gpu/) run here first, on the box's package set, so their first
run on the GPU box does not die on something a CPU could have caught.

``tests/gpu/box.py emulate`` builds a stand-in for the box: this interpreter seeing only the
box's distributions (torch, onnx, onnxruntime as a CPU build, pytest, ...; no onnx-graphsurgeon,
onnxconverter-common, TensorRT, onnxruntime-gpu, no installed chase-deploy), ``python3`` on
``PATH`` and a ``python`` that is not the interpreter with torch. The carried wheels are built
from this installation (``box.py pack``, offline), as ``fetch_wheels.sh --installed`` does, so
CI needs no package index. Then ``check.sh --dry-run`` runs there as a subprocess with the
project only on ``PYTHONPATH`` and must end "ok" with ``prepare.json`` and ``bench.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / "tests" / "gpu"


def load(name: str):
    sys.path.insert(0, str(GPU_DIR))
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


box = load("box")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """The box stand-in (``emu``) and the carried wheels (``wheels``), built from this install."""
    folder = tmp_path_factory.mktemp("box")
    box.emulate(folder / "emu")
    for name in box.CARRIED:
        box.pack(name, folder / "wheels")
    (folder / "no-wheels").mkdir()
    return folder


def box_env(stand_in: Path, *pythonpath: Path | str, **extra: str) -> dict:
    """The environment of a process on the stand-in: its bin first on PATH, its site folder and
    ``pythonpath`` as the only packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{stand_in / 'emu' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(map(str, [stand_in / "emu" / "site", *pythonpath]))
    env.update(extra)
    return env


PROBE = """
import importlib, importlib.metadata, json
found = {}
for name in ("torch", "numpy", "onnx", "onnxscript", "onnx_ir", "onnxruntime", "pytest",
             "hypothesis", "click", "yaml", "tqdm", "matplotlib", "sklearn", "ml_dtypes",
             "onnx_graphsurgeon", "onnxconverter_common", "tensorrt", "chase_deploy", "train"):
    try:
        found[name] = getattr(importlib.import_module(name), "__file__", None) or "namespace"
    except ImportError:
        found[name] = None
import onnxruntime
dists = {}
for dist in ("onnxruntime", "onnxruntime-gpu", "chase-deploy", "onnx-graphsurgeon", "torch"):
    try:
        dists[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        dists[dist] = None
print(json.dumps({"found": found, "providers": onnxruntime.get_available_providers(),
                  "device": onnxruntime.get_device(), "dists": dists}))
"""


def probe(stand_in: Path, *pythonpath, cwd: Path) -> dict:
    out = subprocess.run(
        ["python3", "-c", PROBE],
        env=box_env(stand_in, *pythonpath),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Error in sitecustomize" not in out.stderr, out.stderr
    return json.loads(out.stdout)


def test_the_stand_in_has_exactly_the_box_packages(stand_in, tmp_path):
    seen = probe(stand_in, cwd=tmp_path)
    found = seen["found"]
    missing = {n for n, f in found.items() if f is None}
    assert missing == {
        "onnx_graphsurgeon",
        "onnxconverter_common",
        "tensorrt",
        "chase_deploy",  # the project is not installed there
        "train",
    }
    assert all(str(stand_in / "emu" / "site") in found[n] for n in ("torch", "onnx", "pytest"))
    assert seen["providers"] == ["CPUExecutionProvider"] and seen["device"] == "CPU"
    assert seen["dists"]["onnxruntime"] and seen["dists"]["torch"]
    assert seen["dists"]["onnxruntime-gpu"] is None and seen["dists"]["chase-deploy"] is None
    assert seen["dists"]["onnx-graphsurgeon"] is None
    # The project from PYTHONPATH and the carried wheels as zips: everything imports.
    wheels = sorted((stand_in / "wheels").glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["onnx_graphsurgeon", "onnxconverter_common"]
    seen = probe(stand_in, ROOT, *wheels, cwd=tmp_path)["found"]
    assert seen["chase_deploy"].startswith(str(ROOT))
    assert ".whl" in seen["onnx_graphsurgeon"] and ".whl" in seen["onnxconverter_common"]
    assert seen["tensorrt"] is None


def test_packed_wheels_are_pure_and_binary_ones_are_refused(stand_in, tmp_path):
    for wheel in (stand_in / "wheels").glob("*.whl"):
        assert wheel.name.endswith("-py3-none-any.whl")
        names = zipfile.ZipFile(wheel).namelist()
        assert any(n.endswith(".dist-info/METADATA") for n in names)
        assert not any(n.endswith((".so", ".pyd")) for n in names)
    with pytest.raises(ValueError, match="onnxruntime-gpu is not pure Python"):
        box.pack("onnxruntime-gpu", tmp_path)


def run_check(stand_in: Path, out: Path, wheels: Path) -> subprocess.CompletedProcess:
    env = box_env(
        stand_in,
        OUT=str(out),
        CHECK_WHEELS=str(wheels),
        CHECK_BUDGET_S="100000",  # this CPU is shared: pytest-timeout is the one time limit
    )
    return subprocess.run(
        ["bash", str(GPU_DIR / "check.sh"), "--dry-run"],
        env=env,
        cwd=out.parent,
        capture_output=True,
        text=True,
    )


def test_check_without_the_wheels_stops_at_once_naming_them(stand_in, tmp_path):
    out = tmp_path / "out"
    result = run_check(stand_in, out, stand_in / "no-wheels")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "still missing: onnx_graphsurgeon onnxconverter_common" in result.stdout
    assert "bash tests/gpu/fetch_wheels.sh" in result.stdout
    check = json.loads((out / "check.json").read_text())
    assert check["status"] == "failed"
    assert [s["name"] for s in check["steps"]] == ["imports"]
    assert not (out / "prepare.json").exists() and not (out / "bench.json").exists()


@pytest.mark.slow
def test_check_dry_run_on_the_box_packages_ends_ok(stand_in, tmp_path):
    out = tmp_path / "out"
    result = run_check(stand_in, out, stand_in / "wheels")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert f"python {stand_in / 'emu' / 'bin' / 'python3'}" in log  # python3, not python
    assert "appended 2 wheel(s)" in log
    check = json.loads((out / "check.json").read_text())
    assert check["status"] == "ok", log
    assert [(s["name"], s["exit"]) for s in check["steps"]] == [
        ("imports", 0),
        ("gpu_tests", 0),
        ("prepare", 0),
        ("bench", 0),
    ]
    tests = check["gpu_tests"]
    assert tests["errors"] == 0 and tests["failures"] == 0
    assert tests["tests"] == tests["skipped"] > 0  # no GPU here: every GPU test skips
    prepare = json.loads((out / "prepare.json").read_text())
    assert sorted(prepare["models"]) == ["dense", "slim", "slim_r8"]
    assert all(m["lossless"] for m in prepare["models"].values())
    bench = json.loads((out / "bench.json").read_text())
    assert bench["complete"] and bench["missing"] == []
    assert [(p["mode"], p["batch"], p["status"]) for p in bench["phases"]] == [
        ("eager", 1, "done"),
        ("eager", 2, "done"),
    ]
    assert {(r["model"], r["batch"]) for r in bench["table"]} == {
        (m, b) for m in ("dense", "slim", "slim_r8") for b in (1, 2)
    }
    assert (
        bench["environment"]["backend"]["batchnorm"]
        == "weights and running statistics kept in fp32"
    )
    assert bench["inputs"].startswith("rotating")
    assert "inputs: rotating" in log


def test_phase_plan_and_estimates():
    bench = load("bench_resnet50")
    assert bench.plan_phases(["eager", "compiled"], [1, 32, 256]) == [
        ("eager", 1),
        ("eager", 32),
        ("eager", 256),
        ("compiled", 256),
        ("compiled", 32),
        ("compiled", 1),
    ]
    assert bench.estimate_s("eager", 1, []) == 0.0
    assert bench.estimate_s("compiled", 256, []) == bench.FIRST_COMPILE_S
    done = [
        {"mode": "eager", "batch": 1, "status": "done", "seconds": 4.0},
        {"mode": "eager", "batch": 32, "status": "done", "seconds": 6.0},
        {"mode": "compiled", "batch": 256, "status": "done", "seconds": 90.0},
    ]
    assert bench.estimate_s("eager", 256, done[:2]) == 6.0
    assert bench.estimate_s("compiled", 32, done) == 6.0  # compiles nothing: like eager
    assert bench.estimate_s("compiled", 1, done) == 90.0  # a graph of its own
    later = [*done, {"mode": "compiled", "batch": 32, "status": "done", "seconds": 8.0}]
    assert bench.estimate_s("compiled", 16, later) == 8.0


def test_prepare_plan_rounding():
    prepare = load("prepare")
    from slim_speedup import chase_model

    from train.plan import parse_plan

    model, _, layers = chase_model(seed=0)
    plan = parse_plan({"format": "chase-channel-plan", "version": 1, "layers": layers})
    rounded = prepare.rounded_plan(model, plan, 8)
    for key, entry in plan.layers.items():
        wide = rounded.layers[key].kept
        assert len(wide) % 8 == 0 and set(entry.kept) <= set(wide)
        assert len(wide) - len(entry.kept) < 8


def steps(*rows) -> list[dict]:
    return [{"name": n, "exit": e, "seconds": 1} for n, e in rows]


TESTS_OK = {"tests": 5, "failures": 0, "errors": 0, "skipped": 5}
BENCH_DONE = {"complete": True}
ALL_RAN = (("imports", 0), ("gpu_tests", 0), ("prepare", 0), ("bench", 0))


@pytest.mark.parametrize(
    ("rows", "tests", "bench", "expected"),
    [
        (ALL_RAN, TESTS_OK, BENCH_DONE, "ok"),
        (ALL_RAN, {**TESTS_OK, "errors": 1}, BENCH_DONE, "failed"),  # a broken fixture
        (ALL_RAN, {**TESTS_OK, "failures": 1}, BENCH_DONE, "failed"),
        (ALL_RAN, None, BENCH_DONE, "incomplete"),
        (ALL_RAN, TESTS_OK, {"complete": False}, "incomplete"),
        (ALL_RAN[:3] + (("bench", 124),), TESTS_OK, {"phases": []}, "incomplete"),
        (ALL_RAN[:3] + (("bench", 137),), TESTS_OK, {"phases": []}, "incomplete"),
        (ALL_RAN[:3] + (("bench", 124),), TESTS_OK, None, "failed"),  # nothing was timed
        (ALL_RAN[:3] + (("bench", 1),), TESTS_OK, BENCH_DONE, "failed"),
        ((("imports", "missing: onnx_graphsurgeon"),), None, None, "failed"),
        ((("imports", 0), ("gpu_tests", 0), ("prepare", 1)), TESTS_OK, None, "failed"),
    ],
)
def test_summary_status(rows, tests, bench, expected):
    assert load("summary").status(steps(*rows), tests, bench) == expected


def test_bench_loads_and_compiles_each_model_once_per_mode(tmp_path, monkeypatch):
    """Two modes, two batches each: every program is loaded once per mode (not per phase), and
    compiled once: the compiled model's graphs serve its batches (2 dynamic, 1 its own)."""
    import torch
    from torch_models import dense_and_slim

    from chase_deploy.backends import pytorch

    bench = load("bench_resnet50")
    programs = dense_and_slim(tmp_path)
    prepared = {
        "input_shape": [3, 8, 8],
        "models": {
            name: {"path": str(programs[source]), "flop_bound": bound}
            for name, source, bound in (
                ("dense", "dense", 1.0),
                ("slim", "slim", 1.6),
                ("slim_r8", "slim", 1.6),
            )
        },
    }
    (tmp_path / "prepare.json").write_text(json.dumps(prepared))
    loads, graphs = [], []
    load_pt2 = pytorch.TorchBackend.load

    def counted_load(self, path, batches):
        loads.append((self.compile, Path(path).name))
        return load_pt2(self, path, batches)

    def count(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(pytorch.TorchBackend, "load", counted_load)
    monkeypatch.setattr(pytorch, "COMPILE_OPTIONS", {"backend": count})
    out = tmp_path / "bench.json"
    argv = ["--prepared", str(tmp_path), "--out", str(out), "--dry-run"]
    assert bench.main([*argv, "--modes", "eager,compiled", "--budget-s", "1e6"]) == 0
    report = json.loads(out.read_text())
    assert [(p["mode"], p["batch"], p["status"]) for p in report["phases"]] == [
        ("eager", 1, "done"),
        ("eager", 2, "done"),
        ("compiled", 2, "done"),
        ("compiled", 1, "done"),
    ]
    names = ["dense.pt2", "slim.pt2", "slim.pt2"]
    assert loads == [(False, n) for n in names] + [(True, n) for n in names]
    assert len(graphs) == 2 * 3  # per model: one graph for batch 2, one for batch 1
    assert report["complete"] and len(report["table"]) == 12
    assert all("torch.compile" in p["backend"]["mode"] for p in report["phases"][2:])
