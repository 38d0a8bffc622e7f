"""SNIP and GraSP starts: each layer's share of the initial mask from a one-shot saliency ranking.

``chase.init: snip | grasp`` scores every maskable weight once, at initialization, on the first
``chase.init_batches`` training batches, ranks all layers together and keeps the B = round(d·N)
best, as the two papers prune at initialization:

- SNIP (Lee et al., ICLR 2019): connection sensitivity |g ⊙ w|, g = ∂L/∂w of the mean
  cross-entropy; the largest are kept.
- GraSP (Wang et al., ICLR 2020): S = −w ⊙ (H g), the gradient-flow change when w is removed, with
  g and the Hessian-gradient product H g of the cross-entropy at temperature T = 200 (the GraSP
  authors' code divides the logits by it); the smallest are kept.

What a layer takes from the ranking is its *count*: the masks then draw that many positions
uniformly at random, as the released Chase code intends ("re-sample mask positions": SNIP and GraSP
set the layer-wise densities, as ERK does). The scores come from the network's own initial weights
(the released helpers re-initialize a copy with Xavier first) and from a copy of it, so BatchNorm
statistics and gradients of the model itself are untouched. Under torch.distributed the gradients
(and Hessian-gradient products) are averaged over the ranks, so every rank ranks the global batch
and draws the same counts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SALIENCY_INITS = ("snip", "grasp")
GRASP_TEMPERATURE = 200.0

Batches = Iterable[tuple[Tensor, Tensor]]


def saliency_counts(
    model: nn.Module, layers: Sequence[str], method: str, batches: Batches, keep: int
) -> list[int]:
    """How many weights each of ``layers`` (Conv/Linear module names) keeps: its entries among
    the ``keep`` best of the global ``method`` ranking."""
    if method == "snip":
        scores = snip_scores(model, layers, batches)
    elif method == "grasp":
        scores = [-s for s in grasp_scores(model, layers, batches)]  # the smallest S are kept
    else:
        raise ValueError(f"unknown saliency {method!r}; valid: {', '.join(SALIENCY_INITS)}")
    return counts_from_scores(scores, keep)


def snip_scores(model: nn.Module, layers: Sequence[str], batches: Batches) -> list[Tensor]:
    """|g ⊙ w| of every weight of ``layers``, g the gradient of the mean cross-entropy over
    ``batches`` (each batch's mean loss, averaged)."""
    net, weights = _copy(model, layers)
    data = _device_batches(batches, weights[0].device)
    grads = [torch.zeros_like(w) for w in weights]
    for x, y in data:
        loss = F.cross_entropy(net(x), y) / len(data)
        for acc, g in zip(grads, torch.autograd.grad(loss, weights), strict=True):
            acc += g
    _average_over_ranks(grads)
    return [(g * w).abs().detach() for g, w in zip(grads, weights, strict=True)]


def grasp_scores(
    model: nn.Module,
    layers: Sequence[str],
    batches: Batches,
    temperature: float = GRASP_TEMPERATURE,
) -> list[Tensor]:
    """S = −w ⊙ (H g) of every weight of ``layers``: g the gradient and H the Hessian of the mean
    cross-entropy of logits / ``temperature`` over ``batches``; H g by double backward."""
    net, weights = _copy(model, layers)
    data = _device_batches(batches, weights[0].device)

    def loss_of(x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(net(x) / temperature, y) / len(data)

    grads = [torch.zeros_like(w) for w in weights]
    for x, y in data:
        for acc, g in zip(grads, torch.autograd.grad(loss_of(x, y), weights), strict=True):
            acc += g
    _average_over_ranks(grads)
    hg = [torch.zeros_like(w) for w in weights]
    for x, y in data:
        first = torch.autograd.grad(loss_of(x, y), weights, create_graph=True)
        dot = sum((f * g).sum() for f, g in zip(first, grads, strict=True))
        for acc, h in zip(hg, torch.autograd.grad(dot, weights), strict=True):
            acc += h
    _average_over_ranks(hg)
    return [(-w * h).detach() for w, h in zip(weights, hg, strict=True)]


def counts_from_scores(scores: Sequence[Tensor], keep: int) -> list[int]:
    """Per layer, how many of its entries are among the ``keep`` largest scores of all layers
    together: an exact top-k by index, ties to the earlier layer and position."""
    flat = torch.cat([s.detach().flatten().float().cpu() for s in scores])
    keep = max(0, min(keep, flat.numel()))
    order = torch.sort(flat, descending=True, stable=True).indices[:keep]
    bounds = torch.tensor([s.numel() for s in scores]).cumsum(0)
    layer = torch.bucketize(order, bounds, right=True)
    return torch.bincount(layer, minlength=len(scores)).tolist()


def _copy(model: nn.Module, layers: Sequence[str]) -> tuple[nn.Module, list[Tensor]]:
    """A training-mode copy of ``model`` and the weights of ``layers`` in it."""
    net = copy.deepcopy(model).train()
    for p in net.parameters():
        p.grad = None
    modules = dict(net.named_modules())
    return net, [modules[name].weight for name in layers]


def _device_batches(batches: Batches, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    data = [(x.to(device), y.to(device)) for x, y in batches]
    if not data:
        raise ValueError("saliency needs at least one batch")
    return data


def _average_over_ranks(tensors: list[Tensor]) -> None:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for t in tensors:
        torch.distributed.all_reduce(t)
        t /= world
