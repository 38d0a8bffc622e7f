"""Which weights are masked, and how masks are re-applied to weights and optimizer state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from train.chase import Chase
from train.config import ChaseConfig
from train.errors import BadInput
from train.masks import apply_masks, checksum, count_active, maskable_modules
from train.models import create_model


def test_every_conv_and_linear_is_masked_except_dense_layers() -> None:
    model = create_model("resnet20")
    mods = maskable_modules(model, ["conv1", "fc"])
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert set(mods) == set(convs) - {"conv1"}
    with pytest.raises(BadInput, match="chase.dense_layers: 'nope'"):
        maskable_modules(model, ["nope"])
    with pytest.raises(BadInput, match="chase.dense_layers: 'bn1'"):
        maskable_modules(model, ["bn1"])


def test_controller_masks_are_bool_exact_and_applied() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20")
    cfg = ChaseConfig(density=0.2, dense_layers=["conv1"], channel_sparsity=0.0)
    chase = Chase(model, [], cfg, None, steps_per_epoch=10, epochs=2, seed=1)
    params = dict(model.named_parameters())
    assert "conv1.weight" not in chase.masks
    assert set(chase.masks) == {
        n for n in params if n.endswith(".weight") and params[n].dim() > 1
    } - {"conv1.weight"}
    assert all(m.dtype == torch.bool for m in chase.masks.values())
    assert chase.nnz() == chase.budget == round(0.2 * chase.total)
    for name, mask in chase.masks.items():
        assert int((params[name][~mask] != 0).sum()) == 0
    assert bool((params["conv1.weight"] != 0).all())


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_apply_masks_zeroes_weights_and_optimizer_state(optim: str) -> None:
    torch.manual_seed(0)
    model = create_model("mlp", hidden=[32], input_size=4)
    params = [model.hidden[0].weight, model.fc.weight]
    masks = [torch.rand_like(p) < 0.5 for p in params]
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if optim == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.1)
    )
    model(torch.randn(8, 1, 4, 4)).sum().backward()
    opt.step()
    apply_masks(params, masks, opt)
    for p, m in zip(params, masks, strict=True):
        assert int((p[~m] != 0).sum()) == 0
        assert bool((p[m] != 0).all())
        states = [v for v in opt.state[p].values() if torch.is_tensor(v) and v.shape == p.shape]
        assert states
        for s in states:
            assert int((s[~m] != 0).sum()) == 0
    assert count_active(masks) == [int(m.sum()) for m in masks]


def test_masked_sgd_keeps_gradients_dense() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    chase = Chase(
        model, [], ChaseConfig(density=0.1, channel_sparsity=0.0), opt, steps_per_epoch=5, epochs=1
    )
    loss = F.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    chase.before_step(1)
    opt.step()
    chase.after_step(1)
    grad = model.layer1[0].conv1.weight.grad
    mask = chase.masks["layer1.0.conv1.weight"]
    assert int((grad[~mask] != 0).sum()) > 0  # growth reads these
    assert int((model.layer1[0].conv1.weight[~mask] != 0).sum()) == 0


def test_checksum_sees_every_position() -> None:
    masks = [torch.rand(5, 7) < 0.5, torch.rand(3, 3, 2) < 0.5]
    same = [m.clone() for m in masks]
    assert int(checksum(masks)) == int(checksum(same))
    same[1][2, 1, 0] = ~same[1][2, 1, 0]
    assert int(checksum(masks)) != int(checksum(same))
    swapped = [masks[1], masks[0]]
    assert int(checksum(masks)) != int(checksum(swapped))
