"""The report's figures (matplotlib, Agg backend), importable by notebooks.

Every ``*_figure`` function takes the loaded run's pieces (samples DataFrame, summary, facts) and
returns a :class:`matplotlib.figure.Figure`, or ``None`` when the run holds nothing to draw, so the
report can say "not measured" instead of drawing an empty axis. :func:`to_png_base64` turns a figure
into the inline image the self-contained page embeds (PNG: no fonts, no namespace URLs, no network).

Figures are built without pyplot on an explicit Agg canvas: no display, no global figure registry
to leak, and a notebook's own backend (inline) is left alone.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report.tables import env_order, fmt_ratio, metric_n

ENV_COLORS = {"native": "#7f7f7f", "container": "#1f77b4", "runc": "#2ca02c", "vm": "#d62728",
              "vm-container": "#9467bd", "vm-container-runc": "#8c564b"}
_FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
PHASE_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
                "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ff7f0e", "#98df8a", "#d62728", "#c5b0d5",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]  # phase names differ per runtime: many colours


def env_color(env: str) -> str:
    """The environment's colour, the same in every run and report (other OCI runtimes, fleet hosts: a
    stable hash of the name; Python's ``hash`` of a str changes per process)."""
    import zlib

    return ENV_COLORS.get(env) or _FALLBACK[zlib.crc32(env.encode()) % len(_FALLBACK)]


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def to_png_base64(fig: Figure, dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- boot / start phases

def _phase_axis(ax, phases: dict, envs: list[str], scale: float, unit: str, title: str,
                labels: dict | None = None) -> None:
    labels_seen: dict[str, str] = {}
    for row, env in enumerate(envs):
        for i, ph in enumerate(phases[env]):
            start, end = float(ph["start_ms"]) / scale, float(ph["end_ms"]) / scale
            color = labels_seen.setdefault(ph["phase"], PHASE_COLORS[len(labels_seen) % len(PHASE_COLORS)])
            ax.barh(row, end - start, left=start, height=0.55, color=color, edgecolor="white",
                    label=ph["phase"])
        total = max(float(p["end_ms"]) for p in phases[env]) / scale
        ax.text(total, row, f"  {total:.3g} {unit}", va="center", fontsize=9)
    ax.set_yticks(range(len(envs)), [(labels or {}).get(e, e) for e in envs])
    ax.invert_yaxis()
    ax.set_xlabel(f"time since create ({unit})")
    ax.set_title(title, fontsize=11)
    ax.margins(x=0.18)
    handles, names = ax.get_legend_handles_labels()
    uniq = dict(zip(names, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=9, loc="upper center", bbox_to_anchor=(0.5, 0.0),
              borderaxespad=3.0,  # a fixed gap below the axis label, whatever the axis height
              ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)


def phases_figure(facts: dict, labels: dict | None = None) -> Figure | None:
    """VM boot-phase waterfall (seconds) beside the container start phases (milliseconds)."""
    phases = {env: ph for env, ph in (facts.get("phases") or {}).items() if ph}
    if not phases:
        return None
    boots = [e for e in env_order(phases) if e == "vm" or e.endswith(" cold")]  # "vm-container cold": boot included
    vm_envs = boots
    ct_envs = [e for e in env_order(phases) if e not in boots]
    panels = [(ct_envs, 1.0, "ms", "container start phases"), (vm_envs, 1000.0, "s", "VM boot phases")]
    panels = [p for p in panels if p[0]]
    fig, axes = _new_figure(12, 1.2 + 0.6 * max(len(p[0]) for p in panels) + 1.2, ncols=len(panels))
    for ax, (envs, scale, unit, title) in zip(axes, panels):
        _phase_axis(ax, phases, envs, scale, unit, title, labels)
    fig.suptitle("Start-up phases (host-side timestamps)", fontsize=12)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- start-up distributions

_TIME_TO_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3}


def _human_ms(value: float, _pos=None) -> str:
    if value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g} ms"


