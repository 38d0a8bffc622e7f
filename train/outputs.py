"""What a classifier's forward returns, and the training loss over it.

Most models return one logits tensor. Some return more in training mode: torchvision's GoogLeNet
a ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``, Inception-v3 an
``InceptionOutputs(logits, aux_logits)``, other code a plain tuple or a dict. One rule covers
them all:

- the **main** output is the ``logits`` field or key where there is one, else the first element
  (a tuple, list or namedtuple) or the first value (a dict);
- the **auxiliary** outputs are the other entries that are tensors of the main output's shape
  (more class scores); anything else (features, ``None`` for a disabled head) is ignored.

Training minimizes ``CE(main) + w · Σ CE(aux)``, the weight ``w`` from ``train.aux_weight``;
left unset it is torchvision's reference value for the models known to have auxiliary heads
(GoogLeNet 0.3, the GoogLeNet paper's; Inception-v3 0.4) and 0.3 for any other model.
Evaluation, export and slim run the model in eval mode, where these models return the main
logits alone (and ``main_output`` takes them if a model still returns more).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from train.errors import BadInput

# Reference auxiliary-loss weights of the models known to have auxiliary classifiers.
KNOWN_AUX_WEIGHTS = {
    "torchvision:googlenet": 0.3,
    "torchvision:inception_v3": 0.4,
    "timm:inception_v3": 0.4,
}
DEFAULT_AUX_WEIGHT = 0.3


def split_outputs(out: Any) -> tuple[Tensor, list[Tensor]]:
    """(main, auxiliaries) of a forward's result (see the module docstring)."""
    if isinstance(out, Tensor):
        return out, []
    if isinstance(out, Mapping):
        entries = list(out.items())
    elif isinstance(out, (tuple, list)):
        fields = getattr(out, "_fields", None) or [None] * len(out)
        entries = list(zip(fields, out, strict=True))
    else:
        raise BadInput(
            f"the model's forward returned {type(out).__name__}; chase-deploy trains classifiers "
            f"whose forward returns logits (a tensor), or a tuple/namedtuple/dict holding them"
        )
    if not entries:
        raise BadInput("the model's forward returned an empty tuple or dict; expected logits")
    main_index = next((i for i, (k, _) in enumerate(entries) if k == "logits"), 0)
    main = entries[main_index][1]
    if not isinstance(main, Tensor):
        raise BadInput(
            f"the model's main output (the `logits` entry, else the first) is "
            f"{type(main).__name__}, not a tensor of logits"
        )
    aux = [
        v
        for i, (_, v) in enumerate(entries)
        if i != main_index and isinstance(v, Tensor) and v.shape == main.shape
    ]
    return main, aux


def main_output(out: Any) -> Tensor:
    """The main logits of a forward's result."""
    return split_outputs(out)[0]


def aux_weight(model_name: str, configured: float | None) -> float:
    """The recipe's ``train.aux_weight``, else the reference weight of a known model, else 0.3."""
    if configured is not None:
        return configured
    return KNOWN_AUX_WEIGHTS.get(model_name, DEFAULT_AUX_WEIGHT)


def classification_loss(
    out: Any,
    target: Tensor,
    label_smoothing: float,
    weight: float,
    main_loss: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, int]:
    """Cross-entropy of the main output (or ``main_loss`` of it, e.g. distillation) plus
    ``weight`` times the cross-entropy of every auxiliary output; also returns how many
    auxiliary outputs there were."""
    main, aux = split_outputs(out)
    if main_loss is None:
        loss = F.cross_entropy(main, target, label_smoothing=label_smoothing)
    else:
        loss = main_loss(main)
    for logits in aux:
        loss = loss + weight * F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    return loss, len(aux)
