"""How many channels are "sparse amenable" (the paper's Section 2.2 / Figure 2 statistic), per layer.

Each output channel c of a masked layer is compared with *its own value at mask initialization*
(the controller records both when it draws the masks, and keeps them in its state):

- WS(c) = fraction of zeros in W[c] (the masked weight);
- UMM(c) = Σ|W[c]| / (original fan-in · kernel area), the channel scores of ``train.channel_scores``.

Channel c is amenable at ratio v

- by WS when  (WS_t(c) − WS_0(c)) / WS_0(c) > v   (it became sparser than it started),
- by UMM when (UMM_0(c) − UMM_t(c)) / UMM_0(c) > v (its magnitude shrank),

and amenable (the paper's "or") when either holds. Degenerate starts: a channel with WS_0 = 0
(a filter that was dense at initialization, e.g. in a layer ERK made dense) has no initial sparsity
to grow relative to, so WS never calls it amenable; it is judged by UMM alone. Likewise a channel
with UMM_0 = 0 (empty at initialization) is never amenable by UMM. Note that a relative increase of
WS is bounded: WS ≤ 1, so a layer that starts at sparsity s_0 can only reach v < (1 − s_0)/s_0 by
WS (about 0.11 at s_0 = 0.9); at high sparsity the WS columns are therefore mostly about v near 0.

Fractions are over the layer's alive output channels (channels Chase already removed are not
counted); the totals pool every layer's alive channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

THRESHOLDS = (0.0, 0.2, 0.3, 0.4)
KINDS = ("umm", "ws", "either")


def channel_umm_ws(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per output channel: (UMM, WS) of a (masked) weight, float64, fan = all entries of a row."""
    flat = weight.detach().flatten(1)
    fan = flat.shape[1]
    umm = flat.abs().sum(1, dtype=torch.float64) / fan
    ws = 1.0 - (flat != 0).sum(1).double() / fan
    return umm, ws


def amenable_masks(
    umm: Tensor, ws: Tensor, umm0: Tensor, ws0: Tensor, thresholds: Tensor
) -> dict[str, Tensor]:
    """Bool (channels x thresholds) per kind: amenable by UMM, by WS, by either."""
    v = thresholds.to(umm.device, torch.float64).unsqueeze(0)
    # x > v·x0 is (x − x0)/x0 > v without dividing; x0 = 0 never qualifies (see the module doc).
    by_ws = ((ws - ws0).unsqueeze(1) > v * ws0.unsqueeze(1)) & (ws0 > 0).unsqueeze(1)
    by_umm = ((umm0 - umm).unsqueeze(1) > v * umm0.unsqueeze(1)) & (umm0 > 0).unsqueeze(1)
    return {"umm": by_umm, "ws": by_ws, "either": by_umm | by_ws}


def amenable_fractions(
    names: Sequence[str],
    weights: Sequence[Tensor],
    initial: Sequence[tuple[Tensor, Tensor]],
    alive_rows: Sequence[Tensor | None],
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict:
    """``{"thresholds", "n_channels": {layer: alive channels}, "umm": {layer: [f(v)...]}, "ws",
    "either", "umm_total": [pooled f(v)...], "ws_total", "either_total"}``.

    ``initial[l]`` is layer l's (UMM_0, WS_0) per output channel, from ``channel_umm_ws`` at mask
    initialization; ``alive_rows[l]`` the bool keep vector over its output channels, or None if all
    are alive. One device sync for the whole model.
    """
    out: dict = {"thresholds": list(thresholds)}
    if not names:
        return {
            **out,
            "n_channels": {},
            **{k: {} for k in KINDS},
            **{f"{k}_total": [] for k in KINDS},
        }
    v = torch.tensor(thresholds, dtype=torch.float64)
    counts: dict[str, list[Tensor]] = {k: [] for k in KINDS}
    sizes = []
    for w, (umm0, ws0), keep in zip(weights, initial, alive_rows, strict=True):
        umm, ws = channel_umm_ws(w)
        if keep is not None:
            umm, ws, umm0, ws0 = umm[keep], ws[keep], umm0[keep], ws0[keep]
        for kind, mask in amenable_masks(umm, ws, umm0, ws0, v).items():
            counts[kind].append(mask.sum(0).double())
        sizes.append(torch.tensor(float(umm.numel()), dtype=torch.float64, device=umm.device))
    n = torch.stack(sizes).cpu()
    total = n.sum().clamp(min=1)
    out["n_channels"] = dict(zip(names, [int(x) for x in n.tolist()], strict=True))
    for kind in KINDS:
        c = torch.stack(counts[kind]).cpu()
        out[kind] = dict(zip(names, (c / n.clamp(min=1).unsqueeze(1)).tolist(), strict=True))
        out[f"{kind}_total"] = (c.sum(0) / total).tolist()
    return out
