"""Plans on graphs whose layers the graph couples (issue 20, items 7 to 11).

Each case is a structural copy of a real family (``tests/own_models.py``), masked the way Chase
leaves it (its pruned channels zero in every row and column), exported to ONNX, and slimmed with
a plan a user would write: the layers they want cut, nothing else. ``slim`` adds the coupled
layers the graph forces (a squeeze-excitation gate; on GhostNet in the concatenation's doubled
index space), rounds coupled layers of different widths in one index space, says when rounding
undoes a cut, shares a sliced copy of a constant the exporter shared, and finds a plan in the
zeros alone.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from chase_deploy.cli import main
from chase_deploy.export import export_onnx
from chase_deploy.graph.graph_groups import graph_groups
from chase_deploy.graph.reading import import_graph, with_shapes
from chase_deploy.graph.surgery import slim_model
from chase_deploy.graph.zeros import plan_from_zeros
from chase_deploy.verify import compare
from tests import own_models
from tests.derived_groups import derive_cached
from tests.slim_models import randomize_bn
from train.errors import BadInput
from train.plan import ChannelPlan, LayerPlan, plan_from_groups
from train.slicing import zero_removed

SHAPE = (3, 16, 16)
GHOST = "blocks.1.ghost1.primary_conv.0"
GATE = "blocks.1.se.fc2"


def masked_export(arch: str, drop: dict[str, list[int]], seed: int = 0):
    """``arch`` with the channels ``drop`` names (group name -> channels) zero as Chase leaves
    them, exported; (exported model, the full plan training would write)."""
    torch.manual_seed(seed)
    net = randomize_bn(getattr(own_models, arch)(num_classes=4), seed=seed + 1).eval()
    groups = list(derive_cached(net, SHAPE))
    alive = []
    for g in groups:
        keep = torch.ones(g.width, dtype=torch.bool)
        keep[drop.get(g.name, [])] = False
        alive.append(keep)
    zero_removed(net, groups, alive)
    return export_onnx(net, (2, *SHAPE)), plan_from_groups(groups, alive)


def only(plan: ChannelPlan, *keys: str) -> ChannelPlan:
    return ChannelPlan({k: plan.layers[k] for k in keys})


def assert_lossless(exported, result) -> None:
    check = compare(exported.model, result.model, batch_sizes=(1, 3))
    assert check.lossless, check
    assert check.max_abs_reference > 0.05


@pytest.fixture(scope="module")
def ghost():
    return masked_export("ghostnet", {GHOST: [1, 3, 4, 5, 8, 9, 12, 13, 15]})


def test_the_ghost_gate_is_one_group_with_the_primary_conv(ghost) -> None:
    _, plan = ghost
    assert plan.layers[GHOST].out_channels == 16 and len(plan.layers[GHOST].kept) == 7
    gate = plan.layers[GATE]  # both halves of the concatenation: rows c and 16 + c
    assert gate.out_channels == 32
    assert gate.kept == plan.layers[GHOST].kept + tuple(16 + c for c in plan.layers[GHOST].kept)


@pytest.mark.parametrize("listed", [GHOST, GATE])
def test_a_ghost_plan_is_completed_with_its_coupled_layer(ghost, listed: str) -> None:
    exported, plan = ghost
    result = slim_model(exported.model, only(plan, listed))
    other = GATE if listed == GHOST else GHOST
    assert [a.key for a in result.added] == [other]
    assert result.plan.layers[other] == plan.layers[other]
    assert result.added[0].partner == listed
    assert_lossless(exported, result)


def test_a_ghost_plan_that_contradicts_itself_is_refused(ghost) -> None:
    exported, plan = ghost
    gate = plan.layers[GATE]
    half = ChannelPlan({GATE: type(gate)(32, gate.kept[:-1])})  # drops row 30, keeps row 14
    with pytest.raises(BadInput, match=r"keeps row 14 and drops row 30, which hold the same") as e:
        slim_model(exported.model, half)
    assert "\n" not in str(e.value)


def test_round_to_on_the_ghost_plan_rounds_in_the_group_channels(ghost) -> None:
    exported, plan = ghost
    result = slim_model(exported.model, only(plan, GHOST, GATE), round_to=8)
    primary, gate = result.plan.layers[GHOST].kept, result.plan.layers[GATE].kept
    assert len(primary) == 8 and set(plan.layers[GHOST].kept) <= set(primary)
    assert gate == primary + tuple(16 + c for c in primary)
    assert result.notes == []
    assert_lossless(exported, result)


def test_a_hard_sigmoid_gate_is_added_to_a_plan_of_expansion_convs() -> None:
    """MobileNetV3/EfficientNet: listing the expansion convs used to be refused until the user
    added every squeeze-excitation expand conv with the matching indices."""
    exported, plan = masked_export(
        "mobilenet_v3", {"blocks.0.expand.0": [0, 3, 7, 30], "blocks.1.expand.0": [2, 40]}
    )
    expansions = ("blocks.0.expand.0", "blocks.1.expand.0")
    result = slim_model(exported.model, only(plan, *expansions))
    assert sorted(a.key for a in result.added) == ["blocks.0.se.fc2", "blocks.1.se.fc2"]
    for a in result.added:
        assert a.entry == plan.layers[a.key]
    assert_lossless(exported, result)


def test_round_to_that_undoes_a_grouped_cut_says_so_and_suggests_one_that_keeps_it() -> None:
    """RegNet: 3 conv groups of 8 channels; at --round-to 8 each group must keep a multiple of
    lcm(8, 3) / 3 = 8, all of it."""
    drop = {"s1.a.0.0": [0, 9, 17], "s1.b.0.0": [1, 10, 18]}  # one channel per conv group
    exported, plan = masked_export("regnetx", drop)
    result = slim_model(exported.model, only(plan, *drop), round_to=8)
    assert not any(e.pruned for e in result.plan.layers.values())
    assert result.notes == [
        "--round-to 8 keeps every channel the plan removes, so nothing is slimmed (s1.a.0.0: a "
        "grouped conv splits its 24 channels into 3 groups of 8; each keeps 7 and must keep a "
        "multiple of 8); --round-to 7 keeps the cut"
    ]
    kept = slim_model(exported.model, only(plan, *drop), round_to=7)
    assert kept.notes == [] and all(len(e.kept) == 21 for e in kept.plan.layers.values())
    assert_lossless(exported, kept)


def test_a_bias_the_exporter_shares_is_sliced_once() -> None:
    """ConvNeXt initializes its biases to zero; the exporter then shares one bias tensor between
    the blocks' Linear layers. Both slices are equal: one copy serves both."""
    torch.manual_seed(0)
    net = own_models.convnext(num_classes=4).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
        for block in net.stage1:
            block.pwconv1.weight[1::2] = 0  # the odd channels: zero rows, zero bias, GELU(0) = 0
    exported = export_onnx(net, (2, *SHAPE))
    shared = "stage1.0.pwconv1.bias"
    readers = [n.name for n in exported.model.graph.node if shared in n.input]
    assert len(readers) == 2  # stage1.0 and stage1.1 read the one zero bias
    plan = {f"stage1.{b}.pwconv1": list(range(0, 32, 2)) for b in (0, 1)}
    result = slim_model(
        exported.model, ChannelPlan({k: LayerPlan(32, tuple(v)) for k, v in plan.items()})
    )
    inputs = {n.name: list(n.input) for n in result.model.graph.node}
    biases = {next(i for i in inputs[r] if "pwconv1.bias" in i) for r in readers}
    assert len(biases) == 1
    sizes = {i.name: int(np.prod(i.dims)) for i in result.model.graph.initializer}
    assert sizes[biases.pop()] == 16 and shared not in sizes
    assert_lossless(exported, result)


