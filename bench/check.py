"""Machine-independent bounds on one run, in the spirit of Kata Containers' checkmetrics.

Absolute numbers differ from host to host (and wildly between KVM and TCG), so CI checks ratios
and accuracies instead: container CPU within 5% of native, container start no slower than runc,
VM start slower than container start, ``--cpus`` accuracy within 10%, memory limit held. Bounds
live in TOML (``results/bounds.toml``), one ``[[bound]]`` table each:

- ``kind = "ratio"``: median(benchmark/metric in ``environment``) ÷ median(``reference_metric``
  or the same metric in ``reference``); ``reference_benchmark`` defaults to ``benchmark``.
  ``metric`` may be a list of alternative names (first one the run has wins), e.g.
  ``["create_to_exit_s", "create_to_exit_ms"]``: a ratio does not depend on the unit.
  ``ratio_metric`` names a ratio the harness already computed per iteration (e.g. the interleaved
  ``ratio_to_native_1t``, less sensitive to a noisy neighbour than a ratio of medians); when the run
  has it for ``environment``, its median is the value.
- ``kind = "median"``: the median itself (only for unit-free quantities such as a fraction).
- ``kind = "enforcement"``: the facts.json enforcement entries of ``environment`` and ``limit``
  (optionally only those with ``asked``); ``value = "accuracy"`` (measured ÷ asked) or ``"held"``
  (1 when held, 0 when not). Every matching entry is checked.
- ``kind = "isolation"``: facts.json isolation of ``environment``/``namespace``: 1 isolated, 0 not.

Each has ``floor`` and/or ``ceiling`` (inclusive): the claim. The check widens them by the bound's
``margin`` calibrated from A/A runs (``results/calibration.toml``, ``isobench calibrate``): identical runs
scatter around the claim, and a bound tighter than that scatter fails CI on noise. Each line prints the
widened limit the value must not cross, i.e. exactly how the bound can fail. A bound whose measurement is
absent gets the verdict ``missing``, which FAILS the check: a benchmark that silently stopped producing a
metric must not turn CI green. Mark a bound ``optional = true`` to make its absence a ``skipped`` verdict.
Lines about an environment that ran under emulation say so (``[TCG]``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from math import isfinite, nan
from pathlib import Path

from core.errors import UsageError

KINDS = ("ratio", "median", "enforcement", "isolation")
PASS, FAIL, MISSING, SKIPPED = "pass", "FAIL", "missing", "skipped"
DEFAULT_BOUNDS = Path("results/bounds.toml")


@dataclass(frozen=True)
class Bound:
    name: str
    kind: str
    environment: str
    benchmark: str = ""
    metric: str | tuple[str, ...] = ""
    reference: str = ""
    reference_metric: str = ""
    reference_benchmark: str = ""
    ratio_metric: str | tuple[str, ...] = ""
    limit: str = ""
    asked: float | None = None
    value: str = "accuracy"
    namespace: str = ""
    floor: float | None = None
    ceiling: float | None = None
    optional: bool = False


@dataclass(frozen=True)
class Result:
    bound: Bound
    label: str
    value: float
    verdict: str
    detail: str = ""
    margin: float = 0.0

    @property
    def floor(self) -> float | None:
        return None if self.bound.floor is None else self.bound.floor - self.margin

    @property
    def ceiling(self) -> float | None:
        return None if self.bound.ceiling is None else self.bound.ceiling + self.margin


@dataclass(frozen=True)
class CheckReport:
    results: list[Result] = field(default_factory=list)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.verdict in (FAIL, MISSING)]

    @property
    def ok(self) -> bool:
        return not self.failed


# ---------------------------------------------------------------- loading and validating bounds

def _check_kind(b: Bound, where: str) -> None:
    if b.kind not in KINDS:
        raise UsageError(f"{where}: bound {b.name!r} has kind {b.kind!r}; expected one of {', '.join(KINDS)}")


def _check_limits(b: Bound, where: str) -> None:
    if b.floor is None and b.ceiling is None:
        raise UsageError(f"{where}: bound {b.name!r} has neither floor nor ceiling")
    if b.floor is not None and b.ceiling is not None and b.floor > b.ceiling:
        raise UsageError(f"{where}: bound {b.name!r} has floor {b.floor} above ceiling {b.ceiling}")


def _check_fields(b: Bound, where: str) -> None:
    needed = {"ratio": ("benchmark", "metric"), "median": ("benchmark", "metric"),
              "enforcement": ("limit",), "isolation": ("namespace",)}[b.kind]
    missing = [f for f in ("environment", *needed) if not getattr(b, f)]
    if b.kind == "ratio" and not (b.reference or b.reference_metric):
        missing.append("reference or reference_metric")
    if b.kind == "enforcement" and b.value not in ("accuracy", "held"):
        raise UsageError(f"{where}: bound {b.name!r} value {b.value!r}; expected accuracy or held")
    if missing:
        raise UsageError(f"{where}: bound {b.name!r} lacks {', '.join(missing)}")


VALIDATIONS = (_check_kind, _check_limits, _check_fields)


def parse_bounds(text: str, where: str = "bounds") -> list[Bound]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: invalid TOML ({exc})") from exc
    raw = doc.get("bound")
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{where}: no [[bound]] tables")
    known = set(Bound.__dataclass_fields__)
    bounds = []
    for i, entry in enumerate(raw):
        unknown = sorted(set(entry) - known)
        if unknown:
            raise UsageError(f"{where}: bound #{i + 1} has unknown keys {', '.join(unknown)}")
        if "name" not in entry or "kind" not in entry:
            raise UsageError(f"{where}: bound #{i + 1} needs name and kind")
        for key in ("metric", "ratio_metric"):
            if isinstance(entry.get(key), list):
                entry = {**entry, key: tuple(str(m) for m in entry[key])}
        try:
            b = Bound(**entry)
        except TypeError as exc:
            raise UsageError(f"{where}: bound #{i + 1}: {exc}") from exc
        for check in VALIDATIONS:
            check(b, where)
        bounds.append(b)
    return bounds


def load_bounds(path: str | Path) -> list[Bound]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--bounds {p}: no such file")
    return parse_bounds(p.read_text(), str(p))


# ---------------------------------------------------------------- evaluation

def _pick_metric(samples, benchmark: str, environment: str, metric: str | tuple[str, ...]) -> str:
    """The first alternative present for this benchmark/environment (else the first name)."""
    names = (metric,) if isinstance(metric, str) else metric
    present = set(samples.loc[(samples["benchmark"] == benchmark) & (samples["environment"] == environment),
                              "metric"])
    return next((m for m in names if m in present), names[0])


def _median(samples, benchmark: str, environment: str, metric: str) -> float:
    part = samples[(samples["benchmark"] == benchmark) & (samples["environment"] == environment)
                   & (samples["metric"] == metric)]["value"]
    return float(part.median()) if len(part) else nan


def _verdict(b: Bound, value: float) -> str:
    """Against the claim itself; :func:`check_run` re-judges with the calibrated margin."""
    return _judge(b, value, 0.0)


def _judge(b: Bound, value: float, margin: float) -> str:
    if not isfinite(value):
        return SKIPPED if b.optional else MISSING
    if b.floor is not None and value < b.floor - margin:
        return FAIL
    if b.ceiling is not None and value > b.ceiling + margin:
        return FAIL
    return PASS


def _failure_note(run, benchmark: str, environments: tuple[str, ...]) -> str:
    for f in run.failures or []:
        if f.get("benchmark") == benchmark and f.get("environment") in environments:
            return f"{benchmark}/{f.get('environment')} failed: {f.get('error', '')}"
    return "not in this run"


def _ratio(b: Bound, run) -> list[Result]:
    ref_env = b.reference or b.environment
    ref_bench = b.reference_benchmark or b.benchmark
    if b.ratio_metric:
        pre = _pick_metric(run.samples, b.benchmark, b.environment, b.ratio_metric)
        value = _median(run.samples, b.benchmark, b.environment, pre)
        if isfinite(value):
            return [Result(b, f"{b.benchmark}/{pre} in {b.environment} (per-iteration ratio)", value,
                           _verdict(b, value))]
    metric = _pick_metric(run.samples, b.benchmark, b.environment, b.metric)
    ref_metric = b.reference_metric or metric
    num = _median(run.samples, b.benchmark, b.environment, metric)
    den = _median(run.samples, ref_bench, ref_env, ref_metric)
    value = num / den if isfinite(num) and isfinite(den) and den != 0 else nan
    label = f"{b.benchmark}/{metric}: {b.environment} ÷ {ref_env}" + \
        (f" {ref_bench}/{ref_metric}" if (ref_bench, ref_metric) != (b.benchmark, metric) else "")
    detail = "" if isfinite(value) else _failure_note(run, b.benchmark, (b.environment, ref_env))
    return [Result(b, label, value, _verdict(b, value), detail)]


def _median_kind(b: Bound, run) -> list[Result]:
    metric = _pick_metric(run.samples, b.benchmark, b.environment, b.metric)
    value = _median(run.samples, b.benchmark, b.environment, metric)
    detail = "" if isfinite(value) else _failure_note(run, b.benchmark, (b.environment,))
    return [Result(b, f"{b.benchmark}/{metric} in {b.environment}", value, _verdict(b, value), detail)]


def _enforcement(b: Bound, run) -> list[Result]:
    entries = [e for e in (run.facts or {}).get("enforcement") or []
               if e.get("environment") == b.environment and e.get("limit") == b.limit
               and (b.asked is None or e.get("asked") == b.asked)]
    if not entries:
        return [Result(b, f"{b.limit} {b.value} in {b.environment}", nan, _verdict(b, nan),
                       _failure_note(run, "enforcement", (b.environment,)))]
    out = []
    for e in entries:
        if b.value == "held":
            value = 1.0 if e.get("held") else 0.0
        else:
            asked, measured = e.get("asked"), e.get("measured")
            value = measured / asked if isinstance(asked, (int, float)) and asked and \
                isinstance(measured, (int, float)) else nan
        label = f"{b.limit}={e.get('asked')} {b.value} in {b.environment}"
        out.append(Result(b, label, value, _verdict(b, value), str(e.get("evidence", ""))))
    return out


def _isolation(b: Bound, run) -> list[Result]:
    cell = ((run.facts or {}).get("isolation") or {}).get(b.environment, {}).get(b.namespace)
    value = nan if cell is None else (1.0 if cell.get("isolated") else 0.0)
    detail = "" if cell is None else str(cell.get("evidence", ""))
    return [Result(b, f"{b.namespace} namespace isolated in {b.environment}", value, _verdict(b, value),
                   detail or _failure_note(run, "isolation", (b.environment,)))]


EVALUATORS = {"ratio": _ratio, "median": _median_kind, "enforcement": _enforcement, "isolation": _isolation}


def evaluate_bound(b: Bound, run) -> list[Result]:
    """The bound's measured value(s) in ``run``, judged against the claim without margin."""
    return EVALUATORS[b.kind](b, run)


