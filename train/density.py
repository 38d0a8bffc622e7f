"""Layer-wise densities of the initial sparse masks (ERK, ER, uniform) and exact integer counts.

The budget is exact: the number of active weights is B = round(d·N), split over the layers by
largest remainder so that every layer gets floor or ceil of its real-valued share d_l·n_l. The
released code drew Bernoulli masks whose count was only right on average; we never do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

METHODS = ("erk", "er", "uniform")


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (Python's ``round`` rounds halves to even)."""
    return math.floor(x + 0.5)


def budget(density: float, total: int) -> int:
    """B = round(d·N): the fixed number of active weights."""
    return min(total, round_half_up(density * total))


def layer_densities(shapes: Sequence[Sequence[int]], density: float, method: str) -> list[float]:
    """Per-layer densities d_l with Σ d_l·n_l = d·N (before rounding to counts).

    ERK: d_l ∝ (sum of the weight's dims) / (number of its elements), kernel dims included; ER: the
    same with (out + in) only. One scale ε is solved for the total; every layer whose density would
    exceed 1 is made dense and ε is solved again over the rest (RigL's and the released code's loop).
    """
    if method not in METHODS:
        raise ValueError(f"unknown init {method!r}; valid: {', '.join(METHODS)}")
    sizes = [math.prod(s) for s in shapes]
    if method == "uniform" or density >= 1.0:
        return [min(1.0, density)] * len(shapes)
    raw = [_raw_density(s, method) for s in shapes]
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        if not free:
            return [1.0] * len(shapes)
        target = density * sum(sizes) - sum(sizes[i] for i in dense)
        eps = target / sum(raw[i] * sizes[i] for i in free)
        peak = max(raw[i] for i in free)
        if eps * peak <= 1.0:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        dense.update(i for i in free if raw[i] == peak)


def _raw_density(shape: Sequence[int], method: str) -> float:
    dims = list(shape) if method == "erk" else list(shape[:2])
    return sum(dims) / math.prod(dims)


def layer_counts(shapes: Sequence[Sequence[int]], density: float, method: str) -> list[int]:
    """Exact active counts per layer: Σ = round(d·N), each count within 1 of d_l·n_l, ≤ n_l."""
    sizes = [math.prod(s) for s in shapes]
    shares = [d * n for d, n in zip(layer_densities(shapes, density, method), sizes, strict=True)]
    return apportion(budget(density, sum(sizes)), shares, sizes)


def apportion(total: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` into integers, none above its cap.

    Water-filling: a layer whose share reaches its cap is fixed at the cap and the rest is shared
    again; the remaining fractions go by largest remainder, ties to the lower index. The result sums
    to min(total, Σ caps) exactly and is deterministic (plain float arithmetic, same on every rank).
    """
    n = len(caps)
    out = [0] * n
    total = min(total, sum(caps))
    free = [i for i in range(n) if caps[i] > 0]
    left = total
    while free and left > 0:
        wsum = sum(weights[i] for i in free)
        shares = {i: left * (weights[i] / wsum if wsum > 0 else 1.0 / len(free)) for i in free}
        full = [i for i in free if shares[i] >= caps[i]]
        if full:
            for i in full:
                out[i] = caps[i]
                left -= caps[i]
            free = [i for i in free if i not in set(full)]
            continue
        floors = {i: math.floor(shares[i]) for i in free}
        for i in free:
            out[i] = floors[i]
        rest = left - sum(floors.values())
        order = sorted(free, key=lambda i: (-(shares[i] - floors[i]), i))
        for i in order[:rest]:
            out[i] += 1
        left = 0
    return out


def capped_message(step: int, budget: int, capacity: int, total: int) -> str:
    """The log line of a ``budget_capped`` event: the alive channels hold fewer weights than B."""
    return (
        f"budget capped at step {step}: the alive channels hold {capacity} weights, fewer than "
        f"the budget B = {budget}; the density stays at or below {capacity / total:.4f} instead "
        f"of {budget / total:.4f} (lower chase.channel_sparsity or chase.density to keep B)"
    )
