"""Initial masks of a network that starts from trained weights: each layer keeps its largest-|w|.

Random masks suit a network at its random initialization (the paper's setting: every position is
as good as any other). A trained network's weights already say which positions matter, so a run
started from loaded weights (``model.weights``) keeps, in each masked layer, the positions of its
largest magnitudes under the layer's ERK (or ER, uniform) count: exactly that many, ties to the
lower flat index, the same on every process. This goes beyond the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def magnitude_mask(weight: Tensor, count: int) -> Tensor:
    """A bool mask of ``weight``'s shape with exactly ``count`` True at its largest |w|."""
    flat = weight.detach().abs().flatten()
    count = max(0, min(count, flat.numel()))
    order = torch.sort(flat, descending=True, stable=True).indices  # ties: lower index first
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=weight.device)
    mask[order[:count]] = True
    return mask.view(weight.shape)


def magnitude_masks(weights: Sequence[Tensor], counts: Sequence[int]) -> list[Tensor]:
    """One ``magnitude_mask`` per layer."""
    return [magnitude_mask(w, c) for w, c in zip(weights, counts, strict=True)]
