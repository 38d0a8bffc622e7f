"""Top-1 accuracy: the one count behind every ``val_acc`` and every top-1 the tools report.

Training (every epoch), ``ablate`` (every one-shot cut) and ``run`` (dense.onnx and slim.onnx in
ONNX Runtime) count here; they differ only in how a batch of inputs becomes logits (``Predict``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

Predict = Callable[[Tensor], Tensor]  # a batch of inputs -> logits (batch, classes)


@torch.no_grad()
def count_correct(
    predicts: Sequence[Predict],
    batches: Iterable[tuple[Tensor, Tensor]],
    chunk: int | None = None,
) -> tuple[list[Tensor | int], int]:
    """Correct top-1 predictions of each model over ``batches``, and the number of samples.

    Every model sees the same batches in one pass over the data. The counts stay 0-d tensors on
    the logits' device, so a GPU is not synchronized once per batch. ``chunk`` runs each batch in
    pieces of that many samples: on the CPU a 1000-image batch of 28x28 maps allocates tens of MB
    per activation, which the allocator maps fresh every time (page faults cost twice the
    convolutions themselves); 128-image chunks reuse memory and run 2-3x faster.
    """
    correct: list[Tensor | int] = [0] * len(predicts)
    total = 0
    for x, y in batches:
        pieces = zip(x.split(chunk), y.split(chunk), strict=True) if chunk else [(x, y)]
        for xs, ys in pieces:
            for i, predict in enumerate(predicts):
                logits = predict(xs)
                correct[i] = correct[i] + (logits.argmax(1) == ys.to(logits.device)).sum()
            total += len(ys)
    return correct, total


def top1(
    predict: Predict, batches: Iterable[tuple[Tensor, Tensor]], chunk: int | None = None
) -> float:
    """The fraction of samples whose largest logit is the label."""
    (correct,), total = count_correct([predict], batches, chunk)
    return float(correct) / max(total, 1)
