"""Statistics behind the report and compare: medians, bootstrap CIs, permutation tests."""

import math

import numpy as np
import pytest

from bench.report import stats


def test_summary_median_ci_cv():
    vals = [10.0, 11.0, 9.0, 10.5, 9.5]
    s = stats.summarize(vals)
    assert s.n == 5 and s.median == 10.0
    assert s.ci_low <= s.median <= s.ci_high
    assert s.cv_pct == pytest.approx(np.std(vals, ddof=1) / np.mean(vals) * 100)


def test_summary_single_and_empty_values():
    one = stats.summarize([3.0])
    assert one.n == 1 and one.median == 3.0 and math.isnan(one.ci_low) and math.isnan(one.cv_pct)
    assert stats.summarize([]).n == 0


def test_bootstrap_is_deterministic():
    vals = np.random.default_rng(3).normal(100, 5, 20)
    assert stats.bootstrap_median_ci(vals) == stats.bootstrap_median_ci(vals)


def test_ratio_ci_brackets_ratio():
    rng = np.random.default_rng(1)
    a, b = rng.normal(200, 2, 10), rng.normal(100, 1, 10)
    lo, hi = stats.bootstrap_ratio_ci(a, b)
    assert lo < np.median(a) / np.median(b) < hi


def test_permutation_exact_for_small_samples():
    r = stats.permutation_test([1, 2, 3], [4, 5, 6], statistic="mean")
    assert r.exact and r.permutations == 20
    assert r.p_value == pytest.approx(0.1)  # the two extreme splits of 20


def test_permutation_detects_shift_and_not_identity():
    rng = np.random.default_rng(5)
    a = rng.normal(100, 1, 12)
    assert stats.permutation_test(a, a * 1.2).p_value < 0.001
    assert stats.permutation_test(a, a).p_value == 1.0
