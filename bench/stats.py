"""pyperf-based storage and statistics of benchmark values, and the statistics of comparing two runs.

Values are kept in pyperf's data model (one ``pyperf.Run`` per measured value, warm-ups excluded, one
``pyperf.Benchmark`` per ``<benchmark>.<metric>``, one ``BenchmarkSuite`` per environment) so a run
directory is readable by ``python -m pyperf stats`` / ``compare_to`` and by the report through
:func:`load_suite`. pyperf stores only positive values with units second/byte/integer: other units are
stored as ``integer`` with the real unit in the ``isobench_unit`` metadata, and values <= 0 (an OOM-killed
job that measured 0) are kept in samples.csv only.

The comparison helpers (:func:`min_attainable_p`, :func:`benjamini_hochberg`, :func:`mirror_of`) exist
because ``isobench compare`` tests dozens of metrics at once with few values each: a permutation test on
3 vs 5 values cannot give a p below 1/56 = 0.018, so it must say "inconclusive" rather than "same"; many
tests at once need a false-discovery-rate control; and a metric that is an exact multiple of another
(``mem_delta_mib_n1`` = ``mem_delta_per_instance_mib_n1``) must be counted once, or it doubles its vote.
"""

from __future__ import annotations

import functools
import math
import statistics
from pathlib import Path

# our unit -> (pyperf unit, factor applied to the value for pyperf)
PYPERF_UNITS: dict[str, tuple[str, float]] = {
    "s": ("second", 1.0), "ms": ("second", 1e-3), "us": ("second", 1e-6),
    "bytes": ("byte", 1.0), "MiB": ("byte", float(1 << 20)),
}


def pyperf_unit(unit: str) -> tuple[str, float]:
    return PYPERF_UNITS.get(unit, ("integer", 1.0))


def build_suite(values: dict[str, list], units: dict[str, str], meta: dict[str, object]):
    """A pyperf BenchmarkSuite from ``name -> values`` (names ``<benchmark>.<metric>``). A value is a
    float or ``(value, date_iso, duration_s[, replicate])``: date and duration become the pyperf run's
    metadata, the replicate (the instance the value came from) ``isobench_replicate``; every run of a
    benchmark also carries ``isobench_independent_values``, the number of distinct replicates."""
    import pyperf

    benches = []
    for name, vals in sorted(values.items()):
        unit = units.get(name, "")
        pu, factor = pyperf_unit(unit)
        md = {"name": name, "unit": pu, "isobench_unit": unit}
        md.update({k: v for k, v in meta.items() if isinstance(v, (str, int, float)) and v != ""})
        runs = []
        items = [(item, None, None, None) if isinstance(item, (int, float)) else (tuple(item) + (None,))[:4]
                 for item in vals]
        md["isobench_independent_values"] = len({rep if rep else i for i, (*_, rep) in enumerate(items)})
        for v, date, dur, rep in items:
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                continue
            rmd = dict(md)
            if rep:
                rmd["isobench_replicate"] = str(rep)
            if date:
                rmd["date"] = date
            if dur:
                rmd["duration"] = float(dur)
            runs.append(pyperf.Run([v * factor], metadata=rmd, collect_metadata=False))
        if runs:
            benches.append(pyperf.Benchmark(runs))
    if not benches:
        return None
    return pyperf.BenchmarkSuite(benches)


def write_suite(path: Path, values: dict[str, list[float]], units: dict[str, str], meta: dict[str, object]) -> bool:
    """Write ``<env>.json`` atomically; False when there was nothing pyperf can store."""
    suite = build_suite(values, units, meta)
    if suite is None:
        return False
    tmp = path.with_suffix(".json.tmp")
    if tmp.exists():
        tmp.unlink()
    suite.dump(str(tmp))
    tmp.replace(path)
    return True


