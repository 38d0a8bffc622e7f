"""Multi-process training under torchrun (gloo, CPU): identical replicas, one writer, exact
resume after a rank dies, and validation accuracy that counts every sample once.

The ``distributed`` tests spawn real torchrun jobs of two processes; the others check the
collectives' single-process behaviour and the checksum in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from chase_deploy.cli import main
from tests.conftest import write_recipe
from train.checkpoint import build_model_from_checkpoint, load_checkpoint
from train.config import recipe_from_dict
from train.data import build_data
from train.distributed import (
    TIMEOUT_ENV,
    DistInfo,
    check_agreement,
    fingerprint,
    from_main,
    init_distributed,
    process_device,
    sync_buffers,
)
from train.errors import BadInput
from train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6
STEPS_PER_EPOCH = 512 // 32
CPU = torch.device("cpu")

needs_gloo = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]  # fmt: skip


def _train_dumping(recipe: Path, out: Path, dump: Path) -> str:
    """Run a 2-process job whose ranks dump their final state into ``dump``; its stderr."""
    proc = subprocess.run(
        _train(recipe, out),
        env=_env(CHASE_DEPLOY_DEBUG_DUMP_DIR=str(dump)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _train(recipe: Path, out: Path, *extra: str) -> list[str]:
    return _torchrun("-m", "chase_deploy", "train", str(recipe), "--out", str(out), "--device", "cpu", *extra)  # fmt: skip


def _strip_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _evaluate_alone(checkpoint: Path) -> float:
    """Accuracy of a checkpoint over the whole validation set, in this one process."""
    ckpt = load_checkpoint(checkpoint)
    recipe = recipe_from_dict(ckpt["recipe"])
    model = build_model_from_checkpoint(ckpt)
    correct = total = 0
    with torch.no_grad():
        for x, y in build_data(recipe.data, recipe.seed).val.batches(0):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    assert total == recipe.data.num_val
    return correct / total


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted 2-process sparse run; each rank dumps its final state."""
    root = tmp_path_factory.mktemp("ddp")
    recipe = write_recipe(
        root / "r.yaml",
        data={"num_train": 32 * STEPS_PER_EPOCH},
        train={"epochs": EPOCHS},
        chase={"explore_until": 3, "update_every": 4, "channel_every": 4},
    )
    out, dump = root / "ref", root / "dump"
    log = _train_dumping(recipe, out, dump)
    return {"root": root, "recipe": recipe, "out": out, "dump": dump, "log": log}


# ------------------------------------------------------------------------------- torchrun jobs


@needs_gloo
@pytest.mark.distributed
def test_ranks_hold_identical_weights_and_masks(reference: dict) -> None:
    rank0 = torch.load(reference["dump"] / "rank0.pt", weights_only=True)
    rank1 = torch.load(reference["dump"] / "rank1.pt", weights_only=True)
    assert (rank0["world"], rank1["world"], rank0["rank"], rank1["rank"]) == (2, 2, 0, 1)
    a, b = rank0["state"], rank1["state"]
    assert a.keys() == b.keys()
    masks = [k for k in a if k.startswith("mask ")]
    assert len(masks) > 5
    assert any(k.endswith("running_mean") for k in a)  # BatchNorm statistics included
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # ... after many explorations and channel events, each followed by the masks check
    events = read_metrics(reference["out"] / "metrics.jsonl")
    explorations = [e for e in events if e["event"] == "exploration"]
    channel_events = [e for e in events if e["event"] == "channels" and e["removed"] > 0]
    assert len(explorations) >= 10 and len(channel_events) >= 5
    # and rank 0's checkpoint holds exactly that state
    final = load_checkpoint(reference["out"] / "final.pt")
    for key, value in final["state_dict"].items():
        assert torch.equal(value, a[key]), key
    for key, value in final["masks"].items():
        assert torch.equal(value, a[f"mask {key}"]), key


