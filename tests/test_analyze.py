"""`chase-deploy analyze` end to end on a tiny Chase run trained here (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chase_deploy.analyze import PLOTS, layer_densities, layer_widths, open_run
from chase_deploy.cli import main
from tests.conftest import train_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(tmp: Path, name: str, **sections) -> Path:
    return train_run(tmp, name, **sections)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory) -> Path:
    """TINY_RECIPE as is: density 0.3, channel sparsity 0.5."""
    return _train(tmp_path_factory.mktemp("analyze"), "pruned")


def test_analyze_writes_real_plots_and_a_summary(pruned_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    result = CliRunner().invoke(main, ["analyze", str(pruned_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 8_000, (name, len(data))
    summary = (out / "summary.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in summary

    # Kept widths: exactly the channel plan's, one row per prunable layer.
    plan = json.loads((pruned_run / "channel_plan.json").read_text())["layers"]
    run = open_run(pruned_run)
    widths = layer_widths(run)
    assert [w.name for w in widths] == [g.name for g in _groups(run)]
    for w in widths:
        expected = len(plan[w.name]["kept"]) if w.name in plan else w.width
        assert w.kept == expected
        assert f"| {w.name} | {w.width} | {w.kept} |" in summary
    total, kept = sum(w.width for w in widths), sum(w.kept for w in widths)
    assert kept == total - round(0.5 * total)  # the recipe's S_c, exactly

    # Densities come from the masks of final.pt: their total is the budget.
    masks = run.ckpt["masks"]
    masked = [d for d in layer_densities(run) if d.masked]
    assert {d.name for d in masked} == set(masks)
    assert sum(d.active for d in masked) == sum(int(m.sum()) for m in masks.values())
    assert sum(d.active for d in masked) == round(0.3 * sum(m.numel() for m in masks.values()))

    # The amenable table pools every layer at the first and last epoch.
    assert "| UMM | 1 |" in summary and "| WS | 3 |" in summary and "| UMM or WS | 3 |" in summary

    # Training FLOPs: the last epoch's cumulative counts and their ratio.
    last = run.events("epoch")[-1]
    sparse, dense = last["train_flops"], last["train_flops_dense"]
    assert 0 < sparse < dense
    ratio = f"{sparse:.3e} of {dense:.3e} dense ({sparse / dense:.2f}x)"
    assert f"- training FLOPs: {ratio}" in summary


def test_default_output_is_inside_the_run(pruned_run: Path) -> None:
    result = CliRunner().invoke(main, ["analyze", str(pruned_run)])
    assert result.exit_code == 0, result.output
    assert (pruned_run / "analysis" / "summary.md").is_file()


def test_a_dense_run_has_no_amenable_plot(tmp_path: Path) -> None:
    run = _train(
        tmp_path,
        "dense",
        train={"epochs": 1},
        chase={"density": 1.0, "channel_sparsity": 0.0, "explore_until": 1},
    )
    result = CliRunner().invoke(main, ["analyze", str(run)])
    assert result.exit_code == 0, result.output
    out = run / "analysis"
    assert not (out / "amenable.png").exists()
    assert (out / "widths.png").read_bytes().startswith(PNG_MAGIC)
    assert "No amenable statistics" in (out / "summary.md").read_text()
    assert "dense (1.00x)" in (out / "summary.md").read_text()


def test_not_a_run_dir_exits_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["analyze", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "no such directory" in missing.output
    empty = CliRunner().invoke(main, ["analyze", str(tmp_path)])
    assert empty.exit_code == 2
    assert "not a finished run directory" in empty.output
    assert not (tmp_path / "analysis").exists()


def _groups(run):
    from chase_deploy.graph.analysis import traced_checkpoint_groups as checkpoint_groups

    return list(checkpoint_groups(run.ckpt))
