"""Is NEW worse than BASE? Per (benchmark, environment, metric), a permutation test on the independent
values, Benjamini-Hochberg across metrics, and a per-metric minimum effect calibrated from A/A runs.

Why each piece:
- A permutation test on few values has a floor: 3 vs 5 values can never give p below 1/56 = 0.018. When
  that floor is above the level ``alpha`` the metric is "inconclusive" (not "same": an 82% drop on 3
  values is not evidence of sameness), and the line says how many values would be needed.
- Dozens of metrics are tested at once; Benjamini-Hochberg keeps the expected share of false "slower"/
  "faster" among the flagged ones at ``alpha``. Mirrors (a metric that is an exact multiple of another in
  both runs, e.g. ``mem_delta_mib_n1`` = ``mem_delta_per_instance_mib_n1``) are tested once: they
  share their representative's verdict and are not counted in the correction.
- Identical code run twice on these shared machines differs by more than the within-run spread (drift
  between runs): a significant change counts only when it is also at least the metric's minimum effect,
  calibrated from A/A runs (``results/calibration.toml``, made by ``isobench calibrate``); an uncalibrated
  metric uses ``DEFAULT_MIN_EFFECT``.
- Values that share an instance are not independent: when samples.csv has a ``replicate`` column (the
  instance or boot a value came from), the values of one replicate are averaged into one value first.

Verdicts are direction-aware: "slower" means worse in the metric's own direction (more ms, fewer
events/s), "faster" better; "inconclusive" means a change at least the minimum effect that the values
cannot confirm, or too few values to reach ``alpha`` at all. Any "slower" makes ``isobench compare``
exit 1. Lines of an environment that ran under emulation say so (``vm [TCG]``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import isfinite, log, log1p, nan
from pathlib import Path

from bench import stats as cmpstats
from bench.report import stats

VERDICT_FASTER, VERDICT_SLOWER, VERDICT_SAME = "faster", "slower", "same"
VERDICT_INCONCLUSIVE = "inconclusive"
ONLY_BASE, ONLY_NEW = "only in base", "only in new"
KEY = ("benchmark", "environment", "metric")
INSTANCE_COLUMN = "replicate"  # samples.csv column naming the instance/boot: values sharing one are one value
DEFAULT_MIN_EFFECT = 0.05      # for metrics the calibration does not cover


@dataclass(frozen=True)
class CompareConfig:
    threshold: float | None = None  # floor on every minimum effect (fraction); None: calibrated or default
    alpha: float = 0.05             # false discovery rate across metrics; also the level a test must reach
    resamples: int = 10_000         # random relabellings when exact enumeration is larger
    statistic: str = "mean"         # mean or median, for both the test and the relative change
    min_effects: tuple[tuple[tuple[str, str, str], float], ...] = ()  # calibrated (key, fraction) pairs

    def min_effect(self, key: tuple[str, str, str]) -> tuple[float, str]:
        """(fraction, where it comes from) for one metric."""
        calibrated = dict(self.min_effects).get(key)
        if calibrated is None:
            base, source = DEFAULT_MIN_EFFECT, "default"
        else:
            base, source = calibrated, "calibrated"
        if self.threshold is not None and self.threshold > base:
            return self.threshold, "--threshold"
        return base, source


@dataclass(frozen=True)
class Comparison:
    benchmark: str
    environment: str
    metric: str
    unit: str
    direction: str
    n_base: int            # independent values
    n_new: int
    base: float
    new: float
    change_pct: float
    p_value: float
    q_value: float         # Benjamini-Hochberg adjusted p
    min_p: float           # smallest p the test can give for n_base vs n_new
    min_effect_pct: float
    effect_source: str     # calibrated, default or --threshold
    mirror_of: str         # metric this one mirrors ("" for a tested metric)
    accelerator: str       # "TCG" when an environment ran under emulation in either run, else ""
    verdict: str
    reason: str = ""

    @property
    def regression(self) -> bool:
        return self.verdict == VERDICT_SLOWER

    @property
    def env_label(self) -> str:
        return f"{self.environment} [{self.accelerator}]" if self.accelerator else self.environment


def parse_threshold(text: str) -> float:
    """``5%`` -> 0.05; ``0.05`` -> 0.05; a bare number of 1 or more is read as percent."""
    from core.errors import UsageError

    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError as exc:
        raise UsageError(f"--threshold {text!r} is not a percentage like 5%") from exc
    if not raw.endswith("%") and value >= 1:
        value /= 100.0
    if not 0 <= value < 1:
        raise UsageError(f"--threshold {text!r} must be between 0% and 100%")
    return value


def parse_alpha(text: str) -> float:
    from core.errors import UsageError

    try:
        value = float(text)
    except ValueError as exc:
        raise UsageError(f"--p {text!r} is not a number") from exc
    if not 0 < value < 1:
        raise UsageError(f"--p {text!r} must be between 0 and 1 (exclusive)")
    return value


def accelerator_label(environment: str, *metas: dict, rows=()) -> str:
    """"TCG" when the rows (their ``accelerator`` column) or, for the vm environment, either run's meta
    say the VM ran under emulation."""
    accels = {str(a).lower() for group in rows if group is not None and "accelerator" in group.columns
              for a in group["accelerator"].dropna().unique()}
    if environment == "vm":
        accels |= {str(m.get("accelerator", "")).lower() for m in metas}
    return "TCG" if "tcg" in accels else ""


def independent_values(group) -> list[float]:
    """The group's values in run order, one per independent instance (``instance`` column averaged)."""
    if INSTANCE_COLUMN in group.columns and group[INSTANCE_COLUMN].notna().any():
        per = group.groupby(INSTANCE_COLUMN, sort=False)["value"].mean()
        return [float(v) for v in per.to_numpy(dtype=float)]
    return [float(v) for v in group["value"].to_numpy(dtype=float)]


