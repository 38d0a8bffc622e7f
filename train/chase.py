"""The Chase controller: masks, parameter exploration and gradual channel pruning in one object.

It ties the pieces together and owns the state; the pieces live in their own modules:
``density`` (how many weights per layer), ``masks`` (drawing and re-applying masks), ``schedules``
(when and how much), ``exploration`` (which weights), ``channel_scores`` and ``channel_selection``
(which channels), ``amenable`` (the Figure 2 statistic). Usage, per optimizer step t (1-based)::

    loss.backward()                      # (scaler.unscale_(optimizer) under fp16)
    chase.before_step(t)                 # keeps |grad| when an exploration is due, else free
    optimizer.step()
    events = chase.after_step(t)         # re-mask; channel event / exploration when due

Choices beyond the paper (``docs/algorithm.md`` describes the algorithm as implemented):

- Budget B = round(d·N); the initial masks hold exactly B weights.
- On an AMP-skipped step (``skipped=True``) nothing but the re-mask happens; an event that was due
  runs on the next real step with the schedule values of the step it was due at.
- The last channel event before T_c targets S_c itself (the paper's Eq. 3 ends at S_f; the
  released code's half-period offset would stop just short of it).
- Phase B prunes max(ceil(q·nnz), nnz − B), so nnz ≤ B after every prune; no exploration runs on
  the very last step of training (its regrown weights would never train). Density 1 disables
  exploration (channel pruning only). ``after_stop: freeze`` runs one last update at the first
  exploration step after tau_stop that prunes the soft-memory surplus and regrows what channel
  pruning freed, so the frozen topology holds exactly B weights.
- Budget capped: channel pruning can leave fewer positions inside the alive channels than B
  (concatenating networks such as SqueezeNet, DenseNet, VoVNet at density 0.3 and S_c 0.4: a
  3x3 expand loses rows and columns at once). Explorations then fill every alive position and
  phase B exchanges nothing (q = 0: the only free positions would be the pruned ones); the
  first channel event that drops the capacity below B adds one ``budget_capped`` event
  ``{"step", "budget", "capacity"}``. While the capacity holds B, every exploration ends at B.
- ``scope: layerwise``: layer l keeps a budget b_l = its initial count (capped by the positions
  left in its alive channels, the excess shared out in proportion to the initial counts); phase A
  prunes each layer to b_l and grows the soft-memory extra in the same proportions.
- SET and RigL are this controller with ``explore_until: 0`` (every exploration a hard-budget
  one), ``scope: layerwise``, ``drop_fraction: 0.3`` and ``drop_until: 0.75``: phase B drops
  ceil(q(t)·n_l) with q(t) = q0·(1 + cos(π·t/T_end))/2 and regrows as many, by |grad| (RigL) or
  at random (``growth: random``, SET; uniform over the free positions inside alive channels, from
  the controller's own seeded generator). From T_end = drop_until·T on, the first exploration
  step restores the budget with q = 0 and the topology is frozen, as with ``after_stop: freeze``.
- Channel events fire at (t + offset) mod ΔT = 0, offset ΔT_p/2 by default (the released code);
  ``channel_offset: 0`` gives the paper's plain "every ΔT steps".
- Channel pruning ends at T_c = ``channel_until`` epochs (default tau_stop), so SET/RigL
  (``explore_until: 0``) run beside gradual channel pruning (the paper's Table 7). A channel
  event on a frozen topology (past ``drop_until``, or ``after_stop: freeze``) thaws it for one
  exploration step with q = 0, which regrows the weights the event freed back to B.
- Each channel's UMM and WS at mask initialization are kept (and checkpointed) for the paper's
  amenable statistic (``amenable_stats``).
- ``from_weights=True`` (a model started from trained weights, ``model.weights``): the initial
  masks keep each layer's largest-|w| positions under its count (``train.magnitude``) instead of
  a random draw; the amenable statistic's initial values are taken after this masking.
- ``chase.shrink`` (``train.shrink``): the model may be physically smaller than the network the
  controller reasons about. Masks, alive channels, budgets and every score stay in the original
  shapes and indices; after the model's tensors were replaced, ``rebind(view)`` re-reads them, and
  the view inflates weights and gradients to the original shapes at events and cuts the masks to
  the model's shapes for the per-step re-mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from train import channel_axes, exploration
from train.amenable import amenable_fractions, channel_umm_ws
from train.channel_layout import ChannelLayout
from train.channel_scores import GroupStats
from train.channel_selection import Pool
from train.config import ChaseConfig
from train.density import apportion, budget, layer_counts, round_half_up
from train.errors import BadInput
from train.groups import ChannelGroup, ChannelMap
from train.magnitude import magnitude_masks
from train.masks import apply_masks, checksum, count_active, maskable_modules, random_mask
from train.plan import ChannelPlan, plan_from_groups
from train.saliency import SALIENCY_INITS, saliency_counts
from train.schedules import Timeline, channel_target, drop_rate, growth_extra, hard_prune_rate

STATE_VERSION = 2
_MASK_STREAM = 1
_CHANNEL_STREAM = 2
_GROWTH_STREAM = 3


class Chase:
    """Channel-aware dynamic sparse training of ``model`` (already on its device).

    ``groups`` are the prunable channel groups (``train.groups``), read from the model's graph by
    ``chase_deploy.graph.analysis.derive_groups``; empty for unstructured Chase."""

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        cfg: ChaseConfig,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        steps_per_epoch: int,
        epochs: int,
        explore_until: int | None = None,
        channel_until: int | None = None,
        seed: int = 0,
        from_weights: bool = False,
        init_data: Iterable[tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError("steps_per_epoch and epochs must be positive")
        self.cfg = cfg
        self.optimizer = optimizer
        self._modules = dict(model.named_modules())
        self._params_by_name = dict(model.named_parameters())
        self._view: ShapeView | None = None  # set by rebind() once the model shrank
        self._live_masks: list[Tensor] | None = None  # masks cut to the model's shapes
        stop = explore_until if explore_until is not None else cfg.explore_until
        if stop is None:
            stop = epochs - 30 if epochs > 40 else max(1, math.ceil(0.75 * epochs))
        channel_stop = channel_until if channel_until is not None else cfg.channel_until
        self.timeline = Timeline(
            steps_per_epoch,
            epochs,
            stop,
            cfg.update_every,
            cfg.channel_every,
            channel_offset=cfg.channel_offset,
            drop_until=cfg.drop_until,
            channel_stop_epoch=channel_stop,
        )

        layers = maskable_modules(model, cfg.dense_layers)
        self.layer_names = list(layers)
        self.param_names = [f"{name}.weight" for name in layers]
        self._params = [m.weight for m in layers.values()]
        self._index = {name: i for i, name in enumerate(self.param_names)}
        shapes = [tuple(p.shape) for p in self._params]
        self._shapes = shapes  # original shapes, whatever the model's are
        self.total = sum(p.numel() for p in self._params)
        self.budget = budget(cfg.density, self.total)
        self._base_counts = self._initial_counts(model, init_data)
        g = torch.Generator().manual_seed(_stream(seed, _MASK_STREAM))
        self._masks = (
            magnitude_masks(self._params, self._base_counts)
            if from_weights
            else [
                random_mask(s, c, g).to(p.device)
                for s, c, p in zip(shapes, self._base_counts, self._params, strict=True)
            ]
        )

        self._groups = self._resolve_groups(groups)
        self._pool = Pool.of(self._groups, cfg.channel_sparsity, cfg.beta, cfg.round_to)
        self._layout = ChannelLayout(self._modules, self._groups)
        self.alive = [
            torch.ones(gr.width, dtype=torch.bool, device=self._device) for gr in self._groups
        ]
        self._widths = [gr.width for gr in self._groups]
        self.channels_total = sum(self._widths)
        self._row_group = self._group_rows()
        self._extra: dict[str, Tensor] = {}  # bias masks and dense layers' channel masks
        self._rng = torch.Generator().manual_seed(_stream(seed, _CHANNEL_STREAM))
        self._grow_rng = torch.Generator().manual_seed(_stream(seed, _GROWTH_STREAM))
        self._check_feasible()
        self._capped = False  # the alive channels hold fewer positions than B (reported once)

        self.step = 0
        self._frozen = False  # after_stop: freeze, once the last prune back to B has run
        self._pending_channels: int | None = None
        self._pending_explore: int | None = None
        self._grad_abs: list[Tensor] | None = None
        self._remask()
        # Every output channel's (UMM, WS) at mask initialization: the reference of the paper's
        # amenable statistic (``train.amenable``); part of the state so a resumed run keeps it.
        self._initial = [channel_umm_ws(p) for p in self._params]

    # ------------------------------------------------------------------------------------------
    # The per-step interface

    def before_step(self, t: int) -> None:
        """On steps where an exploration will run, keep |grad| (DDP-averaged, unscaled, unclipped)."""
        if self.cfg.growth != "gradient":
            return
        if self._pending_explore is None and not self._exploration_due(t):
            return
        self._grad_abs = self._dense_grad_abs()

    def after_step(self, t: int, skipped: bool = False) -> list[dict]:
        """Re-mask weights and optimizer state; run the channel event / exploration due at t."""
        self._remask()
        if self.cfg.channel_sparsity > 0 and self.timeline.is_channel_event(t):
            self._pending_channels = t
        if self._exploration_due(t):
            self._pending_explore = t
        events: list[dict] = []
        if not skipped:
            if self._pending_channels is not None:
                events.append(self._channel_event(self._pending_channels, t))
                events.extend(self._budget_capped(self._pending_channels))
                self._pending_channels = None
            if self._pending_explore is not None:
                events.append(self._exploration(self._pending_explore, t))
                self._pending_explore = None
            self._grad_abs = None
        self.step = t
        return events

    # ------------------------------------------------------------------------------------------
    # Metrics and outputs

    @property
    def masks(self) -> dict[str, Tensor]:
        """Parameter name → bool mask of every budgeted (sparse) weight."""
        return dict(zip(self.param_names, self._masks, strict=True))

    def nnz(self) -> int:
        return sum(count_active(self._masks))

    def epoch_metrics(self) -> dict[str, float]:
        removed = self.channels_total - sum(self._widths)
        return {
            "density": self.nnz() / self.total if self.total else 1.0,
            "channel_sparsity": removed / self.channels_total if self.channels_total else 0.0,
        }

    def widths(self) -> dict[str, int]:
        """Alive channels per prunable group."""
        return {gr.name: w for gr, w in zip(self._groups, self._widths, strict=True)}

    def amenable_stats(self) -> dict:
        """Per-layer fractions of sparse-amenable channels, each channel against its own UMM and
        WS at mask initialization (the paper's Figure 2; see ``train.amenable``)."""
        rows = [
            row[1].spread(self.alive[row[0]])
            if row is not None and self._widths[row[0]] < self._groups[row[0]].width
            else None
            for row in self._row_group
        ]
        return amenable_fractions(self.layer_names, self._weights(), self._initial, rows)

    def alive_weights(self, shapes: dict[str, Sequence[int]]) -> dict[str, int]:
        """Weights alive in each Conv/Linear module of ``shapes`` (name → original weight shape):
        its mask's count where it is masked, else its positions inside alive channels (the
        training FLOPs count, ``train.training_flops``)."""
        masked = dict(zip(self.layer_names, count_active(self._masks), strict=True))
        return {
            name: masked[name]
            if name in masked
            else self._layout.capacity(f"{name}.weight", shape, self._widths)
            for name, shape in shapes.items()
        }

    def alive_channels(self) -> dict[str, Tensor]:
        """Group name -> bool keep vector over its original channels."""
        return {gr.name: a for gr, a in zip(self._groups, self.alive, strict=True)}

    def channel_plan(self) -> ChannelPlan:
        """Kept output channels of every producer that lost some (``docs/file-formats.md``)."""
        return plan_from_groups(self._groups, self.alive)

    # ------------------------------------------------------------------------------------------
    # State

    def state_dict(self) -> dict:
        """Everything needed to continue exactly; plain tensors, ints and dicts only."""
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "total": self.total,
            "budget": self.budget,
            "masks": {n: m.detach().clone() for n, m in self.masks.items()},
            "alive": {gr.name: a.clone() for gr, a in zip(self._groups, self.alive, strict=True)},
            "extra_masks": {n: m.clone() for n, m in self._extra.items()},
            "rng": self._rng.get_state(),
            "grow_rng": self._grow_rng.get_state(),
            "amenable_init": {
                n: {"umm": umm.detach().clone(), "ws": ws.detach().clone()}
                for n, (umm, ws) in zip(self.param_names, self._initial, strict=True)
            },
            "pending_channels": self._pending_channels,
            "pending_explore": self._pending_explore,
            "frozen": self._frozen,
            "base_counts": list(self._base_counts),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict``; refuses state saved for another model or budget."""
        self._check_state(state)
        with torch.no_grad():
            for m, name in zip(self._masks, self.param_names, strict=True):
                m.copy_(state["masks"][name])
            for a, gr in zip(self.alive, self._groups, strict=True):
                a.copy_(state["alive"][gr.name])
        self._widths = count_active(self.alive)
        self._capped = self._capacity_below_budget()
        self._extra = {
            n: m.to(device=self._params_by_name[n].device, dtype=torch.bool).clone()
            for n, m in state["extra_masks"].items()
        }
        self._live_masks = None
        self._rng.set_state(state["rng"].cpu())
        self._grow_rng.set_state(state["grow_rng"].cpu())
        self._initial = [
            (
                state["amenable_init"][n]["umm"].to(self._device, torch.float64).clone(),
                state["amenable_init"][n]["ws"].to(self._device, torch.float64).clone(),
            )
            for n in self.param_names
        ]
        self.step = int(state["step"])
        self._pending_channels = state["pending_channels"]
        self._pending_explore = state["pending_explore"]
        self._frozen = bool(state["frozen"])
        if "base_counts" in state:  # the initial counts (saliency ones are data-dependent)
            self._base_counts = [int(c) for c in state["base_counts"]]
        self._grad_abs = None
        self._remask()

    def _check_state(self, state: dict) -> None:
        def bad(why: str) -> BadInput:
            return BadInput(
                f"chase state does not fit this run ({why}); resume with the recipe it was saved with"
            )

        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise bad(
                f"state version {state.get('version') if isinstance(state, dict) else None!r}"
            )
        if state["total"] != self.total or state["budget"] != self.budget:
            raise bad(f"budget {state['budget']}/{state['total']} vs {self.budget}/{self.total}")
        if set(state["masks"]) != set(self.param_names) or set(state["amenable_init"]) != set(
            self.param_names
        ):
            raise bad("masked layers differ")
        for name, m in zip(self.param_names, self._masks, strict=True):
            if tuple(state["masks"][name].shape) != tuple(m.shape):
                raise bad(f"mask {name} has shape {tuple(state['masks'][name].shape)}")
            if any(
                tuple(state["amenable_init"][name][k].shape) != (m.shape[0],) for k in ("umm", "ws")
            ):
                raise bad(f"initial channel scores of {name} have the wrong length")
        if [len(state["alive"].get(gr.name, ())) for gr in self._groups] != [
            gr.width for gr in self._groups
        ]:
            raise bad("channel groups differ")
        if len(state.get("base_counts", self.param_names)) != len(self.param_names):
            raise bad("initial counts of another set of layers")
        unknown = [n for n in state["extra_masks"] if n not in self._params_by_name]
        if unknown:
            raise bad(f"unknown parameter {unknown[0]}")

    # ------------------------------------------------------------------------------------------
    # Parameter exploration

    def _exploration_due(self, t: int) -> bool:
        if self.cfg.density >= 1.0 or not self.timeline.is_exploration(t):
            return False
        return self.timeline.in_phase_a(t) or not self._frozen

    def _exploration(self, t: int, now: int) -> dict:
        """Prune by |w| then grow by |grad| (phase A: to the soft-memory target; B: back to B)."""
        nnz = count_active(self._masks)
        caps = self._capacities()
        phase_a = self.timeline.in_phase_a(t)
        budgets = apportion(self.budget, self._base_counts, caps)
        if phase_a:
            extra = growth_extra(
                t, self.cfg.growth_extra, self.cfg.growth_extra_end, self.timeline.stop
            )
            target = min(round_half_up(self.total * (self.cfg.density + extra)), sum(caps))
            drop = [max(0, n - b) for n, b in zip(nnz, budgets, strict=True)]
            total_drop = max(0, sum(nnz) - self.budget)
        else:
            # freeze, or past drop_until: one last update back to exactly B (no extra exchange),
            # then a fixed topology.
            freeze = self.cfg.after_stop == "freeze" or t >= self.timeline.drop_end
            if freeze:
                q = 0.0
            elif self.cfg.drop_fraction is None:
                q = hard_prune_rate(t, self.timeline.total)
            else:
                q = drop_rate(t, self.cfg.drop_fraction, self.timeline.drop_end)
            if sum(caps) <= self.budget:
                # Every position left in the alive channels is active (budget capped): the
                # only free positions after a prune would be the pruned ones, regrown at zero.
                q = 0.0
            self._frozen = freeze
            target = min(self.budget, sum(caps))
            drop = [max(math.ceil(q * n), n - b) for n, b in zip(nnz, budgets, strict=True)]
            total_drop = max(math.ceil(q * sum(nnz)), sum(nnz) - self.budget)

        weights = self._weights()
        if self.cfg.scope == "global":
            pruned = exploration.prune_global(weights, self._masks, total_drop)
        else:
            pruned = exploration.prune_layerwise(weights, self._masks, drop)
        self._set_masks(pruned)
        self._remask()  # pruned weights and their momentum are zero before anything regrows
        kept = count_active(self._masks)

        grads = self._growth_scores()
        allowed = self._allowed()
        if self.cfg.scope == "global":
            k = max(0, target - sum(kept))
            grown = exploration.grow_global(grads, self._masks, allowed, k)
        else:
            free = [c - b for c, b in zip(caps, budgets, strict=True)]
            extra_share = apportion(max(0, target - sum(budgets)), self._base_counts, free)
            goal = [b + e for b, e in zip(budgets, extra_share, strict=True)]
            grown = exploration.grow_layerwise(
                grads,
                self._masks,
                allowed,
                [max(0, g - n) for g, n in zip(goal, kept, strict=True)],
            )
        self._set_masks(grown)
        after = sum(count_active(self._masks))
        self._agree("exploration", now)
        event = {
            "event": "exploration",
            "step": t,
            "phase": "A" if phase_a else "B",
            "pruned": sum(nnz) - sum(kept),
            "grown": after - sum(kept),
            "nnz": after,
            "budget": self.budget,
        }
        if not phase_a:
            event["drop_rate"] = q
        return event

    def _growth_scores(self) -> list[Tensor]:
        """What growth ranks: |grad| (RigL, Chase), or uniform random numbers (SET) drawn from the
        controller's own seeded generator, so every rank grows the same positions."""
        if self.cfg.growth == "random":
            return [
                torch.rand(s, generator=self._grow_rng).to(p.device)
                for s, p in zip(self._shapes, self._params, strict=True)
            ]
        return self._grad_abs if self._grad_abs is not None else self._current_grad_abs()

    def _current_grad_abs(self) -> list[Tensor]:
        # Fallback when before_step was not called: global-norm clipping scales every gradient by
        # one factor, so the ranking by |grad| is the same.
        return self._dense_grad_abs()

    def _set_masks(self, new: Sequence[Tensor]) -> None:
        with torch.no_grad():
            for m, n in zip(self._masks, new, strict=True):
                m.copy_(n)
        self._live_masks = None

    def _capacities(self) -> list[int]:
        """Positions of each masked layer inside alive channels (Python ints, no device sync)."""
        return [
            self._layout.capacity(name, shape, self._widths)
            for name, shape in zip(self.param_names, self._shapes, strict=True)
        ]

    def _allowed(self) -> list[Tensor | None]:
        """Broadcastable bool 'inside alive channels' per masked layer, None where all are alive."""
        return [
            self._layout.allowed(name, shape, self.alive, self._widths)
            for name, shape in zip(self.param_names, self._shapes, strict=True)
        ]

    # ------------------------------------------------------------------------------------------
    # Channel pruning

    def _channel_event(self, t: int, now: int) -> dict:
        """Remove the lowest-scoring alive channels down to the schedule's target at step t."""
        cfg = self.cfg
        if t == self.timeline.last_channel_event():
            target = cfg.channel_sparsity
        else:
            target = channel_target(
                t, cfg.channel_sparsity, self.timeline.channel_stop, cfg.channel_schedule
            )
        count = self._pool.count(sum(self._widths), target)
        removed = self._remove_channels(count) if count > 0 else 0
        if removed and self._frozen:
            self._frozen = False  # the next exploration step regrows the freed budget, q = 0
        self._agree("channel event", now)
        return {
            "event": "channels",
            "step": t,
            "removed": removed,
            "target_sparsity": target,
            "channel_sparsity": 1.0 - sum(self._widths) / self.channels_total,
            "widths": self.widths(),
        }

    def _capacity_below_budget(self) -> bool:
        return self.cfg.density < 1.0 and sum(self._capacities()) < self.budget

    def _budget_capped(self, t: int) -> list[dict]:
        """The first time the alive channels cannot hold the budget B: one ``budget_capped``
        event. Explorations then keep every alive position active (nnz = capacity < B)."""
        if self._capped or not self._capacity_below_budget():
            return []
        self._capped = True
        capacity = sum(self._capacities())
        return [{"event": "budget_capped", "step": t, "budget": self.budget, "capacity": capacity}]

    def _remove_channels(self, count: int) -> int:
        dead_per_group = self._pool.select(self._channel_keys(), self.alive, count, self._widths)
        lost = count_active(dead_per_group)
        for gi, (d, n) in enumerate(zip(dead_per_group, lost, strict=True)):
            if n:
                self.alive[gi] &= ~d
                self._widths[gi] -= n
                self._kill(gi)
        self._remask()
        return sum(lost)

    def _channel_keys(self) -> Tensor:
        """Prune-order keys for every channel of every group (alive or not), group-major."""
        stats = GroupStats.of(
            [
                [
                    channel_axes.producer_rows(
                        self._modules[m.name], m, gr.width, self._dense(f"{m.name}.weight")
                    )
                    for m in gr.role("producer")
                ]
                for gr in self._groups
            ]
        )
        return stats.keys(self.cfg.criterion, self._rng)

    def _kill(self, group: int) -> None:
        """Mask every entry the group's dead channels occupy (``train.channel_layout``)."""
        with torch.no_grad():
            for name in self._layout.params_of(group):
                mask = self._mask(name)
                allowed = self._layout.allowed(name, mask.shape, self.alive, self._widths)
                if allowed is not None:
                    mask &= allowed
        self._live_masks = None

    def _mask(self, name: str) -> Tensor:
        """The mask of a parameter: its sparse mask, or a channel-only mask for dense ones."""
        if name in self._index:
            return self._masks[self._index[name]]
        param = self._params_by_name[name]
        shape = self._view.shape(name) if self._view is not None else param.shape
        return self._extra.setdefault(
            name, torch.ones(shape, dtype=torch.bool, device=param.device)
        )

    # ------------------------------------------------------------------------------------------
    # Plumbing

    @property
    def _device(self) -> torch.device:
        return self._params[0].device if self._params else torch.device("cpu")

    def _remask(self) -> None:
        params = self._params + [self._params_by_name[n] for n in self._extra]
        masks = self._masks + list(self._extra.values())
        if self._view is not None:
            if self._live_masks is None:  # the masks or the model's shapes changed
                names = self.param_names + list(self._extra)
                self._live_masks = [self._view.cut(n, m) for n, m in zip(names, masks, strict=True)]
            masks = self._live_masks
        apply_masks(params, masks, self.optimizer)

    # ------------------------------------------------------------------------------------------
    # A physically smaller model (``chase.shrink``, ``train.shrink``)

    def rebind(self, view: ShapeView | None) -> None:
        """The model's parameters were replaced by smaller ones: re-read them. ``view`` maps
        tensors between the original shapes (the controller's) and the model's."""
        self._view = view
        root = self._modules[""]
        self._params_by_name = dict(root.named_parameters())
        self._params = [self._modules[n].weight for n in self.layer_names]
        self._live_masks = None
        self._grad_abs = None
        self._remask()

    def _dense(self, name: str, tensor: Tensor | None = None) -> Tensor:
        """Parameter ``name`` (or ``tensor`` shaped like it) in its original shape."""
        value = self._params_by_name[name].detach() if tensor is None else tensor
        return value if self._view is None else self._view.inflate(name, value)

    def _weights(self) -> list[Tensor]:
        """The masked layers' weights in their original shapes."""
        return [
            self._dense(n, p.detach()) for n, p in zip(self.param_names, self._params, strict=True)
        ]

    def _dense_grad_abs(self) -> list[Tensor]:
        """|grad| of the masked layers in their original shapes (removed entries 0)."""
        return [
            self._dense(n, p.grad.detach().abs())
            if p.grad is not None
            else torch.zeros(s, dtype=p.dtype, device=p.device)
            for n, p, s in zip(self.param_names, self._params, self._shapes, strict=True)
        ]

    def _agree(self, what: str, step: int) -> None:
        """Under torch.distributed, fail loudly if ranks hold different masks after an event."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        local = checksum(self._masks + self.alive + list(self._extra.values()))
        both = torch.stack([local, -local])
        torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
        if int(both[0]) != -int(both[1]):
            raise RuntimeError(
                f"chase: DDP ranks hold different masks after the {what} at step {step} "
                f"(checksums range {-int(both[1])}..{int(both[0])}); the runs have diverged"
            )

    def _initial_counts(
        self, model: nn.Module, init_data: Iterable[tuple[Tensor, Tensor]] | None
    ) -> list[int]:
        """Active weights per masked layer at init: ERK/ER/uniform shares, or the layers' counts
        in the global SNIP/GraSP ranking on ``init_data`` (``train.saliency``)."""
        if self.cfg.init not in SALIENCY_INITS or self.cfg.density >= 1.0:
            method = "uniform" if self.cfg.init in SALIENCY_INITS else self.cfg.init
            return layer_counts(self._shapes, self.cfg.density, method)
        if init_data is None:
            raise BadInput(
                f"recipe key chase.init: {self.cfg.init} scores weights on training batches; "
                f"pass init_data= (batches of inputs and labels) to Chase, or use chase.init: erk"
            )
        return saliency_counts(model, self.layer_names, self.cfg.init, init_data, self.budget)

    def _resolve_groups(self, groups: Sequence[ChannelGroup]) -> list[ChannelGroup]:
        """The groups channels are pruned from (none without channel sparsity)."""
        if self.cfg.channel_sparsity <= 0:
            return []
        seen: set[str] = set()
        for g in groups:
            for name in g.producers:
                if name in seen:
                    raise ValueError(f"channel group {g.name!r}: {name} produces two groups")
                seen.add(name)
        return list(groups)

    def _group_rows(self) -> list[tuple[int, ChannelMap] | None]:
        """The group whose producer each masked layer is, and where its rows hold the group's
        channels."""
        rows = {
            m.name: (gi, m.map) for gi, gr in enumerate(self._groups) for m in gr.role("producer")
        }
        return [rows.get(n) for n in self.layer_names]

    def _check_feasible(self) -> None:
        if self.cfg.channel_sparsity <= 0:
            return
        if not self._groups:
            raise BadInput(
                "recipe key chase.channel_sparsity: this model declares no prunable channel groups; "
                "set chase.channel_sparsity: 0"
            )
        if self.timeline.last_channel_event() is None:
            raise BadInput(
                f"recipe key chase.channel_every: no channel event fits before channel_until "
                f"({self.timeline.channel_stop} steps, events at (t + {self.timeline.offset}) mod "
                f"{self.cfg.channel_every} = 0); lower chase.channel_every or raise "
                f"chase.channel_until (default chase.explore_until)"
            )


class ShapeView(Protocol):
    """Maps tensors between the original shapes and a shrunk model's (``train.shrink.Shrinker``)."""

    def shape(self, name: str) -> tuple[int, ...]: ...

    def inflate(self, name: str, tensor: Tensor) -> Tensor: ...

    def cut(self, name: str, tensor: Tensor) -> Tensor: ...


def _stream(seed: int, stream: int) -> int:
    """Independent generator seeds per purpose, derived from the recipe seed (never the rank)."""
    return (seed * 1_000_003 + stream * 7_919) % (2**63 - 1)
