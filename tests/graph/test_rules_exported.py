"""slim on the graph patterns real CNNs contain beyond plain chains: grouped convs (ResNeXt,
RegNet), a Linear on channels-last input (ConvNeXt: a MatMul with an anonymous weight, found
through the exporter's metadata), a Slice on the channel axis (ReXNet's partial residual), a
chunk (Split) and a channel shuffle (ShuffleNet), exported by torch's default exporter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chase_deploy.export import export_onnx
from chase_deploy.graph.reading import find_layers, import_graph, with_shapes
from chase_deploy.graph.surgery import slim_model
from chase_deploy.verify import compare
from tests.slim_models import randomize_bn
from train.errors import BadInput
from train.plan import ChannelPlan, LayerPlan


def plan(**layers: tuple[int, list[int]]) -> ChannelPlan:
    return ChannelPlan({k: LayerPlan(w, tuple(kept)) for k, (w, kept) in layers.items()})


@torch.no_grad()
def zero_rows(conv: nn.Conv2d, dropped: list[int]) -> None:
    conv.weight[dropped] = 0
    if conv.bias is not None:
        conv.bias[dropped] = 0


def slim_ok(model: nn.Module, the_plan: ChannelPlan, shape=(2, 3, 8, 8), round_to: int = 1):
    exported = export_onnx(model.eval(), shape)
    result = slim_model(exported.model, the_plan, round_to=round_to)
    check = compare(exported.model, result.model, reference_session=exported.session)
    assert check.lossless and check.max_abs_reference > 0.01, check
    return exported.model, result


class Grouped(nn.Module):
    """1x1 conv, grouped 3x3 (4 groups of 2), 1x1: ResNeXt's inner block."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn2(self.g(F.relu(self.bn(self.a(x))))))
        return self.c(y).mean((2, 3))


def test_grouped_conv_reads_and_writes_pruned_channels_per_group() -> None:
    model = randomize_bn(Grouped())
    with torch.no_grad():
        zero_rows(model.a, [1, 3, 4, 6])  # one of each pair kept: [0, 2, 5, 7]
        for g, kept_col in enumerate([0, 0, 1, 1]):  # g's columns of the dropped inputs
            model.g.weight[2 * g : 2 * g + 2, 1 - kept_col] = 0
        zero_rows(model.g, [0, 3, 5, 6])  # g keeps [1, 2, 4, 7], one per group
        model.c.weight[:, [0, 3, 5, 6]] = 0
    the_plan = plan(a=(8, [0, 2, 5, 7]), g=(8, [1, 2, 4, 7]))
    _, result = slim_ok(model, the_plan)
    shapes = {i.name: tuple(i.dims) for i in result.model.graph.initializer}
    assert shapes["g.weight"] == (4, 1, 3, 3)  # 4 groups of 1 in, 1 out
    group = next(
        n for n in result.model.graph.node if n.op_type == "Conv" and "g.weight" in n.input
    )
    assert next(a.i for a in group.attribute if a.name == "group") == 4
    _, rounded = slim_ok(model, the_plan, round_to=8)  # widened back evenly: nothing removed
    assert all(len(e.kept) == 8 for e in rounded.plan.layers.values())


def test_uneven_groups_are_refused_by_name() -> None:
    model = randomize_bn(Grouped())
    exported = export_onnx(model.eval(), (2, 3, 8, 8))
    with pytest.raises(BadInput, match=r"grouped conv \(group=4\).*\[2, 1, 1, 1\].*same number"):
        slim_model(exported.model, plan(a=(8, [0, 1, 2, 4, 6])))


class ChannelsLast(nn.Module):
    """ConvNeXt's inverted bottleneck: Linear layers on an NHWC tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.pw1 = nn.Linear(8, 16)
        self.pw2 = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(F.gelu(self.pw1(self.conv(x).permute(0, 2, 3, 1))))
        return y.mean((1, 2))


def test_linear_on_channels_last_is_found_through_exporter_metadata() -> None:
    model = ChannelsLast()
    with torch.no_grad():
        model.pw1.weight[[1, 5, 9]] = 0
        model.pw1.bias[[1, 5, 9]] = 0
        model.pw2.weight[:, [1, 5, 9]] = 0
    exported = export_onnx(model.eval(), (2, 3, 4, 4))
    graph = import_graph(with_shapes(exported.model))
    (node,) = find_layers(graph, ["pw1"])["pw1"]
    assert node.op == "MatMul" and not node.inputs[1].name.startswith("pw1")  # anonymous weight
    kept = [c for c in range(16) if c not in (1, 5, 9)]
    slim_ok(model, plan(pw1=(16, kept)), shape=(2, 3, 4, 4))


class PartialResidual(nn.Module):
    """ReXNet: the block input is added to the first channels of the block output only."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 12, 1)
        self.bn = nn.BatchNorm2d(12)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = self.bn(self.conv(x))
        y = torch.cat([y[:, :8] + x, y[:, 8:]], 1)
        return self.head(F.relu(y)).mean((2, 3))


def test_slice_on_the_channel_axis_keeps_what_lies_outside_it() -> None:
    model = randomize_bn(PartialResidual())
    with torch.no_grad():
        zero_rows(model.conv, [9, 11])
        model.head.weight[:, [9, 11]] = 0
    _, result = slim_ok(model, plan(conv=(12, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10])))
    shapes = {i.name: tuple(i.dims) for i in result.model.graph.initializer}
    assert shapes["conv.weight"][0] == 10 and shapes["head.weight"][1] == 10
    exported = export_onnx(model.eval(), (2, 3, 8, 8))
    with pytest.raises(BadInput, match=r"couples conv .*with stem"):
        slim_model(exported.model, plan(conv=(12, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11])))


class Shuffle(nn.Module):
    """ShuffleNet: chunk into two halves, one through a conv, concatenate, shuffle 2 groups."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.a(x)))
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        left, right = y.chunk(2, dim=1)
        return self.head(torch.cat([left, right * 2.0], 1)).mean((2, 3))


def test_channel_shuffle_with_a_symmetric_kept_set_and_chunks() -> None:
    model = randomize_bn(Shuffle())
    kept = [0, 2, 3, 4, 6, 7]  # offsets {0, 2, 3} in both shuffle groups of 4
    with torch.no_grad():
        zero_rows(model.a, [1, 5])
        model.head.weight[:, [2, 3]] = 0  # channel c lands at (c % 4) * 2 + c // 4
    _, result = slim_ok(model, plan(a=(8, kept)))
    assert {i.name: tuple(i.dims) for i in result.model.graph.initializer}["head.weight"][1] == 6
    exported = export_onnx(model.eval(), (2, 3, 8, 8))
    with pytest.raises(BadInput, match=r"channel shuffle over 2 groups.*keep a symmetric set"):
        slim_model(exported.model, plan(a=(8, [0, 1, 2, 4, 6, 7])))
