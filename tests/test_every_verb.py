"""Every verb on every test architecture: it succeeds, or it refuses with exit 2 and one line.

A user names a network as it comes (``own_models.EVERY``: the six "bring your own model"
structures and the issue-20 patterns: state-dict version logic, auxiliary outputs, Fire and OSA
concatenations, a Ghost module, MobileNetV3's hard-sigmoid gates, RegNet's 8-channel conv
groups) and runs each verb on it (``slim`` of an ONNX model with the run's plan and without a
plan, from its zero channels). No verb may end in a traceback: an unexpected internal error is
a bug. Each architecture trains twice (Chase at density 0.3
and channel sparsity 0.4 through ``run``, and unstructured for ``ablate``) on 16x16 synthetic
images, and every other verb works on what those runs wrote.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from chase_deploy.cli import main
from chase_deploy.graph import analysis as graph_analysis
from tests import own_models
from tests.conftest import write_recipe
from tests.derived_groups import analyze_cached

DATA = {
    "name": "synthetic",
    "image_size": 16,
    "channels": 3,
    "num_classes": 4,
    "num_train": 32,
    "num_val": 16,
    "batch_size": 16,
    "crop_padding": 1,
}
CHASE = {
    "density": 0.3,
    "update_every": 2,
    "channel_every": 2,
    "explore_until": 2,
    "channel_sparsity": 0.4,
    "beta": 0.5,
    "growth_extra": 0.05,
}
DEPLOY = {
    "batch_sizes": [2],
    "duration_s": 0.02,
    "warmup_ms": 1,
    "round_to": 8,
    "backends": ["ort-cpu"],
}
# Verbs that refuse on this machine, with the line they must say (no TensorRT here).
REFUSED = {"build": "TensorRT"}


def invoke(*args) -> tuple[int, str]:
    """Exit code and output; an exception that escaped the CLI is shown with its traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    output = result.output
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        output += "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, output


def check(verb: str, code: int, output: str, failures: list[str]) -> None:
    """Exit 0, or exit 2 with exactly one line (``error: ...``); never a traceback."""
    lines = output.strip().splitlines()
    if code == 0 and verb not in REFUSED:
        return
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        if REFUSED.get(verb, "\0") in lines[0]:
            return
        failures.append(f"{verb}: refused: {lines[0]}")
        return
    failures.append(f"{verb}: exit {code}: {output.strip()[-600:]}")


ARCHITECTURES = [
    pytest.param(a, marks=pytest.mark.slow) if a in own_models.PATTERNS else a
    for a in own_models.EVERY
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_verb_succeeds_or_refuses_in_one_line(arch: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(graph_analysis, "analyze", analyze_cached)  # one trace per architecture
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"name": f"own_models:{arch}", "width": 8},
        data=DATA,
        train={"epochs": 3},
        chase=CHASE,
        deploy=DEPLOY,
    )
    run, flat = tmp_path / "run", tmp_path / "flat"
    failures: list[str] = []
    steps = [
        ("inspect", ("inspect", recipe)),
        ("run", ("run", recipe, "--out", run, "--device", "cpu")),
        ("inspect", ("inspect", run / "final.pt")),
        ("inspect", ("inspect", run / "slim.onnx", "--json")),
        ("analyze", ("analyze", run)),
        (
            "slim",
            (
                "slim",
                run / "dense.onnx",
                "--plan",
                run / "channel_plan.json",
                "--out",
                tmp_path / "again.onnx",
                "--round-to",
                "8",
            ),
        ),  # fmt: skip
        ("slim", ("slim", run / "dense.onnx", "--out", tmp_path / "zeros.onnx")),  # no plan
        (
            "bench",
            (
                "bench",
                run / "dense.pt2",
                run / "slim.pt2",
                "--backend",
                "torch-cpu",
                "--batch",
                "2",
                "--duration-s",
                "0.02",
                "--warmup-ms",
                "1",
            ),
        ),  # fmt: skip
        ("build", ("build", run / "slim.onnx", "--out", tmp_path / "slim.engine")),
        (
            "train",
            (
                "train",
                recipe,
                "--out",
                flat,
                "--device",
                "cpu",
                "--set",
                "chase.channel_sparsity=0",
            ),
        ),  # fmt: skip
        (
            "ablate",
            (
                "ablate",
                flat,
                "--criteria",
                "umm",
                "--channel-sparsity",
                "0.3",
                "--bn-batches",
                "1",
                "--device",
                "cpu",
            ),
        ),  # fmt: skip
    ]

    for verb, args in steps:
        code, output = invoke(*args)
        check(verb, code, output, failures)
        if verb == "run" and code != 0:
            break  # nothing to work on
    assert not failures, "\n".join(failures)
    report = json.loads((run / "slim_report.json").read_text())
    assert report["lossless"] and report["pt2"]["slim"] is not None
    groups = json.loads((run / "channel_groups.json").read_text())
    assert groups["input_shape"] == [3, 16, 16] and groups["groups"]
    zeros = json.loads((tmp_path / "zeros.report.json").read_text())  # the plan from the zeros
    assert zeros["lossless"] and zeros["params"]["slim"] < zeros["params"]["dense"]


REAL = [
    ("torchvision:mnasnet0_5", 32),
    ("torchvision:googlenet", 32),
    ("torchvision:inception_v3", 299),  # its auxiliary head needs the full size
    ("torchvision:squeezenet1_1", 32),
    ("timm:ghostnet_100", 32),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), REAL)
def test_the_real_models_where_their_package_imports(name: str, size: int, tmp_path: Path) -> None:
    """The models the issue found failing, as they come, where torchvision/timm import."""
    package = name.partition(":")[0]
    try:
        __import__(package)
    except Exception as e:  # noqa: BLE001 - a CUDA build beside a CPU torch fails oddly
        pytest.skip(f"{package} does not import here ({type(e).__name__})")
    recipe = write_recipe(
        tmp_path / "r.yaml", data={**DATA, "image_size": size}, train={"epochs": 2}, chase=CHASE
    )
    raw = yaml.safe_load(recipe.read_text())
    recipe.write_text(yaml.safe_dump({**raw, "model": {"name": name}}))
    failures: list[str] = []
    run = tmp_path / "run"
    code, output = invoke("train", recipe, "--out", run, "--device", "cpu")
    check("train", code, output, failures)
    if code == 0:
        check("slim", *invoke("slim", run / "final.pt", "--round-to", "8"), failures)
    assert not failures, "\n".join(failures)
