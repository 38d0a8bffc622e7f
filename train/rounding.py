"""Width rounding: keep every pruned layer's channel count a multiple of ``round_to``.

Irregular widths such as 63, 111 or 241 channels run barely faster than the dense layer on real
kernels; multiples of 8 (tensor cores, vector units) run near the FLOP bound. This is one concept
with one name in code, ``round_to``, applied at two points of the pipeline:

- **Training** (``train.channel_selection``): the controller removes channels only in whole chunks of
  ``round_to``, so every prunable layer's width stays a multiple of it. The recipe spells this
  ``chase.align`` (the key is part of the recipe contract and stays); the controller reads it
  through ``ChaseConfig.round_to``. Default 1: the paper's behaviour, no rounding.
- **Deployment** (``chase-deploy slim --round-to N``, ``deploy.round_to`` for ``run``): a plan's
  kept sets are widened to a multiple of ``round_to`` by keeping extra channels
  (``round_kept``); still lossless, since a kept channel is simply not removed. Default 1 for
  ``slim`` (the plan as given) and 8 for ``run``.

The scoring rule, the same at both points: when rounding decides which channels survive, it
keeps the ones that rank best by the score that ranked them for pruning, ties going to the lower
channel index. In training that is the run's criterion (``chase.criterion``); a plan carries no
scores, so ``slim`` ranks by L1 magnitude, Σ|W[c]| over every producer of the channel's stream,
which is UMM's order within a layer (UMM divides it by the layer's constant fan-in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from train.density import round_half_up


def round_up(count: int, round_to: int) -> int:
    """The smallest multiple of ``round_to`` that is at least ``count``."""
    return math.ceil(count / round_to) * round_to


def round_nearest(count: float, round_to: int) -> int:
    """The multiple of ``round_to`` nearest to ``count`` (halves round up)."""
    return round_to * round_half_up(count / round_to)


def round_kept(
    kept: tuple[int, ...],
    out_channels: int,
    round_to: int,
    scores: Sequence[float],
    segments: int = 1,
) -> tuple[int, ...]:
    """Widen ``kept`` to a multiple of ``round_to`` (capped at ``out_channels``) with the best
    remaining channels by ``scores`` (ties: lower index first), so the result stays sorted.

    With ``segments`` > 1 (channels a grouped conv splits into equal slices) every slice keeps the
    same number of channels: each is widened by the same count, to a multiple of
    ``lcm(round_to, segments) / segments`` (so the total is a multiple of ``round_to``), capped at
    the slice size."""
    if segments > 1:
        return _round_segments(kept, out_channels, round_to, scores, segments)
    if round_to <= 1 or len(kept) % round_to == 0:
        return kept
    target = min(out_channels, round_up(len(kept), round_to))
    return _widen(kept, range(out_channels), target - len(kept), scores)


def _widen(kept, candidates, extra: int, scores: Sequence[float]) -> tuple[int, ...]:
    chosen = set(kept)
    rest = [i for i in candidates if i not in chosen]
    rest.sort(key=lambda i: (-float(scores[i]), i))
    return tuple(sorted(chosen.union(rest[:extra])))


def _round_segments(kept, out_channels, round_to, scores, segments) -> tuple[int, ...]:
    size = out_channels // segments
    per = [[i for i in kept if i // size == s] for s in range(segments)]
    count = len(per[0])
    step = math.lcm(round_to, segments) // segments
    target = min(size, round_up(count, step))
    if target == count:
        return kept
    out: list[int] = []
    for s, mine in enumerate(per):
        out.extend(_widen(mine, range(s * size, (s + 1) * size), target - len(mine), scores))
    return tuple(sorted(out))
