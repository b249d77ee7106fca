"""Percentile-bootstrap intervals for study tables (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
ch. 13): resample the values with replacement ``resamples`` times, take the mean of each resample, and report
the (1 − level)/2 and (1 + level)/2 quantiles of those means.

Used three ways: over the examples of one run (how much a forget metric's mean depends on which questions were
asked), over seeds (how much it depends on the run's randomness), and over the per-seed differences of two
methods run with the same seeds (a paired comparison: the interval of the mean difference, and of the ratio of
the two means, the seeds resampled together). Resampling is
seeded, so a table is reproducible. With n values there are at most C(2n − 1, n) distinct resamples: with 3
seeds only 10, so a seed interval from few seeds is coarse, and it never covers what n seeds did not show.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 4000


def bootstrap_interval(values: Sequence[float], *, level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap ``level`` interval of the mean of ``values`` (one value: that value twice)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    if data.size == 1:
        return float(data[0]), float(data[0])
    rows = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))
    means = data[rows].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_differences(first: dict[int, float], second: dict[int, float]) -> list[float]:
    """first − second for each seed both have (a paired comparison uses only the shared seeds)."""
    return [first[seed] - second[seed] for seed in sorted(first.keys() & second.keys())]


def paired_ratio(first: dict[int, float], second: dict[int, float], *, level: float = LEVEL,
                 resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float] | None:
    """mean(first) / mean(second) over the seeds both have, with its percentile-bootstrap ``level`` interval (the
    shared seeds resampled together, each resample's ratio of means). None unless the second mean is positive in
    every resample: "A recovers at most half of what B recovers" has no meaning when B recovered nothing (or
    lost more), and the ratio is unbounded near 0; the difference is reported either way."""
    seeds = sorted(first.keys() & second.keys())
    a = np.asarray([first[s] for s in seeds], dtype=np.float64)
    b = np.asarray([second[s] for s in seeds], dtype=np.float64)
    if not seeds:
        return None
    rows = np.random.default_rng(seed).integers(0, len(seeds), size=(resamples, len(seeds)))
    denominators = b[rows].mean(axis=1)
    if np.any(denominators <= 0):
        return None
    low, high = np.quantile(a[rows].mean(axis=1) / denominators, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() / b.mean()), float(low), float(high)


def with_interval(values: Sequence[float]) -> str:
    """'mean [low, high]' (the bootstrap interval of the mean), or the value alone when there is one."""
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.4g}"
    low, high = bootstrap_interval(values)
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"
