"""When Chase acts and how much: pure functions of the optimizer step t (1-based).

Kept apart from the masks and the scores so each piece can be tested alone. Every function is
plain float/int arithmetic, so all DDP ranks agree without communicating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Timeline:
    """The step counts of one run: T = E·I steps, exploration phase A ends at T_e = tau_stop·I and
    gradual channel pruning at T_c = channel_until·I (T_c = T_e unless the recipe parts them)."""

    steps_per_epoch: int
    epochs: int
    stop_epoch: int  # tau_stop, in epochs
    update_every: int  # ΔT_p
    channel_every: int  # ΔT
    channel_offset: int | None = None  # events at (t + offset) mod ΔT = 0; None = ΔT_p // 2
    drop_until: float | None = None  # fraction of training where hard-budget exchanges stop
    channel_stop_epoch: int | None = None  # channel_until, in epochs; None = stop_epoch

    @property
    def total(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def stop(self) -> int:
        """T_e = tau_stop · I: end of the soft-memory phase A."""
        return self.steps_per_epoch * self.stop_epoch

    @property
    def channel_stop(self) -> int:
        """T_c = channel_until · I: no channel event at or after it (default T_e)."""
        epoch = self.stop_epoch if self.channel_stop_epoch is None else self.channel_stop_epoch
        return self.steps_per_epoch * epoch

    def is_exploration(self, t: int) -> bool:
        """Every ΔT_p steps, but not on the very last step (its regrowth would never train)."""
        return t % self.update_every == 0 and t < self.total

    def in_phase_a(self, t: int) -> bool:
        return t < self.stop

    @property
    def offset(self) -> int:
        """The channel events' offset: ΔT_p/2 (rounded down) unless the recipe sets one."""
        return self.update_every // 2 if self.channel_offset is None else self.channel_offset

    @property
    def drop_end(self) -> int:
        """T_end: hard-budget exchanges run at t < T_end = floor(drop_until · T) (default T)."""
        if self.drop_until is None:
            return self.total
        return math.floor(self.drop_until * self.total + 1e-9)

    def is_channel_event(self, t: int) -> bool:
        """(t + offset) mod ΔT = 0 and t < T_c: half-way between explorations by default, as the
        released code has it ((t + ΔT_p/2) mod ΔT; it hard-codes 500 with ΔT_p = 1000)."""
        return t < self.channel_stop and (t + self.offset) % self.channel_every == 0

    def last_channel_event(self) -> int | None:
        """The largest event step below T_c, or None when no event fits."""
        off = self.offset
        t = self.channel_every * ((self.channel_stop - 1 + off) // self.channel_every) - off
        return t if t >= 1 else None


def growth_extra(t: int, start: float, end: float, stop: int) -> float:
    """s_e(t): the soft-memory extra density, cosine-decayed from ``start`` to ``end`` at ``stop``."""
    if stop <= 0 or t >= stop:
        return end
    return end + (start - end) * (1.0 + math.cos(math.pi * t / stop)) / 2.0


def hard_prune_rate(t: int, total: int) -> float:
    """q(t) of phase B (after_stop: continue): cosine 0.5 → 0.005 over the whole run."""
    return 0.005 + 0.495 * (1.0 + math.cos(math.pi * min(t, total) / total)) / 2.0


def drop_rate(t: int, start: float, end: int) -> float:
    """SET/RigL's drop fraction q(t) = q0 · (1 + cos(π·t/T_end)) / 2, 0 from T_end on."""
    if end <= 0 or t >= end:
        return 0.0
    return start * (1.0 + math.cos(math.pi * t / end)) / 2.0


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