def _mirrors(series: dict, directions: dict) -> dict:
    """key -> representative key, within one (benchmark, environment) and one direction."""
    by_scope: dict = {}
    for key, pair in series.items():
        by_scope.setdefault((key[0], key[1], directions[key]), {})[key[2]] = pair
    out = {}
    for (bench_, env, _), group in by_scope.items():
        for name, rep in cmpstats.mirror_of(group).items():
            out[(bench_, env, name)] = (bench_, env, rep)
    return out


def _at_least(rel: float, min_effect: float) -> bool:
    """Is a relative change ``rel`` at least the minimum effect? On the log scale (the calibration's):
    x(1+e) and /(1+e) both count, so a 20% slowdown of a time and of a throughput weigh the same; a
    change through zero or below (a negative statistic) falls back to the plain relative size."""
    ratio = 1.0 + rel
    if ratio > 0:
        return abs(log(ratio)) >= log1p(min_effect) - 1e-12
    return abs(rel) >= min_effect


def _raw_verdict(rel: float, q: float, min_p: float, min_effect: float, direction: str,
                 alpha: float) -> tuple[str, str]:
    if not isfinite(rel):
        return VERDICT_SAME, "no finite statistic"
    if not min_p <= alpha:
        need = cmpstats.min_values_for(alpha)
        return VERDICT_INCONCLUSIVE, f"too few values: min p {min_p:.2g} > {alpha:g} (needs {need}+ per run)"
    big = _at_least(rel, min_effect)
    if not (isfinite(q) and q <= alpha):
        return (VERDICT_INCONCLUSIVE, f"change not significant (q {q:.3g} > {alpha:g})") if big else \
            (VERDICT_SAME, "")
    if not big:
        return VERDICT_SAME, f"significant but below the minimum effect {min_effect:.1%}"
    worse = rel > 0 if direction == "lower" else rel < 0
    return (VERDICT_SLOWER if worse else VERDICT_FASTER), ""


