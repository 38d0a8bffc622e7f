"""Parameter exploration: which weights to prune (by |w|) and which to grow (by |grad|).

Selection is an exact top-k by index, never a threshold comparison: exactly k positions are taken,
and ties at the k-th value go to the lower flat index (layers in model order, then row-major within
a layer). ``select_smallest``/``select_largest`` use one ``kthvalue`` (O(n)) and a comparison, so a
global selection over 25 M weights costs a fraction of a second, and every rank gets the same result.

The functions here are pure: they take the current masks and return new ones; the controller
decides how many and applies them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def select_smallest(scores: Tensor, k: int) -> Tensor:
    """Bool mask over 1-D ``scores`` with exactly min(k, n) True: the k smallest, ties to lower index."""
    n = scores.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    kth = torch.kthvalue(scores, k).values
    return _fill_ties(scores < kth, scores == kth, k)


def select_largest(scores: Tensor, k: int) -> Tensor:
    """Bool mask over 1-D ``scores`` with exactly min(k, n) True: the k largest, ties to lower index."""
    n = scores.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    kth = torch.kthvalue(scores, n - k + 1).values
    return _fill_ties(scores > kth, scores == kth, k)


def _fill_ties(strict: Tensor, ties: Tensor, k: int) -> Tensor:
    need = k - int(strict.sum())
    if need > 0:
        strict[ties.nonzero().squeeze(1)[:need]] = True
    return strict


def prune_scores(weight: Tensor, mask: Tensor) -> Tensor:
    """|w| at active positions, +inf elsewhere (never chosen while active ones remain)."""
    return torch.where(mask, weight.detach().abs().float(), torch.inf)


def grow_scores(grad_abs: Tensor, mask: Tensor, allowed: Tensor | None) -> Tensor:
    """|grad| at inactive positions inside alive channels, -inf elsewhere; NaN counts as 0, inf as the largest float."""
    free = ~mask if allowed is None else ~mask & allowed
    return torch.where(free, grad_abs.float().nan_to_num(nan=0.0), -torch.inf)


def prune_global(weights: Sequence[Tensor], masks: Sequence[Tensor], k: int) -> list[Tensor]:
    """Drop the k smallest-|w| active weights across all layers (fewer if fewer are active).

    Only the active weights (a tenth of the network at density 0.1) enter the selection; they are
    taken in flat order, so ties still go to the lower flat index.
    """
    active = [w.detach().abs().float()[m] for w, m in zip(weights, masks, strict=True)]
    drop = select_smallest(torch.cat(active), k)
    out = []
    for m, d in zip(masks, torch.split(drop, [a.numel() for a in active]), strict=True):
        new = m.clone()
        new[m] = ~d
        out.append(new)
    return out


def grow_global(
    grads_abs: Sequence[Tensor], masks: Sequence[Tensor], allowed: Sequence[Tensor | None], k: int
) -> list[Tensor]:
    """Activate the k inactive positions with the largest |grad| inside alive channels, globally.

    Fewer when fewer positions are free; grown weights are zero already (inactive positions are).
    """
    flat = torch.cat(
        [grow_scores(g, m, a).flatten() for g, m, a in zip(grads_abs, masks, allowed, strict=True)]
    )
    add = select_largest(flat, k) & (flat > -torch.inf)
    return [m | a.view_as(m) for m, a in zip(masks, _split(add, masks), strict=True)]


def prune_layerwise(
    weights: Sequence[Tensor], masks: Sequence[Tensor], ks: Sequence[int]
) -> list[Tensor]:
    """Drop ks[l] smallest-|w| active weights of each layer l."""
    out = []
    for w, m, k in zip(weights, masks, ks, strict=True):
        scores = prune_scores(w, m).flatten()
        drop = select_smallest(scores, k) & (scores < torch.inf)
        out.append(m & ~drop.view_as(m))
    return out


def grow_layerwise(
    grads_abs: Sequence[Tensor],
    masks: Sequence[Tensor],
    allowed: Sequence[Tensor | None],
    ks: Sequence[int],
) -> list[Tensor]:
    """Activate ks[l] inactive positions with the largest |grad| inside alive channels of layer l."""
    out = []
    for g, m, a, k in zip(grads_abs, masks, allowed, ks, strict=True):
        scores = grow_scores(g, m, a).flatten()
        add = select_largest(scores, k) & (scores > -torch.inf)
        out.append(m | add.view_as(m))
    return out


def _split(flat: Tensor, like: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return torch.split(flat, [m.numel() for m in like])