@needs_gloo
@pytest.mark.distributed
def test_every_rank_frees_its_process_group_before_exit(reference: dict) -> None:
    """No gloo thread outlives training: none is left for interpreter teardown to abort on."""
    for rank in (0, 1):
        exit_state = json.loads((reference["dump"] / f"rank{rank}.exit.json").read_text())
        assert exit_state == {"rank": rank, "live_process_group_threads": []}


@needs_gloo
@pytest.mark.distributed
def test_rank_zero_alone_writes_and_logs(reference: dict) -> None:
    out = reference["out"]
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert names == [
        "channel_groups.json",
        "channel_plan.json",
        "checkpoints",
        "checkpoints/last.pt",
        "final.pt",
        "metrics.jsonl",
        "recipe.yaml",
    ]
    epochs = [e for e in read_metrics(out / "metrics.jsonl") if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))  # one line each, not two
    assert epochs[-1]["step"] == EPOCHS * STEPS_PER_EPOCH  # the global batch sets the steps
    assert reference["log"].count("wrote ") == 1
    assert "2 process(es)" in reference["log"]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["world_size"] == 2


@needs_gloo
@pytest.mark.distributed
def test_logged_accuracy_equals_single_process_evaluation(reference: dict) -> None:
    final = reference["out"] / "final.pt"
    alone = _evaluate_alone(final)
    logged = [e for e in read_metrics(reference["out"] / "metrics.jsonl") if e["event"] == "epoch"]
    assert logged[-1]["val_acc"] == alone
    assert load_checkpoint(final)["val_acc"] == alone


KILL_STEP = STEPS_PER_EPOCH + 3  # mid epoch 2, after rank 0 wrote epoch 1's last.pt


def _killing_rank_one(**extra: str) -> dict[str, str]:
    """Rank 1 SIGKILLs itself right after step KILL_STEP: a crash at a known point, no polling."""
    return _env(CHASE_DEPLOY_DEBUG_SIGKILL_AT=f"1:{KILL_STEP}", **extra)


def _assert_same_final(reference: dict, out: Path) -> None:
    a, b = load_checkpoint(reference["out"] / "final.pt"), load_checkpoint(out / "final.pt")
    assert a["progress"] == b["progress"] == {"epoch": EPOCHS, "step": EPOCHS * STEPS_PER_EPOCH}
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key
    assert a["channel_plan"] == b["channel_plan"] and a["channel_plan"]["layers"]
    ref_rows = read_metrics(reference["out"] / "metrics.jsonl")
    assert _strip_seconds(ref_rows) == _strip_seconds(read_metrics(out / "metrics.jsonl"))