def compare_samples(base, new, cfg: CompareConfig = CompareConfig(), base_meta: dict | None = None,
                    new_meta: dict | None = None) -> list[Comparison]:
    """Compare two samples DataFrames (columns of :data:`bench.results.SAMPLE_COLUMNS`)."""
    stat = stats.STATISTICS[cfg.statistic]
    metas = (base_meta or {}, new_meta or {})
    base_groups = {k: g for k, g in base.groupby(list(KEY), sort=True)}
    new_groups = {k: g for k, g in new.groupby(list(KEY), sort=True)}
    keys = sorted(set(base_groups) | set(new_groups))
    meta_of = {}
    for key in keys:
        ref = base_groups.get(key) if key in base_groups else new_groups[key]
        meta_of[key] = (str(ref["unit"].iloc[0]), str(ref["direction"].iloc[0]))
    both = [k for k in keys if k in base_groups and k in new_groups]
    series = {k: (independent_values(base_groups[k]), independent_values(new_groups[k])) for k in both}
    mirrors = _mirrors(series, {k: meta_of[k][1] for k in both})
    tested = [k for k in both if k not in mirrors]

    rows: dict = {}
    for key in tested:
        bv, nv = series[key]
        test = stats.permutation_test(bv, nv, resamples=cfg.resamples, statistic=cfg.statistic)
        bs, ns = float(stat(bv)), float(stat(nv))
        rel = (ns - bs) / abs(bs) if isfinite(bs) and isfinite(ns) and bs != 0 else nan
        rows[key] = (bs, ns, rel, test.p_value, cmpstats.min_attainable_p(len(bv), len(nv), cfg.resamples))
    # BH over the metrics that can reach alpha at all (the others are inconclusive whatever happens)
    testable = [k for k in tested if rows[k][4] <= cfg.alpha]
    qs = dict(zip(testable, cmpstats.benjamini_hochberg([rows[k][3] for k in testable])))

    out = []
    verdicts: dict = {}
    for key in keys:
        unit, direction = meta_of[key]
        accel = accelerator_label(key[1], *metas, rows=(base_groups.get(key), new_groups.get(key)))
        effect, source = cfg.min_effect(key)
        if key not in base_groups or key not in new_groups:
            in_base = key in base_groups
            vals = independent_values(base_groups[key] if in_base else new_groups[key])
            value = float(stat(vals))
            out.append(Comparison(*key, unit, direction, len(vals) if in_base else 0, 0 if in_base else len(vals),
                                  value if in_base else nan, nan if in_base else value, nan, nan, nan, nan,
                                  effect * 100.0, source, "", accel, ONLY_BASE if in_base else ONLY_NEW))
            continue
        rep = mirrors.get(key, key)
        bs, ns, rel, p, min_p = rows[rep]
        if key != rep:  # a mirror: its own statistics, its representative's test
            bv, nv = series[key]
            bs, ns = float(stat(bv)), float(stat(nv))
        q = qs.get(rep, nan)
        if rep not in verdicts:
            verdicts[rep] = _raw_verdict(rel, q, min_p, effect, direction, cfg.alpha)
        verdict, reason = verdicts[rep]
        if key != rep:
            reason = f"mirror of {rep[2]}: tested once"
        out.append(Comparison(*key, unit, direction, len(series[key][0]), len(series[key][1]), bs, ns,
                              rel * 100.0 if isfinite(rel) else nan, p, q, min_p, effect * 100.0, source,
                              rep[2] if key != rep else "", accel, verdict, reason))
    return out


def compare_runs(base_dir: str | Path, new_dir: str | Path, cfg: CompareConfig = CompareConfig()):
    """Load both runs and compare them: returns (base_run, new_run, comparisons)."""
    from bench.results import load_run

    base, new = load_run(base_dir), load_run(new_dir)
    return base, new, compare_samples(base.samples, new.samples, cfg, base.meta, new.meta)


VERDICT_ORDER = {VERDICT_SLOWER: 0, VERDICT_FASTER: 1, VERDICT_INCONCLUSIVE: 2, ONLY_NEW: 3, ONLY_BASE: 4,
                 VERDICT_SAME: 5}
COUNTED = (VERDICT_SLOWER, VERDICT_FASTER, VERDICT_INCONCLUSIVE, VERDICT_SAME, ONLY_BASE, ONLY_NEW)


def comparisons_frame(comps: list[Comparison]):
    """One row per comparison, regressions first (what a reader looks for)."""
    import pandas as pd

    ordered = sorted(comps, key=lambda c: VERDICT_ORDER.get(c.verdict, 9))
    return pd.DataFrame([{**asdict(c), "env_label": c.env_label} for c in ordered],
                        columns=[*Comparison.__dataclass_fields__, "env_label"])


def verdict_counts(comps: list[Comparison]) -> dict[str, int]:
    """Verdicts of the de-duplicated metrics (a mirror is not counted twice)."""
    return {v: sum(c.verdict == v and not c.mirror_of for c in comps) for v in COUNTED}


