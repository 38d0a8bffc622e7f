"""Top-1 of ONNX models on a labelled dataset, run by ONNX Runtime on the CPU, in one pass.

``run`` (dense, slim and their int8 versions) and ``quantize`` (fp32 against int8) count here.
Every model sees the same batches; besides top-1, each model's agreement with the first (the
share of samples where both predict the same class) tells a quantized model's errors apart
from the reference's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    top1: list[float]  # per model, fraction 0..1
    agreement: list[float]  # per model, with the first model's predictions
    samples: int


def evaluate(
    models: Sequence[str | Path],
    batches: Iterable[tuple[object, object]],
    threads: int | None = None,
) -> Evaluation:
    """Run every model on every (inputs, labels) batch (torch tensors or arrays)."""
    sessions = [_session(m, threads) for m in models]
    correct = [0] * len(sessions)
    agree = [0] * len(sessions)
    total = 0
    for x, y in batches:
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
        predictions = [_predict(s, x) for s in sessions]
        for i, p in enumerate(predictions):
            correct[i] += int((p == y).sum())
            agree[i] += int((p == predictions[0]).sum())
        total += len(y)
    n = max(total, 1)
    return Evaluation([c / n for c in correct], [a / n for a in agree], total)


def _session(path: str | Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _predict(session, x: np.ndarray) -> np.ndarray:
    """Argmax of the first output; a model with a fixed batch size gets the batch in pieces."""
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    if fixed is None or fixed == len(x):
        return session.run(None, {inp.name: x})[0].argmax(1)
    out = []
    for start in range(0, len(x), fixed):
        piece = x[start : start + fixed]
        pad = fixed - len(piece)
        if pad:
            piece = np.concatenate([piece, np.zeros((pad, *x.shape[1:]), x.dtype)])
        out.append(session.run(None, {inp.name: piece})[0][: fixed - pad].argmax(1))
    return np.concatenate(out)
