"""Statistics shared by the benchmarks."""

from __future__ import annotations

import math
import statistics

__all__ = ["paired_interval"]


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences with a two-sided 95% Student-t interval."""
    from scipy import stats

    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half
