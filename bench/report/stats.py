"""Small, dependency-light statistics for benchmark samples (numpy only, no scipy).

Benchmarks give few, skewed, sometimes outlier-ridden values, so the report centres on the median
with a percentile-bootstrap confidence interval; the generator is seeded so that the same run always
renders the same numbers (a report that changes on re-render would look like a regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb, nan
from itertools import combinations

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
SEED = 20240601


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    ci_low: float
    ci_high: float
    mean: float
    cv_pct: float  # coefficient of variation: sample stdev / mean, in percent


def _values(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def bootstrap_median_ci(values, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the median; NaNs when fewer than two values."""
    arr = _values(values)
    if arr.size < 2:
        return nan, nan
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(arr, size=(resamples, arr.size), replace=True), axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(values) -> Summary:
    arr = _values(values)
    if arr.size == 0:
        return Summary(0, nan, nan, nan, nan, nan)
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1)) if arr.size > 1 else nan
    cv = (sd / abs(mean) * 100.0) if (arr.size > 1 and mean != 0) else nan
    low, high = bootstrap_median_ci(arr)
    return Summary(int(arr.size), float(np.median(arr)), low, high, mean, cv)


def bootstrap_ratio_ci(numerator, denominator, confidence: float = 0.95,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Interval of median(numerator)/median(denominator), resampling both sides independently."""
    a, b = _values(numerator), _values(denominator)
    if a.size < 2 or b.size < 2:
        return nan, nan
    rng = np.random.default_rng(seed)
    ma = np.median(rng.choice(a, size=(resamples, a.size), replace=True), axis=1)
    mb = np.median(rng.choice(b, size=(resamples, b.size), replace=True), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ma / mb
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return nan, nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return float(low), float(high)


STATISTICS = {"median": np.median, "mean": np.mean}


@dataclass(frozen=True)
class PermutationResult:
    observed: float        # statistic(new) - statistic(base)
    p_value: float         # two-sided
    permutations: int      # how many relabellings were evaluated
    exact: bool            # True when every relabelling was enumerated


def permutation_test(base, new, resamples: int = 10_000, statistic: str = "median",
                     seed: int = SEED) -> PermutationResult:
    """Two-sided permutation test of the difference ``stat(new) - stat(base)``.

    Exact (every split of the pooled values enumerated) when that is no more work than
    ``resamples``; otherwise ``resamples`` random relabellings from a seeded generator, with the
    usual +1 correction so a p-value is never 0. Small runs (3 vs 3 values) therefore have a floor
    on the p-value (2/20 = 0.1 for 3 vs 3), which is honest: they cannot show significance."""
    a, b = _values(base), _values(new)
    stat = STATISTICS[statistic]
    if a.size == 0 or b.size == 0:
        return PermutationResult(nan, nan, 0, True)
    observed = float(stat(b) - stat(a))
    pooled = np.concatenate([a, b])
    n_a, n = a.size, pooled.size
    tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    total = comb(n, n_a)
    if total <= resamples:
        idx = np.array(list(combinations(range(n), n_a)), dtype=int)
        mask = np.zeros((total, n), dtype=bool)
        np.put_along_axis(mask, idx, True, axis=1)
        tiled = np.broadcast_to(pooled, (total, n))
        perm_a = tiled[mask].reshape(total, n_a)
        perm_b = tiled[~mask].reshape(total, n - n_a)
        diffs = stat(perm_b, axis=1) - stat(perm_a, axis=1)
        p = float(np.count_nonzero(np.abs(diffs) >= abs(observed) - tol)) / total
        return PermutationResult(observed, p, total, True)
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.broadcast_to(pooled, (resamples, n)).copy(), axis=1)
    diffs = stat(perms[:, n_a:], axis=1) - stat(perms[:, :n_a], axis=1)
    hits = int(np.count_nonzero(np.abs(diffs) >= abs(observed) - tol))
    return PermutationResult(observed, (hits + 1) / (resamples + 1), resamples, False)
