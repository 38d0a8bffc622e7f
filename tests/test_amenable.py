"""The paper's amenable statistic: every channel against its own UMM and WS at mask initialization."""

from __future__ import annotations

import io

import pytest
import torch

from train.amenable import amenable_fractions, channel_umm_ws
from train.chase import Chase
from train.config import ChaseConfig
from train.models import create_model

V = (0.0, 0.2, 0.3, 0.4)


def test_hand_built_layers_have_the_known_fractions() -> None:
    # Layer a, 4 channels of fan 5 (initial -> now):
    #   0: UMM 0.8 -> 0.6 (drop 0.25), WS 0.2 -> 0.4 (rise 1.0): UMM at v<0.25, WS at every v
    #   1: UMM 0.4 -> 0.6, WS 0.6 -> 0.6: a larger, not sparser channel is never amenable
    #   2: UMM 2 -> 0.8 (drop 0.6), WS 0 -> 0.2: dense at init, so judged by UMM alone
    #   3: empty throughout (UMM_0 = 0, WS_0 = 1): never amenable
    a0 = torch.tensor(
        [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [2, 2, 2, 2, 2], [0, 0, 0, 0, 0]], dtype=torch.float32
    )
    a1 = torch.tensor(
        [[1, 1, 1, 0, 0], [1.5, 1.5, 0, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]],
        dtype=torch.float32,
    )
    # Layer b, 2 conv channels of fan 1x1x2: channel 0 emptied (drop 1, rise 1), channel 1 unchanged.
    b0 = torch.tensor([[1.0, 0.0], [1.0, -1.0]]).view(2, 2, 1, 1)
    b1 = torch.tensor([[0.0, 0.0], [1.0, -1.0]]).view(2, 2, 1, 1)
    initial = [channel_umm_ws(a0), channel_umm_ws(b0)]
    assert initial[0][0].tolist() == pytest.approx([0.8, 0.4, 2.0, 0.0])
    assert initial[0][1].tolist() == pytest.approx([0.2, 0.6, 0.0, 1.0])

    stats = amenable_fractions(["a", "b"], [a1, b1], initial, [None, None], V)
    assert stats["thresholds"] == list(V) and stats["n_channels"] == {"a": 4, "b": 2}
    assert stats["umm"]["a"] == pytest.approx([2 / 4, 2 / 4, 1 / 4, 1 / 4])
    assert stats["ws"]["a"] == pytest.approx([1 / 4] * 4)
    assert stats["either"]["a"] == pytest.approx([2 / 4] * 4)
    assert stats["umm"]["b"] == stats["ws"]["b"] == stats["either"]["b"] == [0.5] * 4
    assert stats["umm_total"] == pytest.approx([3 / 6, 3 / 6, 2 / 6, 2 / 6])
    assert stats["ws_total"] == pytest.approx([2 / 6] * 4)
    assert stats["either_total"] == pytest.approx([3 / 6] * 4)

    # Channels already removed are not counted: drop a's channel 2 (amenable by UMM).
    keep = torch.tensor([True, True, False, True])
    stats = amenable_fractions(["a", "b"], [a1, b1], initial, [keep, None], V)
    assert stats["n_channels"] == {"a": 3, "b": 2}
    assert stats["umm"]["a"] == pytest.approx([1 / 3, 1 / 3, 0, 0])
    assert stats["umm_total"] == pytest.approx([2 / 5, 2 / 5, 1 / 5, 1 / 5])


def test_unchanged_weights_are_not_amenable_at_any_ratio() -> None:
    w = torch.randn(6, 3, 3, 3) * (torch.rand(6, 3, 3, 3) < 0.3)
    stats = amenable_fractions(["w"], [w], [channel_umm_ws(w)], [None], V)
    assert stats["umm"]["w"] == stats["ws"]["w"] == stats["either"]["w"] == [0.0] * 4


def _chase(seed: int):
    torch.manual_seed(seed)
    net = create_model("resnet_quick", width=8, in_channels=3, num_classes=4)
    cfg = ChaseConfig(density=0.2, update_every=6, channel_sparsity=0.0, growth_extra=0.1)
    chase = Chase(net, [], cfg, None, steps_per_epoch=10, epochs=6, explore_until=4, seed=7)
    return net, chase


def test_the_controller_compares_with_the_masked_weights_at_initialization() -> None:
    net, chase = _chase(0)
    assert chase.amenable_stats()["either_total"] == [0.0] * 4  # nothing moved yet
    w = net.layer2[0].conv1.weight
    umm0, ws0 = channel_umm_ws(w)
    with torch.no_grad():
        w[:3] = 0  # three of 16 channels emptied
        w[3:] *= 2.0  # the others grow: not amenable
    stats = chase.amenable_stats()
    assert stats["umm"]["layer2.0.conv1"] == pytest.approx([3 / 16] * 4)
    rise = ((1.0 - ws0[:3]) / ws0[:3]).tolist()  # each emptied channel's relative WS increase
    expected = [sum(r > v for r in rise) / 16 for v in V]
    assert stats["ws"]["layer2.0.conv1"] == pytest.approx(expected)
    assert stats["either"]["layer2.0.conv1"] == pytest.approx([3 / 16] * 4)

    # The initial scores are part of the state: a controller built on another initialization
    # and loaded from this state reports the same statistic.
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "chase": chase.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    net2, chase2 = _chase(99)
    net2.load_state_dict(saved["model"])
    assert chase2.amenable_stats() != stats
    chase2.load_state_dict(saved["chase"])
    assert chase2.amenable_stats() == stats
