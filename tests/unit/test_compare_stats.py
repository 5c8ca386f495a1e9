"""The statistics behind `isobench compare`: the smallest p a permutation test can reach (checked against
the test itself), Benjamini-Hochberg adjusted p-values, mirror detection."""

import itertools
import math

import pytest

from bench.report.stats import permutation_test
from bench.stats import benjamini_hochberg, min_attainable_p, min_values_for, mirror_of, proportional


@pytest.mark.parametrize("n_a,n_b,expected", [
    (3, 5, 1 / 56), (3, 3, 2 / 20), (5, 5, 2 / 252), (4, 6, 1 / 210), (2, 2, 2 / 6), (1, 7, 1 / 8)])
def test_min_attainable_p_exact(n_a, n_b, expected):
    assert min_attainable_p(n_a, n_b) == pytest.approx(expected)


@pytest.mark.parametrize("n_a,n_b", [(3, 5), (3, 3), (5, 5), (4, 6), (2, 3)])
def test_min_attainable_p_is_what_the_test_gives_on_separated_values(n_a, n_b):
    """Fully separated samples are the most extreme data: the mean test returns exactly the floor; the
    median test (many splits share a median) never goes below it."""
    base = [10.0 + 0.01 * i for i in range(n_a)]
    new = [20.0 + 0.37 * i for i in range(n_b)]
    assert permutation_test(base, new, statistic="mean").p_value == pytest.approx(min_attainable_p(n_a, n_b))
    assert permutation_test(base, new, statistic="median").p_value >= min_attainable_p(n_a, n_b) - 1e-12


def test_min_attainable_p_random_relabelling():
    # comb(30, 15) >> resamples: the (hits + 1) / (resamples + 1) floor
    assert min_attainable_p(15, 15, resamples=10_000) == pytest.approx(1 / 10_001)
    assert math.isnan(min_attainable_p(0, 5))


def test_min_values_for():
    assert min_values_for(0.01) == 5 and min_values_for(0.05) == 4 and min_values_for(0.1) == 3


def test_benjamini_hochberg_known_values():
    # sorted: .005 (k=1) .01 (2) .03 (3) .04 (4); p*m/k = .02 .02 .04 .04, monotone from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    out = benjamini_hochberg([0.5, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert benjamini_hochberg([]) == []


def test_benjamini_hochberg_matches_step_up_definition():
    ps = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    q = 0.05
    m = len(ps)
    ranked = sorted(ps)
    k_max = max((k for k in range(1, m + 1) if ranked[k - 1] <= k * q / m), default=0)
    expected = {p for p in ps if k_max and p <= ranked[k_max - 1]}
    adjusted = benjamini_hochberg(ps)
    assert {p for p, a in zip(ps, adjusted) if a <= q} == expected


def test_proportional():
    assert proportional([1.0, 2.0], [2.0, 4.0]) == pytest.approx(2.0)
    assert proportional([1.0, 2.0], [2.0, 4.1]) is None
    assert proportional([1.0], [1.0, 2.0]) is None
    assert proportional([0.0, 1.0], [0.0, 3.0]) == pytest.approx(3.0)


def test_mirror_of_picks_first_name_as_representative():
    s = {"b_n1": ([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]), "a_n1": ([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]),
         "c_n2": ([2.0, 4.0, 6.0], [4.0, 4.0, 10.0]), "d": ([2.0, 4.0, 6.0], [4.0, 4.0, 11.0])}
    assert mirror_of(s) == {"b_n1": "a_n1", "c_n2": "a_n1"}


def test_mirror_of_ignores_constants():
    assert mirror_of({"x": ([1.0] * 3, [1.0] * 3), "y": ([5.0] * 3, [5.0] * 3)}) == {}


def test_exhaustive_small_permutation_floor_against_enumeration():
    """Brute force over all splits of 6 distinct values: no split gives a p below the floor."""
    vals = [1.0, 2.5, 3.0, 7.0, 8.5, 9.0]
    for idx in itertools.combinations(range(6), 2):
        a = [vals[i] for i in idx]
        b = [v for i, v in enumerate(vals) if i not in idx]
        assert permutation_test(a, b).p_value >= min_attainable_p(2, 4) - 1e-12