def summary_line(comps: list[Comparison], cfg: CompareConfig) -> str:
    counts = verdict_counts(comps)
    mirrors = sum(bool(c.mirror_of) for c in comps)
    accel = " [TCG: VM figures from emulation]" if any(c.accelerator == "TCG" for c in comps) else ""
    sources = sorted({c.effect_source for c in comps if c.verdict not in (ONLY_BASE, ONLY_NEW)})
    return (f"compare: {len(comps) - mirrors} metrics ({mirrors} mirrors tested once), "
            f"{counts[VERDICT_SLOWER]} slower, {counts[VERDICT_FASTER]} faster, "
            f"{counts[VERDICT_INCONCLUSIVE]} inconclusive, {counts[VERDICT_SAME]} same "
            f"(Benjamini-Hochberg FDR {cfg.alpha:g}, {cfg.statistic}, minimum effects: "
            f"{', '.join(sources) or 'none'}){accel}")


def condition_warnings(base_meta: dict, new_meta: dict) -> list[str]:
    """Differences in run conditions that make a comparison meaningless or suspect."""
    out = []
    for key, what in (("accelerator", "VM accelerator"), ("hostname", "host"), ("cpu_count", "CPU count"),
                      ("kernel", "kernel"), ("profile", "profile")):
        a, b = base_meta.get(key), new_meta.get(key)
        if a is not None and b is not None and a != b:
            out.append(f"{what} differs: base {a}, new {b}")
    loads = [_load(m) for m in (base_meta, new_meta)]
    if None not in loads and abs(loads[0] - loads[1]) >= LOAD_WARNING:
        out.append(f"load average (1 min) differs: base {loads[0]:g}, new {loads[1]:g}: other work on the host "
                   f"moves every figure")
    return out


LOAD_WARNING = 1.0  # runnable tasks: on a 2-core host one more busy task is half the machine


def _load(meta: dict) -> float | None:
    """pyperf's ``load_avg_1min`` as recorded in meta.json's ``system`` (None when absent)."""
    value = (meta.get("system") or {}).get("load_avg_1min") if isinstance(meta.get("system"), dict) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _shown(df):
    from bench.report.tables import fmt_num

    def pct(v):
        return f"{v:+.1f}%" if isfinite(v) else "—"

    def pval(v):
        return f"{v:.3g}" if isfinite(v) else "—"

    return df.assign(
        environment=df["env_label"],
        base=[fmt_num(v) for v in df["base"]], new=[fmt_num(v) for v in df["new"]],
        change=[pct(v) for v in df["change_pct"]], p=[pval(v) for v in df["p_value"]],
        q=[pval(v) for v in df["q_value"]], min_p=[pval(v) for v in df["min_p"]],
        n=[f"{a}/{b}" for a, b in zip(df["n_base"], df["n_new"])],
        min_effect=[f"{v:.1f}% {s[:3]}" if isfinite(v) else "—"
                    for v, s in zip(df["min_effect_pct"], df["effect_source"])],
        note=[r for r in df["reason"]],
    )


def text_table(comps: list[Comparison]) -> str:
    df = comparisons_frame(comps)
    if df.empty:
        return "(no metrics in either run)"
    cols = ["benchmark", "environment", "metric", "unit", "n", "base", "new", "change", "min_effect", "p", "q",
            "verdict", "note"]
    return _shown(df)[cols].to_string(index=False)


def render_compare_html(base, new, comps: list[Comparison], cfg: CompareConfig, out: Path) -> Path:
    """A comparison page (same style as the report) written atomically to ``out``."""
    import datetime as dt

    from markupsafe import Markup

    from bench.report.render import template_env
    from bench.report.tables import style
    from core.fsutil import atomic_write_bytes

    df = comparisons_frame(comps)
    cols = ["benchmark", "environment", "metric", "unit", "direction", "n", "base", "new", "change",
            "min_effect", "p", "q", "min_p", "verdict", "note"]
    shown = _shown(df)[cols] if not df.empty else df
    meta_keys = ("hostname", "kernel", "accelerator", "profile", "started_utc")
    html = template_env().get_template("compare.html.j2").render(
        title=f"isobench compare — {base.path.name} → {new.path.name}",
        base_dir=str(base.path), new_dir=str(new.path),
        base_meta=[(k, str(base.meta.get(k, "?"))) for k in meta_keys],
        new_meta=[(k, str(new.meta.get(k, "?"))) for k in meta_keys],
        warnings=condition_warnings(base.meta, new.meta),
        alpha=cfg.alpha, resamples=cfg.resamples, statistic=cfg.statistic, counts=verdict_counts(comps),
        summary=summary_line(comps, cfg),
        table=Markup(style(shown, "compare", verdict_columns=["verdict"])),
        generated_utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    atomic_write_bytes(out, html.encode("utf-8"))
    return out
