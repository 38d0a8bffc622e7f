"""How many channels are "sparse amenable" (the paper's Figure 2 statistic), per layer.

The reference notes do not restate the paper's exact definition, so this module fixes one, relative
to the layer so that layers of different size and sparsity compare:

- by UMM: output channel c of layer l is amenable at threshold v when
  UMM(c) ≤ v · mean over the layer's alive channels of UMM;
- by WS (weight sparsity): when the channel's density (its fraction of non-zero weights,
  1 − WS) ≤ v · the mean channel density of the layer.

At v = 0 both count exactly the channels that are entirely zero. Fractions are over the layer's
alive output channels (channels already removed by Chase are not counted). The totals pool every
layer's channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

THRESHOLDS = (0.0, 0.2, 0.3, 0.4)


def amenable_fractions(
    names: Sequence[str],
    weights: Sequence[Tensor],
    alive_rows: Sequence[Tensor | None],
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict:
    """``{"thresholds", "umm": {layer: [f(v)...]}, "ws": {...}, "umm_total", "ws_total"}``.

    ``alive_rows[l]`` is the bool keep vector over layer l's output channels, or None if all alive.
    One device sync for the whole model.
    """
    v = torch.tensor(thresholds, dtype=torch.float64)
    rows_umm, rows_ws, counts = [], [], []
    for w, keep in zip(weights, alive_rows, strict=True):
        flat = w.detach().flatten(1)
        umm = flat.abs().sum(1, dtype=torch.float64) / flat.shape[1]
        dens = (flat != 0).sum(1).double() / flat.shape[1]
        if keep is not None:
            umm, dens = umm[keep], dens[keep]
        rows_umm.append(_counts_below(umm, v.to(umm.device)))
        rows_ws.append(_counts_below(dens, v.to(dens.device)))
        counts.append(torch.tensor(float(umm.numel()), dtype=torch.float64, device=umm.device))
    if not names:
        return {
            "thresholds": list(thresholds),
            "umm": {},
            "ws": {},
            "umm_total": [],
            "ws_total": [],
        }
    umm_c = torch.stack(rows_umm).cpu()
    ws_c = torch.stack(rows_ws).cpu()
    n = torch.stack(counts).cpu()
    frac_umm = (umm_c / n.clamp(min=1).unsqueeze(1)).tolist()
    frac_ws = (ws_c / n.clamp(min=1).unsqueeze(1)).tolist()
    total = n.sum().clamp(min=1)
    return {
        "thresholds": list(thresholds),
        "umm": dict(zip(names, frac_umm, strict=True)),
        "ws": dict(zip(names, frac_ws, strict=True)),
        "umm_total": (umm_c.sum(0) / total).tolist(),
        "ws_total": (ws_c.sum(0) / total).tolist(),
    }


def _counts_below(values: Tensor, thresholds: Tensor) -> Tensor:
    """Per threshold v: how many values are ≤ v · mean(values)."""
    if values.numel() == 0:
        return torch.zeros(thresholds.numel(), dtype=torch.float64, device=values.device)
    limit = thresholds * values.mean()
    return (values.unsqueeze(1) <= limit.unsqueeze(0)).sum(0).double()
