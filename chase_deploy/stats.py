"""Latency statistics: the numbers `bench` reports and the checks that say when to distrust them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Run-to-run variation above this (coefficient of variation of the per-slice medians) gets a
# warning: speedups smaller than a few times this number are not measurable on such a machine.
UNSTABLE_CV = 0.05


def summarize(latencies_ms: Sequence[float]) -> dict[str, float]:
    """Median, mean, p90, p99 and min of per-iteration latencies (linear-interpolated percentiles)."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latencies to summarize")
    return {
        "median": float(np.median(x)),
        "mean": float(x.mean()),
        "p90": float(np.percentile(x, 90)),
        "p99": float(np.percentile(x, 99)),
        "min": float(x.min()),
    }


def throughput(batch: int, mean_ms: float) -> float:
    """Items per second from the mean latency of one batch: batch * 1000 / mean latency (ms)."""
    return batch * 1000.0 / mean_ms


def speedup(reference_median_ms: float, median_ms: float) -> float:
    """How many times faster than the reference: its median latency over this one's."""
    return reference_median_ms / median_ms


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over mean; 0 for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or x.mean() == 0:
        return 0.0
    return float(x.std(ddof=1) / x.mean())


def slice_variation(slices_ms: Sequence[Sequence[float]]) -> float:
    """Run-to-run variation: the CV of the medians of the interleaved slices of one model.

    Per-iteration CV mostly measures outliers (an interrupt, a page fault); comparing slices that
    were taken at different times shows whether the machine itself drifted during the run.
    """
    medians = [float(np.median(s)) for s in slices_ms if len(s)]
    return coefficient_of_variation(medians)
