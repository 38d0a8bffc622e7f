"""Exact top-k prune/grow selection, checked against a brute-force reference."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.exploration import (
    grow_global,
    grow_layerwise,
    prune_global,
    prune_layerwise,
    select_largest,
    select_smallest,
)


def _reference(scores: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    """Stable sort by score (ascending, or descending for largest): ties keep index order."""
    keys = -scores if largest else scores
    order = torch.sort(keys, stable=True).indices
    out = torch.zeros(scores.numel(), dtype=torch.bool)
    out[order[:k]] = True
    return out


tie_heavy = st.lists(st.integers(0, 6), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(tie_heavy, st.integers(0, 70), st.booleans())
def test_selection_equals_brute_force(values: list[int], k: int, largest: bool) -> None:
    scores = torch.tensor(values, dtype=torch.float32) / 3.0
    pick = select_largest if largest else select_smallest
    out = pick(scores, k)
    assert int(out.sum()) == min(k, len(values))
    assert torch.equal(out, _reference(scores, min(k, len(values)), largest))


def _layers(seed: int, density: float = 0.4) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 4, 3, 3), (5, 6), (7, 3, 1, 1)]
    # Rounded values make many exact ties.
    weights = [torch.randint(-4, 5, s, generator=g).float() / 4 for s in shapes]
    masks = [torch.rand(s, generator=g) < density for s in shapes]
    return weights, masks


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 60))
def test_global_prune_drops_exactly_the_k_smallest_active(seed: int, k: int) -> None:
    weights, masks = _layers(seed)
    active = torch.cat([m.flatten() for m in masks])
    k = min(k, int(active.sum()))
    new = prune_global(weights, masks, k)
    dropped = torch.cat([(m & ~n).flatten() for m, n in zip(masks, new, strict=True)])
    assert all(not bool((n & ~m).any()) for m, n in zip(masks, new, strict=True))  # never adds
    scores = torch.cat([w.abs().flatten() for w in weights])
    cand = active.nonzero().squeeze(1)
    expected = torch.zeros_like(active)
    expected[cand[_reference(scores[cand], k, largest=False)]] = True
    assert torch.equal(dropped, expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 200))
def test_global_grow_takes_the_k_largest_free_inside_alive_channels(seed: int, k: int) -> None:
    weights, masks = _layers(seed)
    g = torch.Generator().manual_seed(seed + 1)
    grads = [torch.randint(0, 4, w.shape, generator=g).float() for w in weights]
    alive_rows = torch.tensor([True, False, True, True, False, True])
    allowed = [alive_rows.view(-1, 1, 1, 1), alive_rows.view(1, -1), None]
    free = torch.cat(
        [
            (~m & (a if a is not None else True)).expand_as(m).flatten()
            for m, a in zip(masks, allowed, strict=True)
        ]
    )
    k = min(k, int(free.sum()))
    new = grow_global(grads, masks, allowed, k)
    added = torch.cat([(n & ~m).flatten() for m, n in zip(masks, new, strict=True)])
    assert int(added.sum()) == k
    assert not bool((added & ~free).any())
    scores = torch.cat([gr.flatten() for gr in grads])
    cand = free.nonzero().squeeze(1)
    expected = torch.zeros_like(free)
    expected[cand[_reference(scores[cand], k, largest=True)]] = True
    assert torch.equal(added, expected)


def test_grow_never_exceeds_the_free_positions() -> None:
    weights, masks = _layers(3)
    grads = [torch.ones_like(w) for w in weights]
    allowed = [torch.zeros(6, 1, 1, 1, dtype=torch.bool), None, None]
    new = grow_global(grads, masks, allowed, 10**6)
    assert torch.equal(new[0], masks[0])  # the dead layer got nothing
    assert bool(new[1].all()) and bool(new[2].all())


def test_layerwise_counts_per_layer() -> None:
    weights, masks = _layers(7, density=0.6)
    nnz = [int(m.sum()) for m in masks]
    ks = [min(3, n) for n in nnz]
    pruned = prune_layerwise(weights, masks, ks)
    assert [int(p.sum()) for p in pruned] == [n - k for n, k in zip(nnz, ks, strict=True)]
    for w, m, p, k in zip(weights, masks, pruned, ks, strict=True):
        scores = w.abs().flatten()
        cand = m.flatten().nonzero().squeeze(1)
        expected = torch.zeros(m.numel(), dtype=torch.bool)
        expected[cand[_reference(scores[cand], k, largest=False)]] = True
        assert torch.equal((m & ~p).flatten(), expected)
    grads = [w.abs() + 1 for w in weights]
    grown = grow_layerwise(grads, pruned, [None] * 3, [2, 0, 4])
    assert [int(g.sum()) - int(p.sum()) for g, p in zip(grown, pruned, strict=True)] == [2, 0, 4]
