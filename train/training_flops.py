"""Training FLOPs as the RigL paper counts them (Evci et al. 2020, Appendix H; Chase's Table 4).

A Conv or Linear layer with c alive weights, each used at p output positions per sample, costs
2·c·p FLOPs (a multiply and an add) in the forward pass and as much again in each half of the
backward pass: the gradient of its input and the gradient of its weights. One training step on a
batch of b samples therefore costs b·(f_S + f_S + f_S) = 3·b·f_S, with f_S = Σ 2·c_l·p_l over the
layers' weights alive at that step (soft-memory extras and pruned channels included as they are).
A step whose exploration grows weights by gradient needs the dense weight gradient: b·(2·f_S + f_D),
f_D the dense network's forward. The dense equivalent is 3·b·f_D every step.

This is what a truly sparse implementation would spend. The simulation here computes dense
tensors throughout, so wall time does not follow these numbers. Counted: every Conv/Linear
weight (masked or not; a dense layer counts its positions inside alive channels). Not counted:
biases, norms, activations, pooling, the loss, the optimizer update and the one-shot SNIP/GraSP
scoring at init (a few batches).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from train.masks import MASKABLE


def layer_positions(
    model: nn.Module, sample_shape: Sequence[int], device: torch.device
) -> dict[str, int]:
    """Output positions per sample of every Conv/Linear module of ``model``: how many times each
    of its weights is used for one input of ``sample_shape`` (one eval-mode forward, no grad;
    nothing in the model changes)."""
    found: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, MASKABLE):
            hooks.append(module.register_forward_hook(_recorder(name, found)))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *sample_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return found


def _recorder(name: str, found: dict[str, int]):
    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        channels = output.shape[-1] if isinstance(module, nn.Linear) else output.shape[1]
        found[name] = output.numel() // max(1, channels)

    return hook


def forward_flops(weights: Mapping[str, int], positions: Mapping[str, int]) -> int:
    """Σ 2·c·p: one sample's forward FLOPs with c weights alive in each layer."""
    return sum(2 * weights[name] * positions.get(name, 0) for name in weights)


class TrainingFlops:
    """Cumulative sparse and dense-equivalent training FLOPs of a run, step by step.

    ``shapes`` are the layers' full weight shapes (the dense network); ``set_alive`` takes the
    counts alive now (call it whenever the masks or channels changed)."""

    @classmethod
    def of_model(
        cls, model: nn.Module, sample_shape: Sequence[int], device: torch.device
    ) -> TrainingFlops:
        """The counter for ``model`` as built (before any shrinking), inputs of ``sample_shape``."""
        shapes = {
            name: tuple(m.weight.shape)
            for name, m in model.named_modules()
            if isinstance(m, MASKABLE)
        }
        return cls(layer_positions(model, sample_shape, device), shapes)

    def __init__(
        self,
        positions: Mapping[str, int],
        shapes: Mapping[str, tuple[int, ...]],
    ) -> None:
        self.positions = dict(positions)
        self.shapes = dict(shapes)  # the dense network's weight shapes, by module name
        sizes = {name: math.prod(shape) for name, shape in shapes.items()}
        self.dense_forward = forward_flops(sizes, positions)
        self.sparse_forward = self.dense_forward
        self.total: int | None = 0
        self.total_dense: int | None = 0

    def set_alive(self, alive: Mapping[str, int]) -> None:
        self.sparse_forward = forward_flops(alive, self.positions)

    def step(self, samples: int, dense_grad: bool = False) -> None:
        """Count one optimizer step over ``samples`` inputs (all ranks together)."""
        if self.total is None or self.total_dense is None:
            return
        f_s, f_d = self.sparse_forward, self.dense_forward
        self.total += samples * (2 * f_s + (f_d if dense_grad else f_s))
        self.total_dense += samples * 3 * f_d

    def state_dict(self) -> dict[str, int | None]:
        return {"sparse": self.total, "dense": self.total_dense}

    def load_state_dict(self, state: Mapping[str, int | None] | None) -> None:
        """Continue the counts of a checkpoint; ``None`` (a checkpoint written before they were
        counted) leaves them unknown for the rest of the run."""
        if state is None:
            self.total = self.total_dense = None
            return
        self.total, self.total_dense = state["sparse"], state["dense"]

    def record(self) -> dict[str, int | None]:
        """The metrics.jsonl fields."""
        return {"train_flops": self.total, "train_flops_dense": self.total_dense}