@needs_gloo
@pytest.mark.distributed
def test_killed_rank_stops_the_job_and_resume_matches(reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = subprocess.run(
        _train(reference["recipe"], out), env=_killing_rank_one(), capture_output=True, text=True
    )  # returns at all: the launcher takes the job down when a rank dies
    assert proc.returncode != 0
    assert "Signal 9 (SIGKILL) received by PID" in proc.stderr
    assert not (out / "final.pt").exists()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"] == {
        "epoch": 1,
        "step": STEPS_PER_EPOCH,
    }

    resumed = subprocess.run(
        _train(reference["recipe"], out, "--resume", "auto"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 1" in resumed.stderr
    _assert_same_final(reference, out)


@needs_gloo
@pytest.mark.distributed
def test_torchrun_restart_resumes_by_itself(reference: dict, tmp_path: Path) -> None:
    """`torchrun --max-restarts 1 ... --resume auto`: the relaunched workers pick up last.pt.

    The relaunched rank 1 passes step KILL_STEP again without dying: torchrun numbers the
    attempt, and the kill is armed for the first one only."""
    out = tmp_path / "elastic"
    cmd = _train(reference["recipe"], out, "--resume", "auto")
    cmd.insert(cmd.index("--nproc_per_node"), "--max-restarts=1")
    proc = subprocess.run(cmd, env=_killing_rank_one(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failed (exitcode: -9) local_rank: 1" in proc.stderr
    assert "resumed from" in proc.stderr and "at epoch 1" in proc.stderr
    _assert_same_final(reference, out)


@needs_gloo
@pytest.mark.distributed
def test_collectives_across_two_ranks(tmp_path: Path) -> None:
    proc = subprocess.run(
        _torchrun(str(ROOT / "tests" / "dist_worker.py"), str(tmp_path)),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["world"] == 2 and r["agree_same"] == "ok"
        assert r["agree_mask_bit"].startswith("RuntimeError: ranks disagree in a test on mask conv.weight:")  # fmt: skip
        assert r["agree_weight_ulp"].startswith("RuntimeError: ranks disagree in a test on conv.weight:")  # fmt: skip
        assert r["none"] is True
        assert r["bad_input"] == "BadInput: --resume x: no such checkpoint"
        assert r["running_mean"] == [1.0, 1.0, 1.0]  # rank 0's
        assert r["threads_with_ddp"] == ["gloo_tcp_loop", "pt_gloo_runloop", "pt_gloo_runloop"]
        assert r["threads_after_shutdown"] == []
    assert ranks[0]["bytes_sha"] == ranks[1]["bytes_sha"]


@needs_gloo
@pytest.mark.distributed
def test_bad_input_stops_every_rank(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", data={"batch_size": 33})
    proc = subprocess.run(
        _train(recipe, tmp_path / "o"), env=_env(), capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "data.batch_size: 33 does not divide over 2 processes" in proc.stderr
    assert not (tmp_path / "o").exists()


@needs_gloo
@pytest.mark.distributed
def test_shrunk_ranks_rebuild_together_and_match_the_masked_run(
    reference: dict, tmp_path: Path
) -> None:
    """``chase.shrink`` under torchrun: every rank rebuilds its model (and DDP wrapper and
    optimizer) at the same steps, the masks agree after every event (the controller checks it and
    would stop the job), and the result is the masked reference run's."""
    raw = yaml.safe_load(reference["recipe"].read_text())
    raw["chase"]["shrink"] = True
    recipe = tmp_path / "shrink.yaml"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    out, dump = tmp_path / "out", tmp_path / "dump"
    _train_dumping(recipe, out, dump)
    rank0 = torch.load(dump / "rank0.pt", weights_only=True)
    rank1 = torch.load(dump / "rank1.pt", weights_only=True)
    shrinks = [e["step"] for e in read_metrics(out / "metrics.jsonl") if e["event"] == "shrink"]
    assert len(shrinks) >= 2 and rank0["shrink_steps"] == rank1["shrink_steps"] == shrinks
    a, b = rank0["state"], rank1["state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    masked = torch.load(reference["dump"] / "rank0.pt", weights_only=True)["state"]
    assert masked.keys() == a.keys()
    masks = [k for k in a if k.startswith("mask ")]
    for key in masks:
        assert torch.equal(a[key], masked[key]), key
        weight = key.removeprefix("mask ")
        assert a[weight].shape == masked[weight].shape  # dense shapes
        torch.testing.assert_close(a[weight], masked[weight], rtol=1e-3, atol=1e-4)
    final = load_checkpoint(out / "final.pt")
    assert final["channel_plan"] == load_checkpoint(reference["out"] / "final.pt")["channel_plan"]


@needs_gloo
@pytest.mark.distributed
def test_distillation_from_weights_under_torchrun(reference: dict, tmp_path: Path) -> None:
    """``train.distill`` and ``model.weights`` under torchrun: each rank runs the frozen teacher
    on its shard, the replicas stay identical, rank 0 records the teacher and the weights."""
    raw = yaml.safe_load(reference["recipe"].read_text())
    teacher = reference["out"] / "final.pt"
    raw["model"]["weights"] = str(teacher)
    raw["train"]["distill"] = {"teacher": str(reference["out"]), "alpha": 0.8, "temperature": 2.0}
    recipe = tmp_path / "kd.yaml"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
    out, dump = tmp_path / "out", tmp_path / "dump"
    _train_dumping(recipe, out, dump)
    a = torch.load(dump / "rank0.pt", weights_only=True)["state"]
    b = torch.load(dump / "rank1.pt", weights_only=True)["state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sources = json.loads((out / "sources.json").read_text())
    assert sources["teacher"]["sha256"] == sources["weights"]["sha256"]
    assert sources["teacher"]["path"] == str(teacher.resolve())
    assert load_checkpoint(out / "final.pt")["sources"] == sources
    kd = [e["train_loss"] for e in read_metrics(out / "metrics.jsonl") if e["event"] == "epoch"]
    ce = [e["train_loss"] for e in read_metrics(reference["out"] / "metrics.jsonl") if e["event"] == "epoch"]  # fmt: skip
    assert len(kd) == EPOCHS and kd != ce


# ------------------------------------------------------------------------------- in-process


def test_resuming_with_another_process_count_says_so(reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "one"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(
        (reference["out"] / "checkpoints" / "last.pt").read_bytes()
    )
    result = CliRunner().invoke(
        main, ["train", str(reference["recipe"]), "--out", str(out), "--resume", "auto"]
    )
    assert result.exit_code == 0, result.output
    assert "trained with 2 process(es), resuming with 1" in result.output
    assert load_checkpoint(out / "final.pt")["progress"]["epoch"] == EPOCHS


def test_fingerprint_sees_every_bit_and_position() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 5, 7, generator=g)
    mask = torch.rand(4000, generator=g) < 0.5
    base = fingerprint([w, mask])
    assert torch.equal(base, fingerprint([w.clone(), mask.clone()]))
    nudged = w.clone()
    nudged[1, 2, 3] = torch.nextafter(nudged[1, 2, 3], torch.tensor(10.0))
    assert fingerprint([nudged, mask])[0] != base[0]
    flipped = mask.clone()
    flipped[3999] = ~flipped[3999]
    assert fingerprint([w, flipped])[1] != base[1]
    i, j = int((mask).nonzero()[0]), int((~mask).nonzero()[0])
    swapped = mask.clone()
    swapped[i], swapped[j] = mask[j], mask[i]  # same count, other positions
    assert int(swapped.sum()) == int(mask.sum())
    assert fingerprint([w, swapped])[1] != base[1]
    assert fingerprint([torch.zeros(3)])[0] != fingerprint([torch.zeros(4)])[0]
    small_first = fingerprint([torch.tensor(5), w, mask])  # one weights table serves all sizes
    assert torch.equal(small_first[1:], base)
    for t in (torch.tensor(5), torch.ones(9, dtype=torch.bfloat16), torch.arange(10, dtype=torch.int8)):  # fmt: skip
        assert fingerprint([t]).dtype == torch.int64


def test_big_tensors_are_fingerprinted_in_chunks_exactly() -> None:
    big = torch.zeros(3_000_000, dtype=torch.bool)
    big[2_500_000] = True
    moved = torch.zeros_like(big)
    moved[2_500_001] = True
    assert fingerprint([big])[0] != fingerprint([moved])[0]


def test_collectives_are_no_ops_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed(CPU) == DistInfo()
    check_agreement({"w": torch.ones(3)}, "now", CPU)
    assert from_main(lambda: b"abc", CPU) == b"abc"
    assert from_main(lambda: None, CPU) is None
    bn = torch.nn.BatchNorm2d(2)
    sync_buffers(bn)
    with pytest.raises(BadInput, match="no such"):
        from_main(lambda: (_ for _ in ()).throw(BadInput("no such")), CPU)


def test_more_processes_than_gpus_is_bad_input() -> None:
    if torch.cuda.device_count() > 8:
        pytest.skip("machine has more than 8 GPUs")
    with pytest.raises(BadInput, match="has no GPU"):
        process_device(torch.device("cuda"), DistInfo(rank=8, world=9, local_rank=8))
    assert process_device(CPU, DistInfo(rank=1, world=2, local_rank=1)) == CPU


def test_bad_timeout_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(BadInput, match=f"{TIMEOUT_ENV}='soon'"):
        init_distributed(CPU)
