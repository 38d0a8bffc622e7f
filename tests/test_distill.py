"""``train.distill``: the loss against a hand computation, the teacher's setup and checks, exact
resume, refusals (exit 2, one line, nothing written) and distillation with ``chase.shrink``."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from chase_deploy.cli import main
from chase_deploy.report import write_report
from tests.conftest import TINY_RECIPE, assert_same_run, train_run, write_recipe
from train.checkpoint import load_checkpoint
from train.config import DistillConfig, recipe_from_dict
from train.distill import build_teacher, kd_loss
from train.errors import BadInput
from train.metrics import read_metrics
from train.weights import sha256_file

DENSE = {"chase": {"density": 1.0, "channel_sparsity": 0.0}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense run of the tiny recipe: the teacher of every test here."""
    return train_run(tmp_path_factory.mktemp("teacher"), "dense", **DENSE)


def _distill(teacher: Path | str, **extra) -> dict:
    return {"distill": {"teacher": str(teacher), "alpha": 0.7, "temperature": 3.0} | extra}


def _train(recipe: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        main, ["train", str(recipe), "--out", str(out), "--device", "cpu", *extra]
    )


def test_kd_loss_equals_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g) * 3, torch.randn(5, 4, generator=g) * 3
    y = torch.tensor([0, 3, 1, 1, 2])
    alpha, temp = 0.7, 3.0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    ce = kl = 0.0
    for i in range(5):
        ce -= math.log(softmax(s[i].tolist())[int(y[i])])
        p_t = softmax([v / temp for v in t[i].tolist()])
        p_s = softmax([v / temp for v in s[i].tolist()])
        kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s, strict=True))
    hand = (1 - alpha) * ce / 5 + alpha * temp**2 * kl / 5
    assert float(kd_loss(s, t, y, alpha, temp)) == pytest.approx(hand, rel=1e-5)
    assert float(kd_loss(s, s, y, 1.0, temp)) == pytest.approx(0.0, abs=1e-6)
    # the gradient reaches the student only
    s.requires_grad_(True)
    kd_loss(s, t, y, alpha, temp).backward()
    assert s.grad is not None and not t.requires_grad


def test_teacher_is_frozen_in_eval_mode_and_checked(teacher: Path) -> None:
    cfg = DistillConfig(teacher=str(teacher))
    built = build_teacher(cfg, (3, 8, 8), 4, torch.device("cpu"))
    assert not built.model.training
    assert not any(p.requires_grad for p in built.model.parameters())
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    out = built.logits(x)
    assert out.shape == (3, 4) and not out.requires_grad
    assert built.record()["sha256"] == sha256_file(teacher / "final.pt")
    with pytest.raises(BadInput, match="predicts 4 classes, this run's data have 10 classes"):
        build_teacher(cfg, (3, 8, 8), 10, torch.device("cpu"))
    with pytest.raises(BadInput, match=r"was trained on inputs of shape \(3, 8, 8\), this run's"):
        build_teacher(cfg, (1, 8, 8), 4, torch.device("cpu"))


def test_a_weights_file_teacher_needs_its_model(teacher: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(teacher / "final.pt")
    torch.save(ckpt["state_dict"], tmp_path / "t.pt")
    with pytest.raises(BadInput, match="train.distill.model: teacher .* is a state_dict file"):
        build_teacher(DistillConfig(teacher=str(tmp_path / "t.pt")), (3, 8, 8), 4, torch.device("cpu"))  # fmt: skip
    cfg = DistillConfig(teacher=str(tmp_path / "t.pt"), model={"name": "resnet_quick", "width": 4})
    built = build_teacher(cfg, (3, 8, 8), 4, torch.device("cpu"))
    x = torch.randn(2, 3, 8, 8)
    ref = build_teacher(DistillConfig(teacher=str(teacher)), (3, 8, 8), 4, torch.device("cpu"))
    assert torch.equal(built.logits(x), ref.logits(x))
    wrong = DistillConfig(teacher=str(teacher), model={"name": "resnet_quick"})
    with pytest.raises(BadInput, match="names its own model .*; drop train.distill.model"):
        build_teacher(wrong, (3, 8, 8), 4, torch.device("cpu"))


def test_recipe_keys() -> None:
    raw = {**TINY_RECIPE, "train": {**TINY_RECIPE["train"], **_distill("t")}}
    recipe = recipe_from_dict(raw)
    assert recipe.train.distill == DistillConfig("t", 0.7, 3.0, None)
    assert recipe.to_dict()["train"]["distill"] == {
        "teacher": "t",
        "alpha": 0.7,
        "temperature": 3.0,
        "model": None,
    }
    assert "distill" not in recipe_from_dict(TINY_RECIPE).to_dict()["train"]
    for bad, message in [
        ({"alpha": 0.0}, "train.distill.alpha: 0.0 is out of range (0.0, 1.0]"),
        ({"temperature": -1}, "train.distill.temperature: -1.0 is out of range"),
        ({"model": {"width": 4}}, "train.distill.model: needs name"),
        ({"model": {"name": "nonet"}}, "train.distill.model.name: unknown model 'nonet'"),
        ({"model": {"name": "resnet_quick", "depth": 3}}, "train.distill.model.depth: not an"),
        ({"model": {"name": "resnet_quick", "weights": "x"}}, "train.distill.model.weights: the"),
        ({"teacher": None, "model": {"name": "resnet_quick"}}, "only with train.distill.teacher"),
    ]:
        raw = {**TINY_RECIPE, "train": {**TINY_RECIPE["train"], "distill": {"teacher": "t", **bad}}}
        with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
            recipe_from_dict(raw)


def test_training_distills_and_records_the_teacher(teacher: Path, tmp_path: Path) -> None:
    """The logged loss is the distillation loss: the same run with alpha → CE only differs."""
    recipe = write_recipe(tmp_path / "kd.yaml", train=_distill(teacher))
    out = tmp_path / "kd"
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    teacher_file = (teacher / "final.pt").resolve()
    said = f"distilling from {teacher_file} (sha256 {sha256_file(teacher_file)[:12]}): alpha "
    assert said in result.output
    run_recipe = recipe_from_dict(yaml.safe_load((out / "recipe.yaml").read_text()))
    report = write_report(out, run_recipe, {}, {}, {}, {}).read_text()
    assert (
        f"- Distilled from `{teacher_file}` (sha256 `{sha256_file(teacher_file)[:12]}`)" in report
    )
    sources = load_checkpoint(out / "final.pt")["sources"]
    assert sources == {
        "teacher": {
            "given": str(teacher),
            "path": str((teacher / "final.pt").resolve()),
            "sha256": sha256_file(teacher / "final.pt"),
            "format": "checkpoint",
        }
    }
    plain = train_run(tmp_path, "plain")
    kd_rows = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "epoch"]
    ce_rows = [r for r in read_metrics(plain / "metrics.jsonl") if r["event"] == "epoch"]
    assert kd_rows[0]["train_loss"] != ce_rows[0]["train_loss"]


