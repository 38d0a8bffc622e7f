"""When Chase acts and how much: pure functions of the optimizer step t (1-based).

Kept apart from the masks and the scores so each piece can be tested alone. Every function is
plain float/int arithmetic, so all DDP ranks agree without communicating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Timeline:
    """The step counts of one run: T = E·I steps, exploration phase A and channel pruning end at T_c."""

    steps_per_epoch: int
    epochs: int
    stop_epoch: int  # tau_stop, in epochs
    update_every: int  # ΔT_p
    channel_every: int  # ΔT

    @property
    def total(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def stop(self) -> int:
        """T_c = T_e = tau_stop · I: end of the soft-memory phase and of channel pruning."""
        return self.steps_per_epoch * self.stop_epoch

    def is_exploration(self, t: int) -> bool:
        """Every ΔT_p steps, but not on the very last step (its regrowth would never train)."""
        return t % self.update_every == 0 and t < self.total

    def in_phase_a(self, t: int) -> bool:
        return t < self.stop

    def is_channel_event(self, t: int) -> bool:
        """(t + ΔT/2) mod ΔT = 0 and t < T_c; ΔT/2 rounds down for odd ΔT."""
        return t < self.stop and (t + self.channel_every // 2) % self.channel_every == 0

    def last_channel_event(self) -> int | None:
        """The largest event step below T_c, or None when no event fits."""
        half = self.channel_every // 2
        t = self.channel_every * ((self.stop - 1 + half) // self.channel_every) - half
        return t if t >= 1 else None


def growth_extra(t: int, start: float, end: float, stop: int) -> float:
    """s_e(t): the soft-memory extra density, cosine-decayed from ``start`` to ``end`` at ``stop``."""
    if stop <= 0 or t >= stop:
        return end
    return end + (start - end) * (1.0 + math.cos(math.pi * t / stop)) / 2.0


def hard_prune_rate(t: int, total: int) -> float:
    """q(t) of phase B (after_stop: continue): cosine 0.5 → 0.005 over the whole run."""
    return 0.005 + 0.495 * (1.0 + math.cos(math.pi * min(t, total) / total)) / 2.0


def channel_target(t: int, final: float, stop: int, kind: str) -> float:
    """S(t): channel sparsity reached by step t, cubic (Eq. 3) or cosine ramp from 0 to ``final``."""
    if stop <= 0 or t >= stop:
        return final
    x = max(t, 0) / stop
    if kind == "cubic":
        return final * (1.0 - (1.0 - x) ** 3)
    if kind == "cosine":
        return final * (1.0 - math.cos(math.pi * x)) / 2.0
    raise ValueError(f"unknown channel schedule {kind!r}; valid: cubic, cosine")
