"""Timed runs take their inputs in turn from several batches, so no run reads a warm input.

A timer that replays one input finds it in cache every time (an H100's or H200's 50 MB L2 holds a
batch of 32 ImageNet images in bf16), while real inference reads inputs it has not seen. Each timer
therefore makes ``rotation_count`` distinct random batches, together at least ``ROTATION_BYTES``
(more than twice those L2 caches), and feeds them in turn: by the time a batch comes round again,
more than the cache has been read since. The count is clamped to ``MIN_ROTATION`` ..
``MAX_ROTATION``; large batches (over 64 MiB each) rotate between two.

This keeps inputs cold; it does not flush the weights, which a server running one model back to
back also keeps in cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from chase_deploy.backends.base import InputSpec, random_inputs

ROTATION_BYTES = 128 << 20
MIN_ROTATION = 2
MAX_ROTATION = 64
DESCRIPTION = (
    "rotating: each timed run takes the next of several distinct random batches "
    "(128 MiB together, 2 to 64 of them), so no run reads a cached input"
)


def batch_bytes(inputs: Sequence[InputSpec], batch: int) -> int:
    """Bytes of one batch of host inputs."""
    return sum(
        int(np.prod(spec.at_batch(batch))) * np.dtype(spec.dtype).itemsize for spec in inputs
    )


def rotation_count(nbytes: int) -> int:
    """How many distinct batches of ``nbytes`` each make up the rotation."""
    wanted = math.ceil(ROTATION_BYTES / max(1, nbytes))
    return max(MIN_ROTATION, min(MAX_ROTATION, wanted))


def rotating_inputs(
    inputs: Sequence[InputSpec], batch: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """The rotation's batches: ``random_inputs`` with seeds ``seed``, ``seed + 1``, ..."""
    count = rotation_count(batch_bytes(inputs, batch))
    return [random_inputs(inputs, batch, seed=seed + i) for i in range(count)]
