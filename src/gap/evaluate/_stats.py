"""Statistics of per-item scores: clustered bootstrap intervals, paired bootstrap tests, agreement.

Pure numpy. Items that share an image are not independent (1,000 GAP-VQA val items share 965 images),
so every resampling draws whole images (clusters), never single items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean and its percentile bootstrap interval (``nan`` bounds when there is nothing to resample)."""

    mean: float
    low: float
    high: float


def _cluster_totals(values: Sequence[float], clusters: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums and counts, in order of first appearance."""
    index: dict[str, int] = {}
    codes = np.array([index.setdefault(c, len(index)) for c in clusters], dtype=np.int64)
    data = np.asarray(values, dtype=float)
    sums = np.bincount(codes, weights=data, minlength=len(index))
    counts = np.bincount(codes, minlength=len(index)).astype(float)
    return sums, counts


def _resampled_means(
    sums: np.ndarray, counts: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Means of ``resamples`` draws of whole clusters with replacement (ratio of resampled totals)."""
    draws = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means: np.ndarray = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return means


def clustered_bootstrap(
    values: Sequence[float],
    clusters: Sequence[str],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """The mean of ``values`` with a percentile bootstrap interval that resamples whole clusters."""
    if len(values) != len(clusters):
        raise ValueError("values and clusters differ in length")
    if not values:
        return Interval(float("nan"), float("nan"), float("nan"))
    mean = float(np.mean(values))
    sums, counts = _cluster_totals(values, clusters)
    if len(sums) < 2:
        return Interval(mean, float("nan"), float("nan"))
    means = _resampled_means(sums, counts, resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(mean, float(low), float(high))


def paired_bootstrap_p(
    first: Sequence[float],
    second: Sequence[float],
    clusters: Sequence[str],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> float:
    """Two-sided p-value of "the mean paired difference is 0", by a clustered bootstrap.

    The bootstrap distribution of the mean difference is centred on 0 (the null) and the p-value is the
    share of draws at least as far from 0 as the observed difference, with the usual +1 correction, so it
    is never exactly 0.
    """
    if not (len(first) == len(second) == len(clusters)):
        raise ValueError("paired samples differ in length")
    if not first:
        return float("nan")
    diffs = np.asarray(second, dtype=float) - np.asarray(first, dtype=float)
    observed = float(diffs.mean())
    sums, counts = _cluster_totals(diffs.tolist(), clusters)
    if len(sums) < 2:
        return float("nan")
    means = _resampled_means(sums, counts, resamples, np.random.default_rng(seed))
    extreme = np.abs(means - observed) >= abs(observed) - 1e-12
    return float((1 + int(extreme.sum())) / (resamples + 1))


@dataclass(frozen=True, slots=True)
class Agreement:
    """How consistently a judge scores the same item over repeats."""

    items: int
    """Items with at least two parsed repeats."""
    identical: float
    """Share of those items whose repeats all gave the same score."""
    mean_abs_diff: float
    """Mean absolute difference between two repeats of the same item."""


def agreement(repeats: Sequence[Sequence[float]]) -> Agreement:
    """Agreement over items that each have two or more scores."""
    usable = [np.asarray(r, dtype=float) for r in repeats if len(r) >= 2]
    if not usable:
        return Agreement(0, float("nan"), float("nan"))
    identical = float(np.mean([np.ptp(r) == 0 for r in usable]))
    diffs = [np.abs(r[:, None] - r[None, :])[np.triu_indices(len(r), 1)].mean() for r in usable]
    return Agreement(len(usable), identical, float(np.mean(diffs)))


def wilcoxon_p(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (items treated as independent).

    A check beside the clustered bootstrap that suits bounded [0, 1] scores; ``nan`` when every pair
    is equal (there is nothing to rank).
    """
    from scipy import stats

    diffs = np.asarray(second, dtype=float) - np.asarray(first, dtype=float)
    if not diffs.size or not np.any(diffs):
        return float("nan")
    return float(stats.wilcoxon(diffs, zero_method="zsplit").pvalue)
