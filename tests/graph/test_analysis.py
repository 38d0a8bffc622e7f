"""Channel groups read from the graph equal the groups the registry models used to declare by
hand (the paper's choice of prunable layers), for every registry model, with and without
``prune_skip``. The declarations are kept here, as the test's oracle; the models no longer carry
them: the graph is the one source of truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.derived_groups import groups_for, registry_case
from train.groups import ChannelMap
from train.models import create_model, list_models
from train.models.resnet import Bottleneck, ResNet
from train.models.vgg import VGG


def derived(name: str, prune_skip: bool = False):
    kwargs, shape = registry_case(name)
    return create_model(name, **kwargs), groups_for(name, shape, prune_skip, **kwargs)


# -- the oracle: what the models declared before the analysis existed ---------------------------


def declared(model: nn.Module, prune_skip: bool) -> list[tuple]:
    if isinstance(model, ResNet):
        return _resnet(model, prune_skip)
    if isinstance(model, VGG):
        convs = [(i, m) for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
        return [
            (f"features.{i}", (f"features.{i}",), (f"features.{j}",), conv.out_channels, "block")
            for (i, conv), (j, _) in zip(convs, convs[1:], strict=False)
        ]
    names = [f"hidden.{i}" for i in range(len(model.hidden))] + ["fc"]
    return [
        (names[i], (names[i],), (names[i + 1],), model.hidden[i].out_features, "block")
        for i in range(len(model.hidden))
    ]


def _resnet(model: ResNet, prune_skip: bool) -> list[tuple]:
    blocks = [
        (f"{stage}.{j}", block)
        for stage in model.stage_names
        for j, block in enumerate(getattr(model, stage))
    ]
    following = {"conv1": "conv2", "conv2": "conv3"}
    out = []
    for name, block in blocks:
        for conv in ["conv1", "conv2"] if isinstance(block, Bottleneck) else ["conv1"]:
            width = getattr(block, conv).out_channels
            out.append(
                (
                    f"{name}.{conv}",
                    (f"{name}.{conv}",),
                    (f"{name}.{following[conv]}",),
                    width,
                    "block",
                )
            )
    if not prune_skip:
        return out
    streams, current = [], {"producers": ["conv1"], "consumers": [], "merged": False}
    for name, block in blocks:
        last = "conv3" if isinstance(block, Bottleneck) else "conv2"
        current["consumers"].append(f"{name}.conv1")
        if block.downsample is not None:
            current["consumers"].append(f"{name}.downsample.0")
            streams.append(current)
            current = {"producers": [f"{name}.downsample.0"], "consumers": [], "merged": True}
        else:
            current["merged"] = True
        current["producers"].append(f"{name}.{last}")
    current["consumers"].append("fc")
    streams.append(current)
    modules = dict(model.named_modules())
    for s in streams:
        if s["merged"]:
            width = modules[s["producers"][0]].out_channels
            out.append(
                (
                    f"stream.{s['producers'][0]}",
                    tuple(s["producers"]),
                    tuple(s["consumers"]),
                    width,
                    "stream",
                )
            )
    return out


def _as_tuples(groups) -> list[tuple]:
    return [(g.name, g.producers, g.consumers, g.width, g.kind) for g in groups]


def _canonical(rows: list[tuple]) -> list[tuple]:
    return [(n, tuple(sorted(p)), tuple(sorted(c)), w, k) for n, p, c, w, k in rows]


@pytest.mark.parametrize("name", list_models())
def test_derived_groups_equal_the_paper_declarations(name: str) -> None:
    for prune_skip in (False, True):
        model, got = derived(name, prune_skip)
        want = declared(model, prune_skip)
        assert [g[:2] for g in _as_tuples(got)] == [w[:2] for w in want], prune_skip
        assert _canonical(_as_tuples(got)) == _canonical(want), prune_skip
        # Every producer's own norm travels with it; nothing prunable is also excluded.
        modules = dict(model.named_modules())
        for group in got:
            carriers = [m.name for m in group.carriers]
            assert all(isinstance(modules[c], nn.BatchNorm1d | nn.BatchNorm2d) for c in carriers)
            if group.kind == "block":
                assert len(carriers) == 1
                assert modules[carriers[0]].num_features == group.width
            assert not set(group.producers) & set(got.excluded)


def test_paper_channel_counts() -> None:
    # CHASE reference: 32 prunable layers / 7,552 channels for ResNet-50; 15 / 4,992 for VGG-19.
    for name in ("resnet50", "resnet50_cifar"):
        _, groups = derived(name)
        assert len(groups) == 32 and sum(g.width for g in groups) == 7552
    _, groups = derived("vgg19")
    assert len(groups) == 15 and sum(g.width for g in groups) == 4992
    assert len(derived("resnet20")[1]) == 9


def test_prune_skip_streams_cover_residual_sums() -> None:
    streams = [g for g in derived("resnet50", True)[1] if g.kind == "stream"]
    assert len(streams) == 4
    first = streams[0]
    assert first.producers == (
        "layer1.0.downsample.0",
        "layer1.0.conv3",
        "layer1.1.conv3",
        "layer1.2.conv3",
    )
    assert "layer2.0.conv1" in first.consumers and "layer2.0.downsample.0" in first.consumers
    assert "fc" in streams[-1].consumers


def test_registry_exclusions_say_why() -> None:
    excluded = derived("resnet_quick")[1].excluded
    assert excluded["conv1"].startswith("the input of a residual block")
    assert excluded["layer1.0.conv3"].startswith("a residual stream (summed at ")
    assert excluded["layer1.0.conv3"].endswith("prunable with chase.prune_skip")
    assert "model's output" in excluded["fc"]
    assert "classifier never changes" in derived("vgg16")[1].excluded["features.40"]


@pytest.mark.parametrize(
    "cmap",
    [
        ChannelMap(),
        ChannelMap(offset=3, total=10),  # inside a concatenation
        ChannelMap(inner=4),  # a flatten's H·W block
        ChannelMap(offset=2, total=9, inner=2, outer=3),  # channels-last flatten of a concat
    ],
)
def test_channel_map_fit_inverts_positions(cmap: ChannelMap) -> None:
    width = 5
    positions = cmap.positions(torch.arange(width), width).numpy()
    per_position = positions.size // width
    channels = np.broadcast_to(
        np.arange(width)[None, :, None], (cmap.outer, width, cmap.inner)
    ).reshape(-1)
    assert per_position == cmap.outer * cmap.inner
    assert ChannelMap.fit(positions, channels, cmap.size(width), width) == cmap
    swapped = channels.copy()
    swapped[[0, -1]] = swapped[[-1, 0]]  # two channels in each other's place: no map does that
    assert ChannelMap.fit(positions, swapped, cmap.size(width), width) is None
