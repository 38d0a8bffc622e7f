"""Shrinking during training (``chase.shrink``, ``train.shrink``): the shrunk model trains exactly
like its masked twin, in place of it.

For every registry model and every own-model test architecture, two copies of the model (same
seed) train the same steps on the same batches: one masked (Chase as usual), one rebuilt
physically smaller after channel events. Both end with the same masks and alive channels (original
indices), the same metrics, and the same kept-channel weights, norm statistics and momentum
within float tolerance (a smaller conv sums its products in another order).

Explorations rank |w| and |grad| over all masked weights; on the large models (millions of
weights) a last-bit difference can swap two near-equal values at the cut (seen: one position of
7.6 M on ResNet-50 after one step), so there the twins run channel pruning without an
exploration in the window (the masks stay the ERK ones plus the channel masks); the small models
run explorations between the channel events as well.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from chase_deploy.cli import main
from chase_deploy.slim import slim_checkpoint
from tests import own_models
from tests.conftest import assert_same_run, train_run, write_recipe
from tests.derived_groups import groups_for, registry_case
from train.chase import Chase
from train.checkpoint import load_checkpoint
from train.config import ChaseConfig
from train.metrics import read_metrics
from train.models import create_model, list_models
from train.shrink import REBUILD_FRACTION, Shrinker
from train.slicing import Cut

OWN = {
    name: (f"own_models:{name}", {"width": 8, "num_classes": 4, "in_channels": 3}, (3, 16, 16))
    for name in (*own_models.ARCHITECTURES, "ghostnet")
}
CASES = {name: (name, *registry_case(name)) for name in list_models()} | OWN
LARGE = {"resnet50", "resnet50_cifar", "vgg16", "vgg19"}
STEPS = 8
DTYPE = torch.float64


class Twin:
    """One arm: model, optimizer, controller, and (shrunk arm) the shrinker."""

    def __init__(self, name: str, kwargs: dict, groups, cfg: ChaseConfig, lr: float, shrink: bool):
        torch.manual_seed(0)
        self.model = create_model(name, **kwargs).to(DTYPE)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.chase = Chase(
            self.model,
            groups,
            cfg,
            self.opt,
            steps_per_epoch=3,
            epochs=3,
            explore_until=2,
            seed=0,
        )
        self.shrinker = Shrinker(self.model, groups, self.opt) if shrink else None
        self.losses: list[float] = []
        self.events: list[dict] = []

    def step(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model.train()
        torch.manual_seed(t)  # dropout draws the same numbers in both twins
        loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.chase.before_step(t)
        self.opt.step()
        events = self.chase.after_step(t)
        self.events += events
        self.losses.append(float(loss.detach()))
        if self.shrinker is not None and any(e["event"] == "channels" for e in events):
            alive = self.chase.alive_channels()
            last = self.chase.timeline.last_channel_event() == t
            if self.shrinker.due(alive, last) and self.shrinker.rebuild(alive):
                self.chase.rebind(self.shrinker)


def _config(case: str, **overrides) -> tuple[ChaseConfig, float]:
    # 3 steps per epoch, channel pruning until step 6. Small models: channel events at odd steps
    # (1, 3, 5), explorations at even ones. Large: events at 2 and 4, no exploration.
    update_every = 1000 if case in LARGE else 2
    cfg = ChaseConfig(
        density=0.3,
        update_every=update_every,
        channel_every=2,
        channel_sparsity=0.5,
        beta=0.5,
        **{"growth_extra": 0.05, **overrides},
    )
    return cfg, (0.001 if case in LARGE else 0.01)


def _train_twins(case: str, prune_skip: bool = False, **overrides) -> tuple[Twin, Twin]:
    name, kwargs, shape = CASES[case]
    groups = list(groups_for(name, shape, prune_skip, **kwargs))
    cfg, lr = _config(case, **overrides)
    masked = Twin(name, kwargs, groups, cfg, lr, shrink=False)
    shrunk = Twin(name, kwargs, groups, cfg, lr, shrink=True)
    g = torch.Generator().manual_seed(1)
    classes = kwargs.get("num_classes", 10)
    batch = 8
    for t in range(1, (6 if case in LARGE else STEPS) + 1):
        x = torch.randn(batch, *shape, generator=g, dtype=DTYPE)
        y = torch.randint(0, min(classes, 10), (batch,), generator=g)
        masked.step(t, x, y)
        shrunk.step(t, x, y)
    return masked, shrunk


def _out_width(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


@pytest.mark.parametrize("case", sorted(CASES))
def test_shrunk_training_equals_masked_training(case: str) -> None:
    _check_twins(case, *_train_twins(case))


@pytest.mark.parametrize("case", ["resnet20", "resnet_quick", "mobilenet_v2_se", "ghostnet"])
def test_shrunk_equals_masked_with_prune_skip(case: str) -> None:
    """With ``prune_skip`` the residual streams are groups too: a stream's producers (the stem,
    every block's last conv and projection), its norms and every consumer that reads it shrink
    together."""
    masked, shrunk = _train_twins(case, prune_skip=True)
    streams = [g for g in shrunk.shrinker.groups if len(g.producers) > 1]
    assert streams
    alive = dict(zip(map(id, shrunk.shrinker.groups), shrunk.chase.alive, strict=True))
    assert any(int(alive[id(g)].sum()) < g.width for g in streams)  # a stream did shrink
    _check_twins(case, masked, shrunk)


@pytest.mark.parametrize("case", ["resnet20", "mobilenet_v2_se"])
@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_shrunk_equals_masked_with_layerwise_set_and_rigl_exchange(case: str, growth: str) -> None:
    """The SET/RigL exchange (layer-wise, q0 = 0.3, random or gradient growth) with channel
    pruning: random growth draws in the original shapes, so both twins grow the same positions."""
    overrides = {"scope": "layerwise", "drop_fraction": 0.3, "drop_until": 0.9, "growth": growth}
    _check_twins(case, *_train_twins(case, growth_extra=0.0, **overrides))


def _check_twins(case: str, masked: Twin, shrunk: Twin) -> None:
    sh = shrunk.shrinker

    assert sh is not None and sh.rebuilds >= 2  # shrunk twice, trained on after each
    assert sh.built_channels() < sh.channels_total
    # Controller state: original indices and shapes, identical.
    assert masked.chase.masks.keys() == shrunk.chase.masks.keys()
    for name, a in masked.chase.masks.items():
        assert torch.equal(a, shrunk.chase.masks[name]), name
    for a, b in zip(masked.chase.alive, shrunk.chase.alive, strict=True):
        assert torch.equal(a, b)
    assert masked.chase.channel_plan() == shrunk.chase.channel_plan()
    assert masked.chase.epoch_metrics() == shrunk.chase.epoch_metrics()
    assert masked.chase.nnz() == shrunk.chase.nnz() <= masked.chase.budget
    strip = lambda rows: [{k: v for k, v in e.items() if k != "target"} for e in rows]  # noqa: E731
    assert strip(masked.events) == strip(shrunk.events)
    if case not in LARGE:
        assert any(e["event"] == "exploration" for e in shrunk.events)
    # The model is built with exactly the alive channels.
    modules = dict(shrunk.model.named_modules())
    for group, keep in zip(sh.groups, shrunk.chase.alive, strict=True):
        for producer in group.role("producer"):  # a mapped producer writes rows per channel
            assert _out_width(modules[producer.name]) == producer.map.size(int(keep.sum()))
    assert sum(p.numel() for p in shrunk.model.parameters()) < sum(
        p.numel() for p in masked.model.parameters()
    )
    # Losses, kept weights, norm statistics and momentum: equal within float tolerance.
    torch.testing.assert_close(shrunk.losses, masked.losses, rtol=1e-7, atol=1e-8)
    reference = masked.model.state_dict()
    for name, value in shrunk.model.state_dict().items():
        want = sh.cut(name, reference[name])
        assert want.shape == value.shape, name
        torch.testing.assert_close(
            value, want, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}"
        )
    momentum = {
        n: masked.opt.state[p]["momentum_buffer"] for n, p in masked.model.named_parameters()
    }
    for name, p in shrunk.model.named_parameters():
        got = shrunk.opt.state[p]["momentum_buffer"]
        assert got.shape == p.shape
        want = sh.cut(name, momentum[name])
        # Gradients of early layers are large, those of a bias before a norm layer ~0 (noise).
        atol = max(1e-12, 1e-6 * float(want.abs().max()))
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )
    # Checkpoint shapes are the original ones; removed entries are zero.
    dense = sh.dense_state_dict()
    for name, value in dense.items():
        assert value.shape == reference[name].shape, name
    optimizer_params = [p for g in shrunk.opt.param_groups for p in g["params"]]
    assert {id(p) for p in optimizer_params} == {id(p) for p in shrunk.model.parameters()}


def test_rebuild_rule_waits_for_enough_removed_channels_and_the_last_event() -> None:
    name, kwargs, shape = CASES["resnet_quick"]
    groups = list(groups_for(name, shape, **kwargs))
    model = create_model(name, **kwargs)
    sh = Shrinker(model, groups)
    total = sh.channels_total
    alive = {g.name: torch.ones(g.width, dtype=torch.bool) for g in groups}
    assert not sh.due(alive, last_event=True)  # nothing removed
    few = max(1, int(REBUILD_FRACTION * total) - 1)
    first = groups[0]
    alive[first.name][:few] = False
    assert not sh.due(alive, last_event=False)  # under the threshold: wait
    assert sh.due(alive, last_event=True)  # the last event always shrinks to the end
    alive[first.name][: few + 2] = False
    assert sh.due(alive, last_event=False)
    assert sh.rebuild(alive)
    assert not sh.rebuild(alive)  # already built like this
    assert not sh.due(alive, last_event=True)
    back = {k: v.clone() for k, v in alive.items()}
    back[first.name][0] = True
    with pytest.raises(ValueError, match="cannot come back"):
        sh.rebuild(back)


def test_cut_restore_is_the_exact_inverse_of_apply() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 6, 3, 3, generator=g)
    plain = Cut({0: torch.tensor([1, 2, 5, 7]), 1: torch.tensor([0, 3, 4])})
    small = plain.apply(w)
    back = plain.restore(small, w.shape)
    keep = torch.zeros_like(w, dtype=torch.bool)
    keep[[1, 2, 5, 7]] = True
    keep[:, [1, 2, 5]] = False
    assert torch.equal(back, w * keep)
    assert torch.equal(plain.apply(back), small)
    # A grouped conv: 2 conv groups of 3 input channels each keep 2 of them, rows cut too.
    grouped = Cut({0: torch.tensor([0, 2, 3, 4, 6, 7])}, (2, torch.tensor([[0, 2], [1, 2]])))
    small = grouped.apply(w)
    assert small.shape == (6, 2, 3, 3)
    back = grouped.restore(small, w.shape)
    assert torch.equal(grouped.apply(back), small)
    assert int((back != 0).sum()) == small.numel()


# ------------------------------------------------------------------------------ the trainer


def _epoch_rows(out) -> list[dict]:
    return [e for e in read_metrics(out / "metrics.jsonl") if e["event"] != "shrink"]


def _same_rows(a: list[dict], b: list[dict]) -> None:
    """Equal metrics lines; float32 training: losses within float tolerance."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if key in ("seconds",):
                continue
            if key == "train_loss":
                assert x[key] == pytest.approx(y[key], rel=1e-5), x
            else:
                assert x[key] == y[key], (key, x)


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny recipe trained masked and shrunk (same seed), both slimmed."""
    root = tmp_path_factory.mktemp("twins")
    runs = {
        "masked": train_run(root, "masked"),
        "shrunk": train_run(root, "shrunk", chase={"shrink": True}),
    }
    for out in runs.values():
        slim_checkpoint(out / "final.pt", out / "slim")
    return runs


def test_trainer_shrinks_and_writes_what_the_masked_twin_writes(twin_runs: dict) -> None:
    masked, shrunk = twin_runs["masked"], twin_runs["shrunk"]
    shrinks = [e for e in read_metrics(shrunk / "metrics.jsonl") if e["event"] == "shrink"]
    assert len(shrinks) >= 2
    assert shrinks[-1]["channels"] < shrinks[0]["channels"] < shrinks[0]["channels_total"]
    assert shrinks[-1]["params"] < shrinks[0]["params"]
    assert not [e for e in read_metrics(masked / "metrics.jsonl") if e["event"] == "shrink"]
    _same_rows(_epoch_rows(masked), _epoch_rows(shrunk))
    a, b = load_checkpoint(masked / "final.pt"), load_checkpoint(shrunk / "final.pt")
    assert a["channel_plan"] == b["channel_plan"] and a["channel_plan"]["layers"]
    assert (masked / "channel_plan.json").read_text() == (shrunk / "channel_plan.json").read_text()
    assert a["masks"].keys() == b["masks"].keys()
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key
    # Dense shapes (the contract): every tensor has the masked twin's shape.
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert b["state_dict"][key].shape == value.shape, key
    for key in a["masks"]:  # masked weights: zero where removed in both, close elsewhere
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=1e-4, atol=1e-5)
    last = load_checkpoint(shrunk / "checkpoints" / "last.pt")
    built = last["shrink"]["built"]
    plan = b["channel_plan"]["layers"]
    assert sum(int(v.sum()) for v in built.values()) == shrinks[-1]["channels"]
    for group, keep in built.items():
        assert keep.dtype == torch.bool
        if group in plan:
            assert keep.nonzero().flatten().tolist() == plan[group]["kept"]


def test_slim_of_a_shrunk_run_is_lossless_and_equals_the_masked_twins(twin_runs: dict) -> None:
    import onnxruntime as ort

    reports = {
        k: json.loads((v / "slim" / "slim_report.json").read_text()) for k, v in twin_runs.items()
    }
    assert reports["masked"]["lossless"] and reports["shrunk"]["lossless"]
    assert [(r["name"], r["out_after"]) for r in reports["shrunk"]["layers"]] == [
        (r["name"], r["out_after"]) for r in reports["masked"]["layers"]
    ]
    assert reports["shrunk"]["params"] == reports["masked"]["params"]
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)).numpy()
    outs = {}
    for name, out in twin_runs.items():
        session = ort.InferenceSession(
            str(out / "slim" / "slim.onnx"), providers=["CPUExecutionProvider"]
        )
        outs[name] = session.run(None, {session.get_inputs()[0].name: x})[0]
    torch.testing.assert_close(
        torch.from_numpy(outs["shrunk"]), torch.from_numpy(outs["masked"]), rtol=1e-3, atol=1e-4
    )
    # inspect and analyze read the shrunk run like any other
    result = CliRunner().invoke(main, ["inspect", str(twin_runs["shrunk"] / "final.pt"), "--json"])
    assert result.exit_code == 0, result.output
    analysis = twin_runs["shrunk"] / "analysis"
    result = CliRunner().invoke(main, ["analyze", str(twin_runs["shrunk"]), "--out", str(analysis)])
    assert result.exit_code == 0, result.output
    assert (analysis / "summary.md").is_file()


@pytest.mark.slow
def test_shrunk_run_resumed_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        train={"epochs": 4},
        chase={"explore_until": 3, "shrink": True},
        data={"num_train": 384},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(recipe, ref), check=True, env=env, capture_output=True)
    steps_per_epoch = 384 // 32
    kill_at = 2 * steps_per_epoch + 5  # mid epoch 3: shrunk already, more events to come
    out = tmp_path / "killed"
    killed = subprocess.run(
        _train_cmd(recipe, out),
        env={**env, "CHASE_DEPLOY_DEBUG_SIGKILL_AT": f"0:{kill_at}"},
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["progress"] == {"epoch": 2, "step": 2 * steps_per_epoch}
    shrinks = [e for e in read_metrics(ref / "metrics.jsonl") if e["event"] == "shrink"]
    assert [e for e in shrinks if e["step"] <= 2 * steps_per_epoch]  # saved while shrunk
    assert [e for e in shrinks if e["step"] > 2 * steps_per_epoch]  # and shrinks again after
    built = last["shrink"]["built"]
    assert sum(int(v.sum()) for v in built.values()) < sum(v.numel() for v in built.values())

    subprocess.run(
        _train_cmd(recipe, out, "--resume", "auto"), check=True, env=env, capture_output=True
    )
    assert_same_run(ref, out)


def _train_cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chase_deploy", "train", str(recipe), "--out", str(out), "--device", "cpu", *extra]  # fmt: skip


def test_shrink_needs_channel_pruning(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", chase={"shrink": True, "channel_sparsity": 0.0})
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "chase.shrink: needs chase.channel_sparsity > 0" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("align", "noted"), [(1, True), (2, True), (8, False)])
def test_shrink_with_irregular_widths_is_noted(tmp_path: Path, align: int, noted: bool) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml",
        model={"name": "resnet_quick", "width": 8},
        train={"epochs": 1},
        chase={"shrink": True, "align": align, "explore_until": 1},
    )
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    note = f"note: chase.shrink with chase.align {align}: irregular widths run slowly"
    assert (note in result.output) is noted


def test_report_plots_the_epoch_times_beside_the_masked_twin(
    twin_runs: dict, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(twin_runs["shrunk"], out)
    recipe = twin_runs["shrunk"].parent / "shrunk.yaml"
    done = {  # every stage recorded as done: `run` only writes the report
        "train": str(out / "final.pt"),
        "slim": json.loads((out / "slim" / "slim_report.json").read_text()),
        "build": {},
        "bench": {},
        "accuracy": {"dense": 0.5, "slim": 0.5},
    }
    (out / "stages.json").write_text(json.dumps(done))
    args = ["run", str(recipe), "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--twin", str(twin_runs["masked"])])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "## Epoch time" in report and "![epoch time](epoch_time.png)" in report
    assert "rebuilt physically smaller" in report and "twin" in report and "ratio" in report
    assert (out / "epoch_time.png").read_bytes().startswith(b"\x89PNG")
    # without a twin the report says how to get one
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "No masked twin given" in (out / "report.md").read_text()
    # a twin of another recipe is refused before any work
    other = tmp_path / "other"
    shutil.copytree(twin_runs["masked"], other)
    text = (other / "recipe.yaml").read_text().replace("density: 0.3", "density: 0.4")
    (other / "recipe.yaml").write_text(text)
    result = CliRunner().invoke(main, [*args, "--twin", str(other)])
    assert result.exit_code == 2
    assert "differs from this one at chase.density" in result.output
