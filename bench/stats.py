"""pyperf-based storage and statistics of benchmark values.

Values are kept in pyperf's data model (one ``pyperf.Run`` per measured value, warm-ups excluded, one
``pyperf.Benchmark`` per ``<benchmark>.<metric>``, one ``BenchmarkSuite`` per environment) so a run
directory is readable by ``python -m pyperf stats`` / ``compare_to`` and by the report through
:func:`load_suite`. pyperf stores only positive values with units second/byte/integer: other units are
stored as ``integer`` with the real unit in the ``isobench_unit`` metadata, and values <= 0 (an OOM-killed
job that measured 0) are kept in samples.csv only.
"""

from __future__ import annotations

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
