"""Is NEW worse than BASE? Per (benchmark, environment, metric), a permutation test on the raw
samples plus a minimum relative effect, as Firecracker's A/B tests do.

Why both: with enough values a permutation test flags differences far too small to matter (a 0.5%
shift on a quiet machine), and a bare threshold flags noise. A change counts only when it is both
statistically significant (p < alpha) and at least ``threshold`` of the base value. Verdicts are
direction-aware: "slower" means worse in the metric's own direction (more ms, fewer events/s),
"faster" means better. Any "slower" makes ``isobench compare`` exit 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import isfinite, nan
from pathlib import Path

from bench.report import stats

VERDICT_FASTER, VERDICT_SLOWER, VERDICT_SAME = "faster", "slower", "same"
ONLY_BASE, ONLY_NEW = "only in base", "only in new"
KEY = ("benchmark", "environment", "metric")


@dataclass(frozen=True)
class CompareConfig:
    threshold: float = 0.05       # minimum relative effect (fraction of the base statistic)
    alpha: float = 0.01           # significance level of the permutation test
    resamples: int = 10_000       # random relabellings when exact enumeration is larger
    statistic: str = "mean"       # mean or median, for both the test and the relative change


@dataclass(frozen=True)
class Comparison:
    benchmark: str
    environment: str
    metric: str
    unit: str
    direction: str
    n_base: int
    n_new: int
    base: float
    new: float
    change_pct: float
    p_value: float
    verdict: str

    @property
    def regression(self) -> bool:
        return self.verdict == VERDICT_SLOWER


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


def _verdict(base: float, new: float, p: float, direction: str, cfg: CompareConfig) -> tuple[float, str]:
    if not (isfinite(base) and isfinite(new)) or base == 0:
        return nan, VERDICT_SAME
    rel = (new - base) / abs(base)
    if not (isfinite(p) and p < cfg.alpha and abs(rel) >= cfg.threshold):
        return rel * 100.0, VERDICT_SAME
    worse = rel > 0 if direction == "lower" else rel < 0
    return rel * 100.0, VERDICT_SLOWER if worse else VERDICT_FASTER


def compare_samples(base, new, cfg: CompareConfig = CompareConfig()) -> list[Comparison]:
    """Compare two samples DataFrames (columns of :data:`bench.results.SAMPLE_COLUMNS`)."""
    stat = stats.STATISTICS[cfg.statistic]
    base_groups = {k: g for k, g in base.groupby(list(KEY), sort=True)}
    new_groups = {k: g for k, g in new.groupby(list(KEY), sort=True)}
    out = []
    for key in sorted(set(base_groups) | set(new_groups)):
        b, n = base_groups.get(key), new_groups.get(key)
        ref = b if b is not None else n
        unit, direction = str(ref["unit"].iloc[0]), str(ref["direction"].iloc[0])
        if b is None or n is None:
            only = ONLY_NEW if b is None else ONLY_BASE
            vals = ref["value"].to_numpy(dtype=float)
            out.append(Comparison(*key, unit, direction, 0 if b is None else len(b), 0 if n is None else len(n),
                                  nan if b is None else float(stat(vals)), nan if n is None else float(stat(vals)),
                                  nan, nan, only))
            continue
        bv, nv = b["value"].to_numpy(dtype=float), n["value"].to_numpy(dtype=float)
        test = stats.permutation_test(bv, nv, resamples=cfg.resamples, statistic=cfg.statistic)
        bs, ns = float(stat(bv)), float(stat(nv))
        change, verdict = _verdict(bs, ns, test.p_value, direction, cfg)
        out.append(Comparison(*key, unit, direction, len(bv), len(nv), bs, ns, change, test.p_value, verdict))
    return out


def compare_runs(base_dir: str | Path, new_dir: str | Path, cfg: CompareConfig = CompareConfig()):
    """Load both runs and compare them: returns (base_run, new_run, comparisons)."""
    from bench.results import load_run

    base, new = load_run(base_dir), load_run(new_dir)
    return base, new, compare_samples(base.samples, new.samples, cfg)


VERDICT_ORDER = {VERDICT_SLOWER: 0, VERDICT_FASTER: 1, ONLY_NEW: 2, ONLY_BASE: 3, VERDICT_SAME: 4}


def comparisons_frame(comps: list[Comparison]):
    """One row per comparison, regressions first (what a reader looks for)."""
    import pandas as pd

    ordered = sorted(comps, key=lambda c: VERDICT_ORDER.get(c.verdict, 9))
    return pd.DataFrame([asdict(c) for c in ordered], columns=list(Comparison.__dataclass_fields__))


def condition_warnings(base_meta: dict, new_meta: dict) -> list[str]:
    """Differences in run conditions that make a comparison meaningless or suspect."""
    out = []
    for key, what in (("accelerator", "VM accelerator"), ("hostname", "host"), ("cpu_count", "CPU count"),
                      ("kernel", "kernel"), ("profile", "profile")):
        a, b = base_meta.get(key), new_meta.get(key)
        if a is not None and b is not None and a != b:
            out.append(f"{what} differs: base {a}, new {b}")
    return out


def text_table(comps: list[Comparison]) -> str:
    from bench.report.tables import fmt_num

    df = comparisons_frame(comps)
    if df.empty:
        return "(no metrics in either run)"
    shown = df.assign(
        base=[fmt_num(v) for v in df["base"]], new=[fmt_num(v) for v in df["new"]],
        change=[f"{v:+.1f}%" if isfinite(v) else "—" for v in df["change_pct"]],
        p=[f"{v:.4f}" if isfinite(v) else "—" for v in df["p_value"]],
        n=[f"{a}/{b}" for a, b in zip(df["n_base"], df["n_new"])],
    )[["benchmark", "environment", "metric", "unit", "n", "base", "new", "change", "p", "verdict"]]
    return shown.to_string(index=False)


def render_compare_html(base, new, comps: list[Comparison], cfg: CompareConfig, out: Path) -> Path:
    """A comparison page (same style as the report) written atomically to ``out``."""
    import datetime as dt

    from markupsafe import Markup

    from bench.report.render import template_env
    from bench.report.tables import fmt_num, style
    from core.fsutil import atomic_write_bytes

    df = comparisons_frame(comps)
    shown = df.assign(
        base=[fmt_num(v) for v in df["base"]], new=[fmt_num(v) for v in df["new"]],
        change=[f"{v:+.1f}%" if isfinite(v) else "—" for v in df["change_pct"]],
        p=[f"{v:.4f}" if isfinite(v) else "—" for v in df["p_value"]],
    )[["benchmark", "environment", "metric", "unit", "direction", "n_base", "n_new", "base", "new", "change",
       "p", "verdict"]]
    counts = {v: int((df["verdict"] == v).sum()) if not df.empty else 0
              for v in (VERDICT_SLOWER, VERDICT_FASTER, VERDICT_SAME, ONLY_BASE, ONLY_NEW)}
    html = template_env().get_template("compare.html.j2").render(
        title=f"isobench compare — {base.path.name} → {new.path.name}",
        base_dir=str(base.path), new_dir=str(new.path),
        base_meta=[(k, str(base.meta.get(k, "?"))) for k in ("hostname", "kernel", "accelerator", "profile",
                                                            "started_utc")],
        new_meta=[(k, str(new.meta.get(k, "?"))) for k in ("hostname", "kernel", "accelerator", "profile",
                                                          "started_utc")],
        warnings=condition_warnings(base.meta, new.meta),
        threshold_pct=cfg.threshold * 100.0, alpha=cfg.alpha, resamples=cfg.resamples,
        statistic=cfg.statistic, counts=counts,
        table=Markup(style(shown, "compare", verdict_columns=["verdict"])),
        generated_utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    atomic_write_bytes(out, html.encode("utf-8"))
    return out