def _accel_note(results: list[Result], run) -> list[Result]:
    if str((run.meta or {}).get("accelerator", "")).lower() != "tcg":
        return results
    return [replace(r, label=f"{r.label} [TCG]") if r.bound.environment == "vm" or r.bound.reference == "vm"
            else r for r in results]


def check_run(run, bounds: list[Bound], margins: dict[str, float] | None = None) -> CheckReport:
    """Every bound on ``run``; ``margins`` (bound name -> calibrated margin) widen floor and ceiling."""
    margins = margins or {}
    out = []
    for b in bounds:
        m = float(margins.get(b.name, 0.0))
        for r in _accel_note(evaluate_bound(b, run), run):
            out.append(replace(r, margin=m, verdict=_judge(b, r.value, m)))
    return CheckReport(out)


def report_text(report: CheckReport) -> str:
    """The table ``isobench check`` prints: bound, value, floor, ceiling, verdict."""
    import pandas as pd

    def num(v):
        return "—" if v is None or not isfinite(v) else f"{v:.4g}"

    def fails_if(r: Result) -> str:
        parts = ([f"< {num(r.floor)}"] if r.floor is not None else []) + \
            ([f"> {num(r.ceiling)}"] if r.ceiling is not None else [])
        return " or ".join(parts)

    rows = [{"bound": r.bound.name, "measured": r.label, "value": num(r.value),
             "floor": num(r.bound.floor), "ceiling": num(r.bound.ceiling),
             "margin": num(r.margin) if r.margin else "0", "fails if": fails_if(r), "verdict": r.verdict,
             "note": r.detail if r.verdict != PASS else ""} for r in report.results]
    df = pd.DataFrame(rows, columns=["bound", "measured", "value", "floor", "ceiling", "margin", "fails if",
                                     "verdict", "note"])
    counts = {v: sum(r.verdict == v for r in report.results) for v in (PASS, FAIL, MISSING, SKIPPED)}
    summary = (f"check: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[MISSING]} missing "
               f"(missing fails), {counts[SKIPPED]} optional skipped -> {'OK' if report.ok else 'FAILED'}")
    widths = {c: max([len(c)] + [len(str(v)) for v in df[c]]) for c in df.columns}
    lines = ["  ".join(f"{c:<{widths[c]}}" for c in df.columns).rstrip()]
    lines += ["  ".join(f"{str(v):<{widths[c]}}" for c, v in row.items()).rstrip()
              for row in df.to_dict("records")]
    return "\n".join(lines + [summary])
