"""Minimum effects and check margins calibrated from A/A runs (identical code, identical conditions).

Why: on these shared 2-core machines two runs of the same commit differ by more than the spread inside
one run (other tenants, page cache, CPU frequency drift between runs), so a permutation test alone flags
"regressions" between identical runs. How much identical runs differ is a property of the metric and of
the machine, so it is measured, not guessed, and committed (``results/calibration.toml``) with the
conditions of the runs it came from.

From k >= 3 runs, per (benchmark, environment, metric) present in all of them:

- the run statistic s_i (mean of the independent values, as ``compare`` computes it);
- ``aa_max_change``: the largest |s_j - s_i| / |s_i| over all ordered pairs (what an A/A compare saw);
- ``between_run_cv``: stdev(s_i) / |mean(s_i)|;
- ``resolution``: for a count (every value an integer, e.g. processes reached) one unit of the centre
  plus one rounding step, since one unit up or down is the count's own granularity, not a change; else 0;
- ``spread``: load on a shared host slows everything by a factor (a busy neighbour made one run's starts
  4x slower here), so for positive statistics the spread is taken on log-ratios:
  ``expm1(max(max |ln(s_j/s_i)|, t * sqrt(2) * stdev(ln s_i)))``. A log-ratio of two new runs has sd
  sqrt(2)*sigma; sigma is known only from k runs, so the limit is a prediction interval with Student's t
  of k-1 degrees of freedom at ``COVERAGE`` (the "3 sigma" quantile): t = 19.2 for 3 runs, 6.6 for 5,
  3.3 for 31. A first version used a flat 3 (the normal quantile): calibrated on 3 runs, 4 of 10
  held-out A/A pairs flagged a change, because 3 runs say little about the spread. The largest observed
  change is a floor. Statistics that can be zero or negative use the same rule on relative changes and
  the cv;
- ``min_effect = max(EFFECT_FLOOR, resolution, spread)`` rounded up to 0.5%. ``compare`` judges a change
  on the same scale: |ln(new/base)| >= ln(1 + min_effect), so x1.2 and /1.2 weigh the same.

Per ``[[bound]]`` of the bounds file: the bound's value in each run, its centre and stdev, and
``margin = max(t * stdev * sqrt(1 + 1/k), max |v_i - centre|)`` in the bound's own units (the prediction
interval of one more run's value). ``isobench check`` widens
the bound's floor/ceiling by that margin; ``headroom`` is by what factor (minus one) the measured value
has to grow or shrink to fail. A bound whose headroom exceeds ``MAX_HEADROOM`` cannot fail in practice and
is reported so it can be removed.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.stats import student_t_quantile
from core.errors import UsageError

COVERAGE = 0.99865  # one-sided quantile of "3 sigma": identical runs exceed the limit ~0.27% of the time
EFFECT_FLOOR = 0.01
EFFECT_STEP = 0.005
MIN_RUNS = 3
MAX_HEADROOM = 1.0   # a bound whose value must more than double (or vanish) to fail guards nothing
DEFAULT_CALIBRATION = Path("results/calibration.toml")
CONDITION_KEYS = ("hostname", "cpu_model", "cpu_count", "kernel", "accelerator", "profile", "started_utc")


@dataclass(frozen=True)
class MetricCalibration:
    benchmark: str
    environment: str
    metric: str
    runs: int
    values_per_run: int
    between_run_cv: float
    aa_max_change: float
    min_effect: float

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.benchmark, self.environment, self.metric)


@dataclass(frozen=True)
class BoundCalibration:
    name: str
    values: tuple[float, ...]
    centre: float
    stdev: float
    margin: float
    headroom: float   # relative move of the value that makes the widened bound fail (inf: cannot fail)


@dataclass(frozen=True)
class Calibration:
    conditions: dict
    metrics: tuple[MetricCalibration, ...]
    bounds: tuple[BoundCalibration, ...]

    def min_effects(self) -> tuple[tuple[tuple[str, str, str], float], ...]:
        return tuple((m.key, m.min_effect) for m in self.metrics)

    def bound(self, name: str) -> BoundCalibration | None:
        return next((b for b in self.bounds if b.name == name), None)


def _round_up(x: float, step: float = EFFECT_STEP) -> float:
    return round(math.ceil(x / step - 1e-9) * step, 6)


def metric_calibration(key: tuple[str, str, str], per_run: list[list[float]]) -> MetricCalibration:
    """Calibration of one metric from its independent values in each run (see the module docstring)."""
    means = [statistics.fmean(v) for v in per_run]
    centre = statistics.fmean(means)
    cv = statistics.stdev(means) / abs(centre) if centre else math.inf
    pairs = [(a, b) for i, a in enumerate(means) for j, b in enumerate(means) if i != j]
    aa_max = max((abs(b - a) / abs(a) for a, b in pairs if a != 0), default=0.0)
    counts = all(float(x).is_integer() for v in per_run for x in v)
    resolution = 1.0 / abs(centre) + EFFECT_STEP if counts and centre else 0.0
    t = student_t_quantile(COVERAGE, len(means) - 1)
    if all(m > 0 for m in means):  # multiplicative noise: spread and changes as log-ratios
        log_sd = statistics.stdev(math.log(m) for m in means)
        log_max = max(abs(math.log(b / a)) for a, b in pairs)
        spread = math.expm1(max(log_max, t * math.sqrt(2.0) * log_sd))
    else:
        spread = max(aa_max, t * math.sqrt(2.0) * cv)
    effect = max(EFFECT_FLOOR, resolution, spread)
    return MetricCalibration(*key, runs=len(per_run), values_per_run=min(len(v) for v in per_run),
                             between_run_cv=round(cv, 6), aa_max_change=round(aa_max, 6),
                             min_effect=_round_up(effect) if math.isfinite(effect) else 1.0)


def headroom(centre: float, floor: float | None, ceiling: float | None, margin: float) -> float:
    """How far ``centre`` must move to cross the widened floor or ceiling, as a factor minus one: 0.25
    means it must grow (or shrink) by a factor of 1.25; inf when it cannot get there at all. Measured as a
    factor so a floor and a ceiling compare alike (halving and doubling are both 1.0)."""
    if not math.isfinite(centre) or centre <= 0:
        return math.inf
    moves = []
    if floor is not None:
        low = floor - margin
        moves.append(centre / low - 1.0 if low > 0 else math.inf)
    if ceiling is not None:
        moves.append((ceiling + margin) / centre - 1.0)
    return max(0.0, min(moves)) if moves else math.inf


def bound_calibration(bound, values: list[float]) -> BoundCalibration:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return BoundCalibration(bound.name, tuple(values), math.nan, math.nan, math.nan, math.inf)
    centre = statistics.fmean(finite)
    sd = statistics.stdev(finite)
    # prediction interval for one new run's value from k runs: t(k-1) * sd * sqrt(1 + 1/k)
    t = student_t_quantile(COVERAGE, len(finite) - 1)
    margin = max(t * sd * math.sqrt(1.0 + 1.0 / len(finite)), max(abs(v - centre) for v in finite))
    return BoundCalibration(bound.name, tuple(round(v, 6) for v in finite), round(centre, 6), round(sd, 6),
                            round(margin, 6), round(headroom(centre, bound.floor, bound.ceiling, margin), 6))


def _check_runs(runs) -> None:
    if len(runs) < MIN_RUNS:
        raise UsageError(f"calibrate needs at least {MIN_RUNS} A/A runs, got {len(runs)}")
    for key in ("hostname", "accelerator", "cpu_count", "kernel"):
        seen = {str(r.meta.get(key)) for r in runs}
        if len(seen) > 1:
            raise UsageError(f"calibrate: runs differ in {key} ({', '.join(sorted(seen))}); A/A runs must share "
                             f"their conditions")


def calibrate(runs, bounds, labels: list[str] | None = None) -> Calibration:
    """Calibration from loaded runs (``bench.results.Run``) and the bounds to give margins to; ``labels``
    name the runs in the conditions (default: their paths)."""
    from bench.check import evaluate_bound
    from bench.compare import KEY, independent_values

    _check_runs(runs)
    groups = [{k: independent_values(g) for k, g in r.samples.groupby(list(KEY), sort=True)} for r in runs]
    common = sorted(set.intersection(*(set(g) for g in groups)))
    metrics = tuple(metric_calibration(k, [g[k] for g in groups]) for k in common
                    if all(len(g[k]) >= 1 for g in groups))
    bound_cals = []
    for b in bounds:
        values = []
        for r in runs:
            results = evaluate_bound(b, r)
            values.extend(res.value for res in results)
        bound_cals.append(bound_calibration(b, values))
    first = runs[0].meta
    conditions = {k: first.get(k) for k in CONDITION_KEYS if k != "started_utc" and first.get(k) is not None}
    conditions.update({
        "runs": list(labels) if labels else [str(r.path) for r in runs],
        "started_utc": [str(r.meta.get("started_utc", "?")) for r in runs],
        "isobench_commit": sorted({str(r.meta.get("isobench_commit") or "not recorded in meta.json")
                                   for r in runs}),
        "calibrated_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "coverage": COVERAGE, "effect_floor": EFFECT_FLOOR, "max_headroom": MAX_HEADROOM,
    })
    return Calibration(conditions, metrics, tuple(bound_cals))


# ---------------------------------------------------------------- TOML (written by hand: no writer in stdlib)

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return '"inf"' if v > 0 else '"nan"'
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    text = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def to_toml(cal: Calibration, command: str = "") -> str:
    lines = ["# Minimum effects (isobench compare) and margins (isobench check) calibrated from A/A runs:",
             "# identical code, identical conditions, run one after another. Written by",
             f"#   {command or 'isobench calibrate RUN_DIR...'}",
             "# Method: see bench/calibrate.py. Re-calibrate when the machine, kernel, accelerator or profile changes.",
             "", "[conditions]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in cal.conditions.items()]
    for m in cal.metrics:
        lines += ["", "[[metric]]"]
        lines += [f"{f} = {_toml_value(getattr(m, f))}" for f in MetricCalibration.__dataclass_fields__]
    for b in cal.bounds:
        lines += ["", "[[bound]]"]
        lines += [f"{f} = {_toml_value(getattr(b, f))}" for f in BoundCalibration.__dataclass_fields__]
    return "\n".join(lines) + "\n"


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) else float(str(v))


def parse_calibration(text: str, where: str = "calibration") -> Calibration:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: invalid TOML ({exc})") from exc
    try:
        metrics = tuple(MetricCalibration(str(m["benchmark"]), str(m["environment"]), str(m["metric"]),
                                          int(m["runs"]), int(m["values_per_run"]), _num(m["between_run_cv"]),
                                          _num(m["aa_max_change"]), _num(m["min_effect"]))
                        for m in doc.get("metric", []))
        bounds = tuple(BoundCalibration(str(b["name"]), tuple(_num(v) for v in b["values"]), _num(b["centre"]),
                                        _num(b["stdev"]), _num(b["margin"]), _num(b["headroom"]))
                       for b in doc.get("bound", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{where}: malformed entry ({exc!r})") from exc
    bad = [m for m in metrics if not (0 < m.min_effect and math.isfinite(m.min_effect))]
    if bad:
        raise UsageError(f"{where}: {bad[0].metric} has min_effect {bad[0].min_effect}; expected a fraction > 0")
    return Calibration(dict(doc.get("conditions", {})), metrics, bounds)


def load_calibration(path: str | Path) -> Calibration:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--calibration {p}: no such file")
    return parse_calibration(p.read_text(), str(p))


def default_calibration() -> Path | None:
    """``results/calibration.toml`` of the working directory, else the one committed beside this code."""
    here = DEFAULT_CALIBRATION
    if here.is_file():
        return here
    repo = Path(__file__).resolve().parents[1] / DEFAULT_CALIBRATION
    return repo if repo.is_file() else None


def summary_text(cal: Calibration) -> str:
    """What ``isobench calibrate`` prints: per metric its minimum effect, per bound its margin and headroom."""
    lines = [f"calibrated from {len(cal.conditions.get('runs', []))} A/A runs "
             f"({cal.conditions.get('accelerator', '?')} VMs, host {cal.conditions.get('hostname', '?')})"]
    width = max([len("/".join(m.key)) for m in cal.metrics] + [10])
    for m in cal.metrics:
        label = "/".join(m.key) + (" [TCG]" if m.environment == "vm" and
                                   str(cal.conditions.get("accelerator", "")).lower() == "tcg" else "")
        lines.append(f"  {label:<{width + 6}} min effect {m.min_effect:6.1%}  (A/A max {m.aa_max_change:6.1%}, "
                     f"between-run cv {m.between_run_cv:6.2%})")
    for b in cal.bounds:
        state = "CANNOT FAIL: remove it" if b.headroom > MAX_HEADROOM else "can fail"
        lines.append(f"  bound {b.name!r}: centre {b.centre:.4g}, margin {b.margin:.3g}, fails when the value grows or shrinks by a factor "
                     f"{1 + b.headroom:.3g} -> {state}")
    return "\n".join(lines)
