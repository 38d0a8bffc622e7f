"""Bool masks over Conv/Linear weights: which layers are masked, drawing them, re-applying them.

Masks are bool (1 byte per weight). After every optimizer step the weights and every optimizer
state tensor of the same shape (SGD momentum, Adam moments) are multiplied by their masks in two
fused multi-tensor ops. Gradients are never masked: growth reads the dense gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from train.errors import BadInput

MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def maskable_modules(model: nn.Module, dense_layers: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Every Conv/Linear module (in ``named_modules`` order) except those named in ``dense_layers``."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, MASKABLE)}
    unknown = [n for n in dense_layers if n not in found]
    if unknown:
        some = ", ".join(list(found)[:6])
        raise BadInput(
            f"recipe key chase.dense_layers: {unknown[0]!r} is not a Conv/Linear module of the model; "
            f"use module names such as {some}"
        )
    return {name: m for name, m in found.items() if name not in set(dense_layers)}


def random_mask(shape: Sequence[int], count: int, generator: torch.Generator) -> Tensor:
    """A CPU bool mask with exactly ``count`` True positions drawn uniformly without replacement."""
    n = math.prod(shape)
    flat = torch.zeros(n, dtype=torch.bool)
    if count >= n:
        flat.fill_(True)
    elif count > 0:
        flat[torch.randperm(n, generator=generator)[:count]] = True
    return flat.view(*shape)


def state_tensors(optimizer: torch.optim.Optimizer | None, param: Tensor) -> list[Tensor]:
    """Optimizer state tensors shaped like ``param`` (momentum buffer, Adam moments, ...)."""
    if optimizer is None:
        return []
    state = optimizer.state.get(param)
    if not state:
        return []
    return [v for v in state.values() if isinstance(v, Tensor) and v.shape == param.shape]


@torch.no_grad()
def apply_masks(
    params: Sequence[Tensor], masks: Sequence[Tensor], optimizer: torch.optim.Optimizer | None
) -> None:
    """Zero the masked positions of the parameters and of their optimizer state, fused."""
    if not params:
        return
    # A uint8 view of a bool mask is free and multiplies about twice as fast on the CPU (the bool
    # operand takes a slower dynamic-casting path).
    factors = [m.view(torch.uint8) for m in masks]
    torch._foreach_mul_(list(params), factors)
    states, state_masks = [], []
    for p, f in zip(params, factors, strict=True):
        for s in state_tensors(optimizer, p):
            states.append(s)
            state_masks.append(f)
    if states:
        torch._foreach_mul_(states, state_masks)


def count_active(masks: Sequence[Tensor]) -> list[int]:
    """Active positions per mask, with one device sync for all of them."""
    if not masks:
        return []
    return torch.stack([m.sum() for m in masks]).tolist()


_P = 2_147_483_647  # 2^31 - 1
_MULT = 2_654_435_761


def checksum(masks: Sequence[Tensor]) -> Tensor:
    """An int64 fingerprint of a list of bool masks, sensitive to every position (for DDP checks)."""
    total = torch.zeros((), dtype=torch.int64, device=masks[0].device if masks else "cpu")
    for i, m in enumerate(masks):
        idx = m.flatten().nonzero().squeeze(1)
        total += ((idx * _MULT + (i + 1) * 1_000_003) % _P).sum()
    return total
