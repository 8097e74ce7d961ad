"""Summary statistics for repeated timings (no numpy needed)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]), as numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """median, p90, mean, min, max and coefficient of variation (sample stdev / mean)."""
    if not values:
        raise ValueError("summarize of no values")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 90.0),
        "mean": mean,
        "min": min(values),
        "max": max(values),
        "cv": std / mean if mean > 0 else 0.0,
        "n": float(len(values)),
    }
