"""Channel scores: the order in which Chase (during training) and ``chase-deploy ablate`` (once,
on final weights) remove a group's channels.

Per alive output channel c of a group, W = the producer's masked weight, fan = the original
fan-in times kernel area (so removed input columns still count as zeros):

- UMM = Σ|W[c]| / fan           (lowest goes first)
- WS  = fraction of zeros in W[c] (highest goes first)
- MMM = Σ|W[c]| / (non-zeros of W[c]), 0 for an empty channel (lowest goes first)
- random: uniform from the controller's seeded generator (same on every rank)
- slimming (Network Slimming, Liu et al. 2017; ``ablate`` only) = Σ|γ| of the norm layers that
  carry the channel (lowest goes first)
- ``*_reverse``: the opposite order (for the paper's Table 2 ablation).

A group with several producers (a residual stream with ``prune_skip``, a squeeze-excitation gate
and the channels it gates) writes one index space; its channel c is scored as if the producers'
rows c were one filter: Σ|W| and the zero count are summed over all producers and divided by the
summed fan (so a producer's weight counts in proportion to its size). A producer writing channel c
at several rows (a gate over a Ghost concatenation) has them side by side in its filter c
(``channel_axes.producer_rows``). Which channels go, given
the scores, is ``train.channel_selection``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from train.groups import ChannelGroup


def channel_stats(weights: Sequence[Tensor]) -> tuple[Tensor, Tensor, int]:
    """(Σ|W[c]|, non-zero count of W[c], fan) over the producers' rows c of one group."""
    abs_sum = sum(w.detach().abs().flatten(1).sum(1, dtype=torch.float64) for w in weights)
    nonzero = sum((w.detach() != 0).flatten(1).sum(1) for w in weights)
    fan = sum(w[0].numel() for w in weights)
    return abs_sum, nonzero, fan


def norm_scales(modules: Mapping[str, nn.Module], group: ChannelGroup) -> Tensor | None:
    """Σ|γ| per channel over the group's norm carriers (Network Slimming's score), None when no
    norm with a scale carries the group's channels."""
    norms = [
        m
        for m in group.carriers
        if m.kind == "norm" and getattr(modules[m.name], "weight", None) is not None
    ]
    if not norms:
        return None
    channels = torch.arange(group.width)
    total = torch.zeros(group.width, dtype=torch.float64)
    for member in norms:
        gamma = modules[member.name].weight.detach().abs().double().cpu()
        total += gamma[member.map.positions(channels, group.width)].view(group.width, -1).sum(1)
    return total


@dataclass(frozen=True)
class GroupStats:
    """``channel_stats`` of every channel of several groups, concatenated group-major, and the
    norm scales |γ| where the caller gives them (for the ``slimming`` criterion)."""

    abs_sum: Tensor  # float64
    nonzero: Tensor
    fan: Tensor  # float64, the group's fan repeated per channel
    group: Tensor  # long, the group index of each channel
    gamma: Tensor | None = None  # float64 Σ|γ| per channel; NaN where a group has no norm

    @classmethod
    def of(
        cls,
        producer_weights: Sequence[Sequence[Tensor]],
        norm_scales: Sequence[Tensor | None] | None = None,
    ) -> GroupStats:
        """Scores of each group given its producers' weights (rows = output channels) and,
        optionally, its ``norm_scales`` output."""
        sums, nonzeros, fans, ids = [], [], [], []
        for gi, weights in enumerate(producer_weights):
            abs_sum, nonzero, fan = channel_stats(weights)
            width, device = abs_sum.numel(), abs_sum.device
            sums.append(abs_sum)
            nonzeros.append(nonzero)
            fans.append(torch.full((width,), float(fan), dtype=torch.float64, device=device))
            ids.append(torch.full((width,), gi, dtype=torch.long, device=device))
        gamma = None
        if norm_scales is not None:
            gamma = torch.cat(
                [
                    g.to(sums[i].device)
                    if g is not None
                    else torch.full_like(sums[i], float("nan"))
                    for i, g in enumerate(norm_scales)
                ]
            )
        return cls(torch.cat(sums), torch.cat(nonzeros), torch.cat(fans), torch.cat(ids), gamma)

    def keys(self, criterion: str, generator: torch.Generator) -> Tensor:
        """Pruning order of every channel by ``criterion`` (ascending goes first)."""
        return prune_keys(self.abs_sum, self.nonzero, self.fan, criterion, generator, self.gamma)


def prune_keys(
    abs_sum: Tensor,
    nonzero: Tensor,
    fan: Tensor,
    criterion: str,
    generator: torch.Generator,
    gamma: Tensor | None = None,
) -> Tensor:
    """Per-channel keys where ascending order is pruning order (float64)."""
    if criterion.startswith("slimming"):
        if gamma is None or torch.isnan(gamma).any():
            raise ValueError(
                "the slimming criterion ranks channels by their norm layer's |gamma|: every "
                "group needs a norm with a scale after its producers"
            )
        return -gamma if criterion == "slimming_reverse" else gamma
    umm = abs_sum / fan
    ws = 1.0 - nonzero.double() / fan
    mmm = abs_sum / nonzero.clamp(min=1).double()
    keys = {
        "umm": umm,
        "ws": -ws,
        "mmm": mmm,
        "umm_reverse": -umm,
        "ws_reverse": ws,
        "mmm_reverse": -mmm,
    }
    if criterion == "random":
        return torch.rand(abs_sum.numel(), generator=generator, dtype=torch.float64).to(
            abs_sum.device
        )
    if criterion not in keys:
        raise ValueError(f"unknown channel criterion {criterion!r}")
    return keys[criterion]