def test_the_zeros_give_the_plan_training_wrote(ghost) -> None:
    exported, plan = ghost
    graph = import_graph(with_shapes(exported.model))
    found = plan_from_zeros(graph_groups(graph))
    assert found.layers == {k: v for k, v in plan.layers.items() if v.pruned}


def test_no_zero_channel_gives_an_empty_plan() -> None:
    torch.manual_seed(0)
    exported = export_onnx(own_models.ghostnet(num_classes=4).eval(), (2, *SHAPE))
    assert plan_from_zeros(graph_groups(import_graph(with_shapes(exported.model)))).layers == {}


def test_shapes_of_the_slim_ghost_model(ghost) -> None:
    exported, plan = ghost
    result = slim_model(exported.model, only(plan, GHOST))
    dims = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert dims[f"{GATE}.weight"][0] == 14 and dims[f"{GHOST}.weight"][0] == 7
    onnx.checker.check_model(result.model, full_check=True)


def test_slim_says_what_it_added_and_reports_it(ghost, tmp_path) -> None:
    exported, plan = ghost
    model, plan_path, out = tmp_path / "ghost.onnx", tmp_path / "plan.json", tmp_path / "s.onnx"
    onnx.save(exported.model, str(model))
    plan_path.write_text(json.dumps(only(plan, GHOST).to_dict()))
    result = CliRunner().invoke(
        main, ["slim", str(model), "--plan", str(plan_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and notes[0].startswith(
        f"note: added to the plan: {GATE} (keeps 14 of 32: coupled with {GHOST} at node "
    )
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["lossless"] and report["notes"] == [notes[0].removeprefix("note: ")]
    [added] = report["completed"]
    assert added["layer"] == GATE and added["coupled_with"] == GHOST
    assert added["out_channels"] == 32 and tuple(added["kept"]) == plan.layers[GATE].kept
