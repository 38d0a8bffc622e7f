"""`chase-deploy ablate` end to end on tiny runs trained here (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from chase_deploy.ablate import Selector, evaluate, pruned_copy
from chase_deploy.cli import main
from chase_deploy.graph.analysis import traced_checkpoint_groups as checkpoint_groups
from tests.conftest import TINY_RECIPE, train_run
from train.checkpoint import build_model_from_checkpoint, load_checkpoint
from train.config import ABLATE_CRITERIA, load_recipe
from train.data import build_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPARSITIES = (0.1, 0.2, 0.3, 0.5)


def _train(tmp: Path, name: str, **chase) -> Path:
    return train_run(tmp, name, chase=chase)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ablate")
    # beta 0: every floor is one channel, so the selection is the plain global order.
    return {
        "unstructured": _train(tmp, "unstructured", channel_sparsity=0.0, beta=0.0),
        "pruned": _train(tmp, "pruned"),
    }


@pytest.fixture(scope="module")
def study(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    result = CliRunner().invoke(main, ["ablate", str(runs["unstructured"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("top-1") == len(ABLATE_CRITERIA) * len(SPARSITIES)
    return out


def test_outputs_have_every_criterion_and_sparsity(study: Path) -> None:
    result = json.loads((study / "ablate.json").read_text())
    assert result["criteria"] == list(ABLATE_CRITERIA)
    assert result["sparsities"] == list(SPARSITIES)
    cells = {(r["criterion"], r["channel_sparsity"]) for r in result["results"]}
    assert cells == {(c, s) for c in ABLATE_CRITERIA for s in SPARSITIES}
    total = result["channels"]
    for r in result["results"]:
        assert r["scheduled"] == total - round(total * (1 - r["channel_sparsity"]))
        assert r["removed"] == r["scheduled"]
        assert sum(r["widths"].values()) == total - r["removed"]
        assert 0.0 <= r["val_acc"] <= 1.0

    table = (study / "ablate.md").read_text()
    rows = [
        line for line in table.splitlines() if line.startswith("| ") and "criterion" not in line
    ]
    assert [row.split("|")[1].strip() for row in rows] == list(ABLATE_CRITERIA)
    assert all(len(row.strip("|").split("|")) == 1 + len(SPARSITIES) for row in rows)

    png = (study / "ablate.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 8_000


def test_reversed_criteria_remove_what_the_forward_ones_keep(tmp_path: Path) -> None:
    """Checkable where no floor shapes the walk: one 32-channel layer (an MLP) at S_c 0.5 loses
    its 16 lowest channels by the forward order and its 16 highest by the reversed one."""
    spec = {**TINY_RECIPE, "model": {"name": "mlp", "hidden": [32]}}
    spec["chase"] = {**TINY_RECIPE["chase"], "channel_sparsity": 0.0, "beta": 0.0}
    recipe = tmp_path / "mlp.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    run = tmp_path / "mlp"
    assert CliRunner().invoke(main, ["train", str(recipe), "--out", str(run)]).exit_code == 0
    result = CliRunner().invoke(
        main,
        [
            "ablate",
            str(run),
            "--criteria",
            "umm,mmm,umm_reverse,mmm_reverse",
            "--channel-sparsity",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    by_criterion = {
        r["criterion"]: r
        for r in json.loads((run / "ablate" / "ablate.json").read_text())["results"]
    }
    for criterion in ("umm", "mmm"):
        forward = set(_kept(by_criterion[criterion], "hidden.0", 32))
        reverse = set(_kept(by_criterion[f"{criterion}_reverse"], "hidden.0", 32))
        assert len(forward) == len(reverse) == 16
        assert forward.isdisjoint(reverse), criterion
        assert forward | reverse == set(range(32)), criterion


def test_umm_removes_the_lowest_scoring_channels(runs) -> None:
    """The selection is by UMM = sum|W[c]| / fan over the masked weights, ranked across layers."""
    ckpt = load_checkpoint(runs["unstructured"] / "final.pt")
    model = build_model_from_checkpoint(ckpt)
    groups = list(checkpoint_groups(ckpt, model=model))
    selector = Selector(model, groups, beta=0.0, round_to=1, seed=0)
    cut = selector.cut("umm", 0.3)
    modules = dict(model.named_modules())
    removed, kept = [], []
    for g, alive in zip(groups, cut.alive, strict=True):
        w = modules[g.producers[0]].weight.detach()
        umm = w.abs().flatten(1).sum(1) / w[0].numel()
        removed += umm[~alive].tolist()
        if alive.sum() > 1:  # a layer at its floor (one channel) keeps it whatever its score
            kept += umm[alive].tolist()
    assert len(removed) == cut.scheduled == round(0.3 * selector.total)
    assert kept and max(removed) <= min(kept)


def test_pruned_copy_zeroes_exactly_the_dead_channels(runs) -> None:
    ckpt = load_checkpoint(runs["unstructured"] / "final.pt")
    model = build_model_from_checkpoint(ckpt)
    groups = list(checkpoint_groups(ckpt, model=model))
    cut = Selector(model, groups, beta=0.0, round_to=1, seed=0).cut("ws", 0.5)
    pruned = dict(pruned_copy(model, groups, cut.alive).named_modules())
    original = dict(model.named_modules())
    keep = {
        name: torch.ones_like(m.weight, dtype=torch.bool)
        for name, m in original.items()
        if hasattr(m, "weight") and m.weight is not None and m.weight.dim() == 4
    }
    for g, alive in zip(groups, cut.alive, strict=True):
        keep[g.producers[0]][~alive] = False
        keep[g.consumers[0]][:, ~alive] = False
    assert any(not k.all() for k in keep.values())
    for name, k in keep.items():
        assert torch.equal(pruned[name].weight, original[name].weight * k), name
    # Keeping everything changes nothing: the same accuracy as the trained model.
    recipe = load_recipe(runs["unstructured"] / "recipe.yaml")
    val = build_data(recipe.data, recipe.seed).val
    everything = [torch.ones(g.width, dtype=torch.bool) for g in groups]
    cpu = torch.device("cpu")
    assert evaluate(pruned_copy(model, groups, everything), val, cpu) == evaluate(model, val, cpu)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--criteria", "umm,l1"], "unknown criterion 'l1'"),
        (["--channel-sparsity", "0.1,1.0"], "outside [0, 1)"),
        (["--channel-sparsity", "-0.1"], "outside [0, 1)"),
        (["--channel-sparsity", "half"], "not a number"),
    ],
)
def test_bad_arguments_exit_2(runs, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["ablate", str(runs["unstructured"]), "--out", str(out), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_channel_pruned_run_is_refused(runs, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ablate", str(runs["pruned"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "trained with channel pruning" in result.output
    assert "chase.channel_sparsity=0" in result.output


def test_not_a_run_dir_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ablate", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "not a finished run directory" in result.output


def _kept(record: dict, name: str, width: int) -> list[int]:
    layer = record["plan"]["layers"].get(name)
    return layer["kept"] if layer else list(range(width))


def test_bn_reestimation_changes_the_running_statistics_and_nothing_else(runs) -> None:
    from chase_deploy.ablate import reestimate_bn

    ckpt = load_checkpoint(runs["unstructured"] / "final.pt")
    model = build_model_from_checkpoint(ckpt)
    recipe = load_recipe(runs["unstructured"] / "recipe.yaml")
    train = build_data(recipe.data, recipe.seed).train
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reestimate_bn(model, train, 3, torch.device("cpu"))
    after = model.state_dict()
    stats = {k for k in before if k.endswith(("running_mean", "running_var"))}
    assert stats and all(not torch.equal(before[k], after[k]) for k in stats)
    for key in before:
        if key not in stats and not key.endswith("num_batches_tracked"):
            assert torch.equal(before[key], after[key]), key
    assert not model.training
    # the cumulative average of exactly those batches: the first BatchNorm's mean, by hand
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first.register_forward_pre_hook(lambda m, args: seen.append(args[0].mean((0, 2, 3))))
    reestimate_bn(model, train, 3, torch.device("cpu"))
    hook.remove()
    assert len(seen) == 3
    assert torch.allclose(first.running_mean, torch.stack(seen).mean(0), atol=1e-6)


def test_without_reestimation_the_cut_is_evaluated_as_it_is(runs, tmp_path: Path) -> None:
    args = ["--criteria", "umm", "--channel-sparsity", "0.3"]
    accs = {}
    for n in ("0", "4"):
        out = tmp_path / f"bn{n}"
        result = CliRunner().invoke(
            main, ["ablate", str(runs["unstructured"]), "--out", str(out), "--bn-batches", n, *args]
        )
        assert result.exit_code == 0, result.output
        data = json.loads((out / "ablate.json").read_text())
        assert data["bn_batches"] == int(n) and data["bn_images"] == int(n) * 32
        accs[n] = data["results"][0]["val_acc"]
        table = (out / "ablate.md").read_text()
        assert ("not re-estimated" in table) == (n == "0")
    ckpt = load_checkpoint(runs["unstructured"] / "final.pt")
    model = build_model_from_checkpoint(ckpt)
    groups = list(checkpoint_groups(ckpt, model=model))
    recipe = load_recipe(runs["unstructured"] / "recipe.yaml")
    cut = Selector(model, groups, beta=0.0, round_to=1, seed=recipe.seed).cut("umm", 0.3)
    val = build_data(recipe.data, recipe.seed).val
    assert accs["0"] == evaluate(pruned_copy(model, groups, cut.alive), val, torch.device("cpu"))


def test_several_seeds_are_reported_as_mean_and_std(tmp_path: Path) -> None:
    for seed in (1, 2):
        train_run(tmp_path, f"seed{seed}", seed=seed, chase={"channel_sparsity": 0.0, "beta": 0.0})
    out = tmp_path / "study"
    result = CliRunner().invoke(
        main,
        [
            "ablate",
            str(tmp_path / "seed{seed}"),
            "--seeds",
            "1,2",
            "--criteria",
            "umm,random",
            "--channel-sparsity",
            "0.2",
            "--bn-batches",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("top-1") == 4  # 2 runs x 2 criteria
    data = json.loads((out / "ablate.json").read_text())
    assert data["seeds"] == [1, 2] and len(data["runs"]) == 2
    assert len(data["baseline_accs"]) == 2
    for r in data["results"]:
        assert len(r["val_accs"]) == 2
        assert r["val_acc"] == pytest.approx(sum(r["val_accs"]) / 2)
        a, b = r["val_accs"]
        assert r["val_acc_std"] == pytest.approx(abs(a - b) / 2**0.5)
    table = (out / "ablate.md").read_text()
    assert "2 runs (seeds 1, 2), mean ± std" in table and " ± " in table.split("| umm |")[1]


def test_seeds_need_a_placeholder_and_runs_must_match(runs, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ablate", str(runs["unstructured"]), "--seeds", "0,1"])
    assert result.exit_code == 2 and "--seeds needs RUN_DIR with {seed}" in result.output
    other = train_run(tmp_path, "wider", model={"width": 8}, chase={"channel_sparsity": 0.0})
    result = CliRunner().invoke(
        main, ["ablate", str(runs["unstructured"]), str(other), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "differ in model, data or channel groups" in result.output
    assert not (tmp_path / "o").exists()


def test_slimming_removes_the_channels_with_the_smallest_norm_scale(runs) -> None:
    """Network Slimming: the BatchNorm after each producer ranks its channels by |gamma|."""
    from train.channel_scores import norm_scales

    ckpt = load_checkpoint(runs["unstructured"] / "final.pt")
    model = build_model_from_checkpoint(ckpt)
    groups = list(checkpoint_groups(ckpt, model=model))
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(5)
    for g in groups:  # distinct scales of both signs: |gamma| must rank, not gamma
        for m in g.carriers:
            if m.kind == "norm":
                w = modules[m.name].weight
                w.data.copy_(
                    (torch.rand(w.shape, generator=gen) + 0.1)
                    * torch.sign(torch.randn(w.shape, generator=gen))
                )
    selector = Selector(model, groups, beta=0.0, round_to=1, seed=0)
    cut = selector.cut("slimming", 0.3)
    reverse = selector.cut("slimming_reverse", 0.3)
    removed, kept = [], []
    for g, alive in zip(groups, cut.alive, strict=True):
        gamma = norm_scales(modules, g)
        assert gamma is not None
        removed += gamma[~alive].tolist()
        if alive.sum() > 1:
            kept += gamma[alive].tolist()
    assert len(removed) == cut.scheduled and kept and max(removed) <= min(kept)
    assert any(not torch.equal(a, b) for a, b in zip(cut.alive, reverse.alive, strict=True))


def test_the_unpruned_baseline_is_measured_like_the_cuts_and_beta_overrides(
    runs, tmp_path: Path
) -> None:
    from chase_deploy.ablate import reestimate_bn

    out = tmp_path / "b"
    args = ["--criteria", "umm", "--channel-sparsity", "0.5", "--bn-batches", "3"]
    result = CliRunner().invoke(
        main, ["ablate", str(runs["unstructured"]), "--out", str(out), "--beta", "1", *args]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "ablate.json").read_text())
    ckpt = load_checkpoint(runs["unstructured"] / "final.pt")
    recipe = load_recipe(runs["unstructured"] / "recipe.yaml")
    bundle = build_data(recipe.data, recipe.seed)
    cpu = torch.device("cpu")
    trained = evaluate(build_model_from_checkpoint(ckpt), bundle.val, cpu)
    again = reestimate_bn(build_model_from_checkpoint(ckpt), bundle.train, 3, cpu)
    assert data["baseline_acc"] == evaluate(again, bundle.val, cpu)
    assert data["baseline_acc_trained_bn"] == trained
    assert f"{100 * trained:.2f} % as trained" in (out / "ablate.md").read_text()
    # --beta 1 instead of the recipe's 0: every layer keeps ⌊(1 − 0.5)·width⌋ channels, the
    # cut is exactly half of each layer.
    assert data["beta"] == 1.0
    groups = {g["name"]: g["width"] for g in data["groups"]}
    assert data["results"][0]["widths"] == {n: w - w // 2 for n, w in groups.items()}
    bad = CliRunner().invoke(main, ["ablate", str(runs["unstructured"]), "--beta", "1.5"])
    assert bad.exit_code == 2 and "--beta '1.5': give a number in [0, 1]" in bad.output