def startup_figure(samples: pd.DataFrame, benchmark: str = "startup", labels: dict | None = None) -> Figure | None:
    """Every start-up value per environment (log scale: ms for containers, seconds for VMs)."""
    part = samples[(samples["benchmark"] == benchmark) & ~samples["metric"].str.startswith("phase.")]
    metrics = list(dict.fromkeys(part["metric"]))
    if not metrics:
        return None
    fig, axes = _new_figure(5.5 * len(metrics), 4.0, ncols=len(metrics))
    rng = np.random.default_rng(0)  # jitter only; fixed so the picture is stable
    for ax, metric in zip(axes, metrics):
        m = part[part["metric"] == metric]
        envs = env_order(m["environment"].unique())
        unit = str(m["unit"].iloc[0])
        scale = _TIME_TO_MS.get(unit)  # times are drawn in ms with human tick labels (10 ms, 5 s)
        data = [m.loc[m["environment"] == e, "value"].to_numpy(dtype=float) * (scale or 1.0) for e in envs]
        box = ax.boxplot(data, positions=range(len(envs)), widths=0.5, showfliers=False,
                         patch_artist=True, medianprops={"color": "black"})
        for patch, env in zip(box["boxes"], envs):
            patch.set_facecolor(env_color(env))
            patch.set_alpha(0.25)
        for i, (vals, env) in enumerate(zip(data, envs)):
            ax.scatter(i + rng.uniform(-0.12, 0.12, vals.size), vals, s=14, color=env_color(env), zorder=3)
        ax.set_xticks(range(len(envs)), [(labels or {}).get(e, e) for e in envs])
        if all(v.size and v.min() > 0 for v in data):
            ax.set_yscale("log")
        if scale:
            ax.yaxis.set_major_formatter(FuncFormatter(_human_ms))
            ax.yaxis.set_minor_formatter(NullFormatter())
            unit = "time"
        ax.set_ylabel(f"{unit}, log scale" if ax.get_yscale() == "log" else unit)
        ax.set_title(metric, fontsize=11)
        ax.grid(axis="y", alpha=0.3, which="both")
    fig.suptitle("Start-up time distributions (every value)", fontsize=12)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- overhead bars

def overhead_figure(summary: pd.DataFrame, exclude_benchmarks: tuple[str, ...] = (),
                    env_labels: dict | None = None, exclude_metrics: tuple[str, ...] = ()) -> Figure | None:
    """Cost factor against native per metric and environment, with bootstrap 95% CIs.

    The factor is direction-aware so that right = worse everywhere: env/native for lower-is-better
    metrics, native/env for higher-is-better ones."""
    part = summary[(summary["environment"] != "native") & summary["ratio_native"].notna()
                   & ~summary["benchmark"].isin(exclude_benchmarks)
                   & ~summary["metric"].isin(exclude_metrics)].copy()
    part = part[np.isfinite(part["ratio_native"]) & (part["ratio_native"] > 0)]
    if part.empty:
        return None
    higher = part["direction"] == "higher"
    part["factor"] = np.where(higher, 1.0 / part["ratio_native"], part["ratio_native"])
    lo = np.where(higher, 1.0 / part["ratio_ci_high"], part["ratio_ci_low"])
    hi = np.where(higher, 1.0 / part["ratio_ci_low"], part["ratio_ci_high"])
    # an interval reaching zero or below (a noisy memory delta) has no place on a log axis: no bar
    usable = (part["ratio_ci_low"] > 0) & (part["ratio_ci_high"] > 0)
    part["err_lo"] = np.where(usable, np.clip(part["factor"] - lo, 0, None), 0.0)
    part["err_hi"] = np.where(usable, np.clip(hi - part["factor"], 0, None), 0.0)
    labels = list(dict.fromkeys(part["benchmark"] + " · " + part["metric"]))
    envs = env_order(part["environment"].unique())
    height = 0.8 / len(envs)
    fig, axes = _new_figure(11, 0.9 + 0.42 * len(labels) * max(1, len(envs)) * 0.55 + 0.8)
    ax = axes[0]
    for j, env in enumerate(envs):
        e = part[part["environment"] == env]
        ys = [labels.index(f"{b} · {m}") + (j - (len(envs) - 1) / 2) * height
              for b, m in zip(e["benchmark"], e["metric"])]
        err = np.nan_to_num(np.vstack([e["err_lo"].to_numpy(), e["err_hi"].to_numpy()]))
        # bars grow from 1 (= native) so a better-than-native metric points left, a worse one right
        ax.barh(ys, e["factor"] - 1.0, left=1.0, height=height, color=env_color(env),
                label=(env_labels or {}).get(env, env))
        ax.errorbar(e["factor"], ys, xerr=err, fmt="none", elinewidth=0.8, capsize=2, ecolor="#333")
        for y, f, el, eh in zip(ys, e["factor"], err[0], err[1]):
            if f >= 1:
                ax.text(f + eh, y, f" {fmt_ratio(f)}", va="center", ha="left", fontsize=7, color="#333")
            else:
                ax.text(f - el if f - el > 0 else f, y, f"{fmt_ratio(f)} ", va="center", ha="right",
                        fontsize=7, color="#333")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"×{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.08)
    ax.set_xlabel("cost factor vs native (1 = same as native, >1 = worse; log scale)")
    # the figure is long: the legend sits above and below the bars, where the eye starts and ends
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(envs), fontsize=10, frameon=False)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(envs), fontsize=10, frameon=False)
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.set_title("Overhead against native, 95% bootstrap CI", fontsize=12, pad=28)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


