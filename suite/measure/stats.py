"""Summary statistics of raw timing samples (the raw samples are always kept too)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100] (numpy's default method)."""
    if not samples:
        raise ValueError("no samples")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """p50, p90, mean and the standard error of the mean."""
    n = len(samples)
    mean = sum(samples) / n
    var = sum((x - mean) ** 2 for x in samples) / (n - 1) if n > 1 else 0.0
    return {
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "mean": mean,
        "sem": math.sqrt(var / n) if n > 1 else 0.0,
        "n": float(n),
    }


def relative_spread(samples: Sequence[float]) -> float:
    """(p90 - p10) / p50: how far repeated rounds of one measurement move, relative to their
    median. A difference between two medians smaller than this is not evidence of anything."""
    mid = percentile(samples, 50)
    return (percentile(samples, 90) - percentile(samples, 10)) / mid if mid > 0 else 0.0
