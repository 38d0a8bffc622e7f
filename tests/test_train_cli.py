"""`chase-deploy train` through the CLI: outputs per the contract, bad input, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from chase_deploy.cli import main
from tests.conftest import assert_same_run, write_recipe
from train.checkpoint import load_checkpoint

EPOCH_KEYS = {
    "event",
    "epoch",
    "step",
    "train_loss",
    "val_acc",
    "density",
    "channel_sparsity",
    "lr",
    "seconds",
    "train_flops",
    "train_flops_dense",
}


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_dense_run_writes_the_contract_files(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml", chase={"density": 1.0, "channel_sparsity": 0.0}, train={"epochs": 2}
    )
    out = tmp_path / "run"
    result = _run("train", str(recipe), "--out", str(out))
    assert result.exit_code == 0, result.output
    for name in (
        "recipe.yaml",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "final.pt",
        "channel_plan.json",
    ):
        assert (out / name).is_file(), name
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(EPOCH_KEYS <= set(r) for r in epochs)
    assert all(0.0 <= r["val_acc"] <= 1.0 and r["density"] == 1.0 for r in epochs)
    assert epochs[-1]["step"] == 2 * (192 // 32)
    plan = json.loads((out / "channel_plan.json").read_text())
    assert plan == {"format": "chase-channel-plan", "version": 1, "layers": {}}
    final = load_checkpoint(out / "final.pt")
    assert final["progress"] == {"epoch": 2, "step": 12}
    assert final["input_shape"] == [3, 8, 8]
    assert final["model"]["kwargs"]["num_classes"] == 4
    # a second run into the same directory is refused, nothing lost
    again = _run("train", str(recipe), "--out", str(out))
    assert again.exit_code == 2 and "already holds a run" in again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "chase.density=7"], "chase.density: 7.0 is out of range"),
        (["--set", "chase.denisty=0.1"], "chase.denisty: unknown key"),
        (["--set", "model.name=resnet9000"], "unknown model 'resnet9000'"),
        (["--set", "data.name=cifar10"], "data.root"),
        (
            ["--set", "data.name=cifar10", "--set", "data.root=/nonexistent/cifar"],
            "/nonexistent/cifar",
        ),
        (["--resume", "/nonexistent/last.pt"], "no such checkpoint"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    recipe = write_recipe(tmp_path / "r.yaml")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    assert not (out / "final.pt").exists()


def test_missing_and_broken_recipes(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("chase: {density: [\n")
    result = CliRunner().invoke(main, ["train", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "YAML syntax error" in result.output
    assert not (tmp_path / "o").exists()


def test_foreign_checkpoint_on_resume(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(recipe),
            "--out",
            str(tmp_path / "o"),
            "--resume",
            str(tmp_path / "foreign.pt"),
        ],
    )
    assert result.exit_code == 2 and "not a chase checkpoint" in result.output


def test_user_train_module_shadowing_is_reported(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('user code')\n")
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "chase_deploy", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "shadows it" in proc.stderr and "train.py" in proc.stderr


def _train_cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "chase_deploy",
        "train",
        str(recipe),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        train={"epochs": 4},
        # A GraSP start, and channel pruning to the end of training, past tau_stop.
        chase={"explore_until": 3, "channel_until": 4, "init": "grasp", "init_batches": 2},
        data={"num_train": 384},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(recipe, ref), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    steps_per_epoch = 384 // 32
    kill_at = 2 * steps_per_epoch + 5  # mid epoch 3, after epoch 2's last.pt
    killed = subprocess.run(
        _train_cmd(recipe, out),
        env={**env, "CHASE_DEPLOY_DEBUG_SIGKILL_AT": f"0:{kill_at}"},
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "final.pt").exists()
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["progress"] == {"epoch": 2, "step": 2 * steps_per_epoch}

    subprocess.run(
        _train_cmd(recipe, out, "--resume", "auto"), check=True, env=env, capture_output=True
    )
    assert_same_run(ref, out)