def load_suite(path: Path):
    import pyperf

    return pyperf.BenchmarkSuite.load(str(path))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    """median, mean, stdev (0 for one value), min, max, n."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "mean": statistics.fmean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


def ratio(value: float, baseline: float) -> float:
    """value / baseline (NaN when the baseline is 0 or missing)."""
    if not baseline or not math.isfinite(baseline):
        return float("nan")
    return value / baseline


# ---------------------------------------------------------------- comparing two runs

def min_attainable_p(n_base: int, n_new: int, resamples: int = 10_000) -> float:
    """The smallest two-sided p-value :func:`bench.report.stats.permutation_test` can return for these
    sample sizes, whatever the values.

    Exact enumeration (``comb(n, n_base) <= resamples``): only the observed split is as extreme as
    itself, plus its mirror image when both groups have the same size, so the floor is 1 or 2 out of
    ``comb(n, n_base)``; exact for the mean statistic, a lower bound for the median (splits that share a
    median tie with the observed one). Random relabelling: ``(hits + 1) / (resamples + 1)`` with hits >= 0, and never
    below the exact floor. NaN when a side has no value."""
    if n_base < 1 or n_new < 1:
        return math.nan
    total = math.comb(n_base + n_new, n_base)
    exact_floor = (2.0 if n_base == n_new else 1.0) / total
    if total <= resamples:
        return exact_floor
    return max(exact_floor, 1.0 / (resamples + 1))


def min_values_for(alpha: float, resamples: int = 10_000) -> int:
    """Fewest values per side (equal sizes) whose :func:`min_attainable_p` is at most ``alpha``."""
    for n in range(2, 64):
        if min_attainable_p(n, n, resamples) <= alpha:
            return n
    return 64


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order; NaN stays NaN and is not
    counted as a test. A metric is a discovery at false discovery rate ``q`` when its adjusted value is
    <= q (step-up: the k-th smallest p is compared with k*q/m, and every smaller p goes with it)."""
    idx = [i for i, p in enumerate(p_values) if isinstance(p, float | int) and math.isfinite(p)]
    m = len(idx)
    out = [math.nan] * len(p_values)
    running = 1.0
    for rank, i in reversed(list(enumerate(sorted(idx, key=lambda j: p_values[j]), start=1))):
        running = min(running, p_values[i] * m / rank)
        out[i] = min(1.0, running)
    return out


def proportional(a: list[float], b: list[float], rel_tol: float = 1e-9) -> float | None:
    """The constant c with ``b == c * a`` element-wise (same order, same length), else None. Two
    series that are multiples of each other give the same permutation p-value and the same relative
    change: one is a mirror of the other."""
    if len(a) != len(b) or not a:
        return None
    pivot = next((i for i, x in enumerate(a) if x != 0), None)
    if pivot is None:
        return 1.0 if all(y == 0 for y in b) else None
    c = b[pivot] / a[pivot]
    if c == 0 or not math.isfinite(c):
        return None
    ok = all(math.isclose(y, c * x, rel_tol=rel_tol, abs_tol=1e-12 * max(1.0, abs(y))) for x, y in zip(a, b))
    return c if ok else None


def mirror_of(series: dict[str, tuple[list[float], list[float]]]) -> dict[str, str]:
    """``name -> representative`` for every series that mirrors an earlier one (sorted by name), where
    a series is (base values, new values) in run order and mirroring means both sides are the same
    multiple of the representative's. Representatives are not keys of the result. A series with a single
    distinct value (a limit that held every time, a count that never moved) mirrors nothing: any two
    constants are multiples of each other without measuring the same thing."""
    names = sorted(series)
    out: dict[str, str] = {}
    reps: list[str] = []
    for name in names:
        base, new = series[name]
        if len(set(base) | set(new)) < 2:
            continue
        for rep in reps:
            rb, rn = series[rep]
            c = proportional(rb, base)
            if c is not None and proportional(rn, new) is not None and \
                    math.isclose(proportional(rn, new), c, rel_tol=1e-9):
                out[name] = rep
                break
        else:
            reps.append(name)
    return out


@functools.lru_cache(maxsize=64)
def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by bisection on its
    CDF integrated numerically (no scipy here). Used for prediction intervals from a few runs: the
    spread of k runs is known only to k-1 degrees of freedom, so 3 sigma of a normal is far too tight."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"student_t_quantile({p}, {df}): need 0.5 < p < 1 and df >= 1")
    import numpy as np

    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        # substitute t = tan(u): the integrand is smooth and the range finite however heavy the tail
        u = np.linspace(0.0, math.atan(x), 20001)
        t = np.tan(u)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df)) / np.cos(u) ** 2
        return 0.5 + float(np.sum((f[1:] + f[:-1]) * np.diff(u)) / 2)

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2
