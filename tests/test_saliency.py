"""SNIP and GraSP starts (``chase.init: snip | grasp``): scores against hand computations on tiny
linear networks, the global ranking's per-layer counts, and the controller's masks from them."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.derived_groups import derive_cached
from train.chase import Chase
from train.config import ChaseConfig, recipe_from_dict
from train.errors import BadInput
from train.models import create_model
from train.saliency import counts_from_scores, grasp_scores, saliency_counts, snip_scores

W1 = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64)
W2 = torch.tensor([[1.0, 0.5], [-0.75, 1.5]], dtype=torch.float64)
X = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.2]], dtype=torch.float64)
Y = torch.tensor([0, 1, 1])


def _net(*weights: Tensor) -> nn.Sequential:
    layers = [nn.Linear(w.shape[1], w.shape[0], bias=False).double() for w in weights]
    with torch.no_grad():
        for layer, w in zip(layers, weights, strict=True):
            layer.weight.copy_(w)
    return nn.Sequential(*layers)


def _softmax_rows(z: Tensor) -> Tensor:
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def _hand_grads(w1: Tensor, w2: Tensor, x: Tensor, y: Tensor, t: float = 1.0):
    """dL/dW1, dL/dW2 of the mean cross-entropy of (x W1ᵀ W2ᵀ)/t, written out by hand: with
    h = x W1ᵀ, p = softmax(h W2ᵀ / t) and d = (p − onehot(y)) / (n·t), dW2 = dᵀ h, dW1 = (d W2)ᵀ x."""
    h = x @ w1.T
    p = _softmax_rows(h @ w2.T / t)
    d = (p - torch.eye(p.shape[1], dtype=p.dtype)[y]) / (len(x) * t)
    return (d @ w2).T @ x, d.T @ h


def test_snip_scores_match_a_hand_computation() -> None:
    g1, g2 = _hand_grads(W1, W2, X, Y)
    scores = snip_scores(_net(W1, W2), ["0", "1"], [(X, Y)])
    assert torch.allclose(scores[0], (g1 * W1).abs(), atol=1e-12)
    assert torch.allclose(scores[1], (g2 * W2).abs(), atol=1e-12)
    # Several batches: the gradient of the mean loss, each batch's mean averaged.
    a, b = (X[:2], Y[:2]), (X[2:], Y[2:])
    ga, gb = _hand_grads(W1, W2, *a), _hand_grads(W1, W2, *b)
    two = snip_scores(_net(W1, W2), ["0", "1"], [a, b])
    assert torch.allclose(two[0], ((ga[0] + gb[0]) / 2 * W1).abs(), atol=1e-12)
    assert torch.allclose(two[1], ((ga[1] + gb[1]) / 2 * W2).abs(), atol=1e-12)


def test_grasp_scores_of_one_layer_match_the_closed_form() -> None:
    # L = mean_i CE(W x_i / T): g = Σ_i (p_i − e_yi) x_iᵀ / (nT) and, with S_i = diag(p_i) − p_i p_iᵀ,
    # H g = Σ_i S_i (g x_i) x_iᵀ / (n T²); GraSP's score is −W ⊙ H g.
    t = 2.0
    p = _softmax_rows(X @ W1.T / t)
    g = (p - torch.eye(2, dtype=torch.float64)[Y]).T @ X / (len(X) * t)
    hg = torch.zeros_like(W1)
    for xi, pi in zip(X, p, strict=True):
        s = torch.diag(pi) - torch.outer(pi, pi)
        hg += torch.outer(s @ (g @ xi), xi) / (len(X) * t * t)
    (score,) = grasp_scores(_net(W1), ["0"], [(X, Y)], temperature=t)
    assert torch.allclose(score, -W1 * hg, atol=1e-12)


def test_grasp_scores_of_two_layers_match_finite_differences_of_hand_gradients() -> None:
    # H g as the directional derivative of the hand-written gradient along g (central difference).
    t, eps = 3.0, 1e-5
    g1, g2 = _hand_grads(W1, W2, X, Y, t)
    plus = _hand_grads(W1 + eps * g1, W2 + eps * g2, X, Y, t)
    minus = _hand_grads(W1 - eps * g1, W2 - eps * g2, X, Y, t)
    hg1, hg2 = ((p - m) / (2 * eps) for p, m in zip(plus, minus, strict=True))
    s1, s2 = grasp_scores(_net(W1, W2), ["0", "1"], [(X, Y)], temperature=t)
    assert torch.allclose(s1, -W1 * hg1, atol=1e-9)
    assert torch.allclose(s2, -W2 * hg2, atol=1e-9)


def test_counts_come_from_the_global_ranking() -> None:
    a = torch.tensor([[3.0, 1.0], [2.0, 2.0]])
    b = torch.tensor([5.0, 0.0, 2.0])
    # Ranked: 5 (b), 3 (a), 2 (a), 2 (a), 2 (b), 1, 0: ties go to the earlier layer and position.
    assert counts_from_scores([a, b], 4) == [3, 1]
    assert counts_from_scores([a, b], 5) == [3, 2]
    assert counts_from_scores([a, b], 0) == [0, 0]
    assert counts_from_scores([a, b], 99) == [4, 3]
    # GraSP keeps the smallest scores: saliency_counts ranks −S.
    net = _net(W1, W2)
    s1, s2 = grasp_scores(net, ["0", "1"], [(X, Y)])
    assert saliency_counts(net, ["0", "1"], "grasp", [(X, Y)], 3) == counts_from_scores(
        [-s1, -s2], 3
    )
    with pytest.raises(ValueError, match="unknown saliency"):
        saliency_counts(net, ["0"], "magnitude", [(X, Y)], 3)


def _batches(n: int = 2):
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g))] * n


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_the_controller_draws_masks_with_the_saliency_counts(method: str) -> None:
    torch.manual_seed(0)
    net = create_model("resnet_quick", width=8, in_channels=3, num_classes=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = ChaseConfig(density=0.2, init=method, channel_sparsity=0.5, channel_every=6)
    chase = Chase(
        net,
        derive_cached(net, (3, 8, 8)),
        cfg,
        None,
        steps_per_epoch=10,
        epochs=6,
        explore_until=4,
        init_data=iter(_batches()),
    )
    layers = chase.layer_names
    expected = saliency_counts(
        _initial_model(before), layers, method, _batches(), round(0.2 * chase.total)
    )
    assert [int(m.sum()) for m in chase.masks.values()] == expected
    assert chase.nnz() == chase.budget
    erk = Chase(net, [], ChaseConfig(density=0.2, channel_sparsity=0.0), None, steps_per_epoch=10,
                epochs=6)  # fmt: skip
    assert [int(m.sum()) for m in erk.masks.values()] != expected
    # The scores were taken on a copy: the model's BatchNorm statistics did not move.
    assert torch.equal(before["bn1.running_mean"], net.state_dict()["bn1.running_mean"])


def _initial_model(state: dict) -> nn.Module:
    net = create_model("resnet_quick", width=8, in_channels=3, num_classes=4)
    net.load_state_dict(state)
    return net


def test_saliency_needs_batches_and_the_recipe_key_is_checked() -> None:
    net = create_model("resnet_quick", width=8, in_channels=3, num_classes=4)
    with pytest.raises(BadInput, match=r"chase\.init: snip scores weights on training batches"):
        Chase(net, [], ChaseConfig(init="snip", channel_sparsity=0.0), None, steps_per_epoch=4,
              epochs=2)  # fmt: skip
    r = recipe_from_dict({"chase": {"init": "grasp", "init_batches": 4}})
    assert (r.chase.init, r.chase.init_batches) == ("grasp", 4)
    with pytest.raises(BadInput, match=r"chase\.init: 'obd' is not one of erk, er, uniform, snip"):
        recipe_from_dict({"chase": {"init": "obd"}})
    with pytest.raises(BadInput, match=r"chase\.init_batches: 0 is out of range"):
        recipe_from_dict({"chase": {"init_batches": 0}})