# ---------------------------------------------------------------- footprint vs instances

PREFERRED_FOOTPRINT = ("accounted_mib_per_instance", "mem_delta_per_instance_mib", "pss_per_instance_mib")


def footprint_figure(samples: pd.DataFrame, benchmark: str = "footprint", labels: dict | None = None) -> Figure | None:
    """Host memory per instance and in total against the number of instances running."""
    part = samples[samples["benchmark"] == benchmark]
    rows = []
    for metric, g in part.groupby("metric"):
        parsed = metric_n(metric)
        if not parsed:
            continue
        for env, ge in g.groupby("environment"):
            rows.append({"base": parsed[0], "n": parsed[1], "environment": env,
                         "median": float(ge["value"].median()), "unit": str(ge["unit"].iloc[0])})
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values("n")
    bases = list(dict.fromkeys(df["base"]))
    base = next((b for b in PREFERRED_FOOTPRINT if b in bases), bases[0])
    df = df[df["base"] == base]
    unit = df["unit"].iloc[0]
    fig, (ax1, ax2) = _new_figure(11, 3.8, ncols=2)
    for env in env_order(df["environment"].unique()):
        e = df[df["environment"] == env]
        label = (labels or {}).get(env, env)
        ax1.plot(e["n"], e["median"], marker="o", color=env_color(env), label=label)
        ax2.plot(e["n"], e["median"] * e["n"], marker="o", color=env_color(env), label=label)
    positive = bool((df["median"] > 0).all())  # a noisy host-memory delta can come out negative
    for ax, what in ((ax1, f"per instance ({unit})"), (ax2, f"total for N instances ({unit})")):
        ax.set_xlabel("N instances running")
        ax.set_ylabel(what + (", log scale" if positive else ", symmetric log scale"))
        if positive:
            ax.set_yscale("log")
        else:  # log-like for the VM's hundreds of MiB, linear through zero for the containers' noise
            ax.set_yscale("symlog", linthresh=1.0)
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(sorted(df["n"].unique()))
        ax.grid(alpha=0.3, which="both")
    ax1.set_title(f"{base}: per instance", fontsize=11)
    ax2.set_title("total host memory", fontsize=11)
    # one legend under both panels: inside an axis it would cover the lines it explains
    handles, names = ax1.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=10, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