def test_shrunk_distillation_equals_masked_distillation(teacher: Path, tmp_path: Path) -> None:
    masked = train_run(tmp_path, "masked", train=_distill(teacher))
    shrunk = train_run(tmp_path, "shrunk", train=_distill(teacher), chase={"shrink": True})
    assert [e for e in read_metrics(shrunk / "metrics.jsonl") if e["event"] == "shrink"]
    a, b = load_checkpoint(masked / "final.pt"), load_checkpoint(shrunk / "final.pt")
    assert a["channel_plan"] == b["channel_plan"] and a["channel_plan"]["layers"]
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key
    for key in a["masks"]:  # masked weights: zero where removed in both, close elsewhere
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=1e-4, atol=1e-5)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}  # fmt: skip


def test_bad_teachers_exit_2_in_one_line_writing_nothing(teacher: Path, tmp_path: Path) -> None:
    other = train_run(tmp_path, "ten", data={"num_classes": 10}, **DENSE)
    gray = train_run(tmp_path, "gray", data={"channels": 1}, **DENSE)
    cases = [
        (tmp_path / "absent", "train.distill.teacher: {p}: no such file or directory"),
        (other, "train.distill.teacher: {p} predicts 10 classes, this run's data have 4 classes"),
        (gray, "train.distill.teacher: {p} was trained on inputs of shape (1, 8, 8), this run's"),
    ]
    for path, message in cases:
        recipe = write_recipe(tmp_path / "r.yaml", train=_distill(path))
        out = tmp_path / "out"
        result = _train(recipe, out)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message.format(p=path) in lines[0], result.output
        assert not out.exists()


def test_resume_refuses_a_teacher_that_changed(teacher: Path, tmp_path: Path) -> None:
    copy = tmp_path / "teacher"
    copy.mkdir()
    (copy / "final.pt").write_bytes((teacher / "final.pt").read_bytes())
    recipe = write_recipe(tmp_path / "r.yaml", train=_distill(copy))
    out = tmp_path / "out"
    killed = subprocess.run(
        _cmd(recipe, out),
        env={**os.environ, "OMP_NUM_THREADS": "1", "CHASE_DEPLOY_DEBUG_SIGKILL_AT": "0:8"},
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    before = _snapshot(out)
    # the same classes and shapes, other values: another teacher under the same name
    ckpt = load_checkpoint(copy / "final.pt")
    ckpt["state_dict"] = {k: v * 2 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}  # fmt: skip
    torch.save(ckpt, copy / "final.pt")
    result = _train(recipe, out, "--resume", "auto")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert f"train.distill.teacher: {(copy / 'final.pt').resolve()} changed since this run started" in lines[0]  # fmt: skip
    assert _snapshot(out) == before
    # a different teacher path (the recipe's own check)
    recipe = write_recipe(tmp_path / "r.yaml", train=_distill(teacher))
    result = _train(recipe, out, "--resume", "auto")
    assert result.exit_code == 2
    assert "the recipe differs from the checkpoint's at train.distill.teacher" in result.output
    assert _snapshot(out) == before


def _cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chase_deploy", "train", str(recipe), "--out", str(out), "--device", "cpu", *extra]  # fmt: skip


@pytest.mark.slow
def test_resume_with_distillation_from_weights_is_bit_identical(
    teacher: Path, tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"weights": str(teacher)},
        train={"epochs": 4, **_distill(teacher)},
        chase={"explore_until": 3},
        data={"num_train": 384},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cmd(recipe, ref), check=True, env=env, capture_output=True)
    steps_per_epoch = 384 // 32
    kill_at = 2 * steps_per_epoch + 5  # mid epoch 3, after epoch 2's last.pt
    out = tmp_path / "killed"
    killed = subprocess.run(
        _cmd(recipe, out),
        env={**env, "CHASE_DEPLOY_DEBUG_SIGKILL_AT": f"0:{kill_at}"},
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["epoch"] == 2
    subprocess.run(_cmd(recipe, out, "--resume", "auto"), check=True, env=env, capture_output=True)
    assert_same_run(ref, out)
    assert load_checkpoint(out / "final.pt")["sources"] == load_checkpoint(ref / "final.pt")["sources"]  # fmt: skip
