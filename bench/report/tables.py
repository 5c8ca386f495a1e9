"""The report's tables as pandas DataFrames, and their pandas Stylers.

Two families: the per-metric statistics (generic over whatever benchmarks and metrics a run holds)
and the course-notes tables (Weight & Performance, Isolation, Ephemeral nature, Port mapping,
Running across systems), which map the notes' rows to measured metrics and facts. That mapping is
the one fixed list here; a metric the run does not have shows as "not measured" rather than
breaking the page. HTML comes only from ``Styler.to_html()`` (cell text escaped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import isfinite

import pandas as pd

from bench.report import stats
from bench.results import ENVIRONMENTS
from core.units import format_bytes

NOT_MEASURED = "not measured"
BREAKOUT = "breakout:"  # isolation facts keys of the breakout probes (bench/workloads/isolation.py)
FAILED = "failed (see Failed benchmarks)"
NAMESPACES = {  # facts key -> the course notes' wording
    "pid": "Process IDs (PIDs)",
    "hostname": "Hostnames",
    "network": "Network stacks",
    "user": "User IDs (UIDs)",
    "ipc": "Inter-process communication (IPC)",
    "filesystem": "File systems",
}
SUMMARY_COLUMNS = ["benchmark", "metric", "environment", "unit", "direction", "n", "n_independent", "accelerator",
                   "median", "ci_low", "ci_high", "cv_pct", "noise", "below_noise", "ratio_native", "ratio_ci_low",
                   "ratio_ci_high"]
SIZE_UNITS = {"MiB", "KiB", "GiB", "bytes", "B"}
CORE_ENVIRONMENTS = ("native", "container", "runc", "vm")   # every run has these; others are opt-in
# metric -> its noise-floor metric, for runs that predate facts.json "noise_metrics"
DEFAULT_NOISE = {("footprint", "density_mib_per_instance"): "density_noise_mib"}
_N_SUFFIX = re.compile(r"^(?P<base>.+)_n(?P<n>\d+)$")


# ---------------------------------------------------------------- formatting helpers

def fmt_num(value) -> str:
    """Human precision: 3 significant digits but never scientific notation for big numbers."""
    if value is None or not isinstance(value, (int, float)) or not isfinite(value):
        return "—"
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_value(value, unit: str) -> str:
    if value is None or not isinstance(value, (int, float)) or not isfinite(value):
        return NOT_MEASURED
    if unit in ("bytes", "B"):
        return format_bytes(value)
    if unit == "ms" and abs(value) >= 1000:
        return f"{value / 1000:.2f} s"
    if unit == "s" and abs(value) < 1:
        return f"{fmt_num(value * 1000)} ms"
    if unit == "us" and abs(value) >= 1000:
        return fmt_value(value / 1000, "ms")
    return f"{fmt_num(value)} {unit}".strip()


def fmt_ratio(value) -> str:
    """×1.23; "—" for no ratio, and for a zero or negative one (a quotient of noise, not a cost)."""
    if value is None or not isinstance(value, (int, float)) or not isfinite(value) or value <= 0:
        return "—"
    return f"×{fmt_num(value)}"


def fmt_noise(noise, unit: str) -> str:
    return f"< noise (±{fmt_value(noise, unit) if isfinite(noise) else '?'})"


def display_value(hit: dict) -> str:
    """A summary row's median as shown: "< noise (±x MiB)" when it is inside its noise floor."""
    if hit.get("below_noise"):
        return fmt_noise(float(hit.get("noise", float("nan"))), str(hit.get("unit", "")))
    return fmt_value(hit.get("median"), str(hit.get("unit", "")))


def env_order(envs) -> list[str]:
    """Known environments in their canonical order, then any others alphabetically."""
    envs = list(dict.fromkeys(envs))
    return [e for e in ENVIRONMENTS if e in envs] + sorted(e for e in envs if e not in ENVIRONMENTS)


def failed_pairs(failures) -> set[tuple[str, str]]:
    return {(str(f.get("benchmark")), str(f.get("environment"))) for f in failures or [] if isinstance(f, dict)}


def _absent(failed: set, benchmark: str, env: str) -> str:
    """What an empty cell says: the benchmark failed there, or it simply was not run."""
    return FAILED if (benchmark, env) in failed else NOT_MEASURED


def metric_n(metric: str) -> tuple[str, int] | None:
    """``mem_delta_per_instance_mib_n8`` -> (``mem_delta_per_instance_mib``, 8)."""
    m = _N_SUFFIX.match(metric)
    return (m["base"], int(m["n"])) if m else None


# ---------------------------------------------------------------- per-metric statistics

def noise_floor(groups: dict, key: tuple[str, str, str], unit: str, median: float, ci: tuple[float, float],
                noise_metrics: dict) -> tuple[float, bool]:
    """(noise, below?) of one (benchmark, metric, environment). A metric with a noise companion is
    below when its median is under the companion's median; a size whose median is zero or negative
    is below a floor of its own spread (a memory delta cannot be negative, only noisy)."""
    bench, metric, env = key
    companion = noise_metrics.get((bench, metric))
    if companion is not None and (bench, companion, env) in groups:
        noise = float(groups[(bench, companion, env)]["value"].median())
        return noise, bool(median < noise)
    spread = max([abs(v) for v in (median, *ci) if isfinite(v)], default=0.0)
    if unit in SIZE_UNITS and isfinite(median) and median <= 0 and spread > 0:
        return spread, True    # an exact 0 every time (native has no cgroup of its own) is a plain 0
    return float("nan"), False


def metric_summary(samples: pd.DataFrame, noise_metrics: dict | None = None) -> pd.DataFrame:
    """One row per (benchmark, metric, environment): n values and n independent ones (distinct
    replicates: values read in one instance count once), median, bootstrap 95% CI of the median,
    coefficient of variation, noise floor and the ratio of medians to native (with a bootstrap CI;
    none when either side is inside its noise floor)."""
    rows = []
    if samples.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    noise_metrics = {**DEFAULT_NOISE, **(noise_metrics or {})}
    groups = {k: g for k, g in samples.groupby(["benchmark", "metric", "environment"], sort=False)}
    summaries = {k: stats.summarize(g["value"]) for k, g in groups.items()}
    floors = {k: noise_floor(groups, k, str(g["unit"].iloc[0]), summaries[k].median,
                             (summaries[k].ci_low, summaries[k].ci_high), noise_metrics) for k, g in groups.items()}
    for (bench, metric, env), g in groups.items():
        s = summaries[(bench, metric, env)]
        noise, below = floors[(bench, metric, env)]
        native = groups.get((bench, metric, "native"))
        native_below = floors.get((bench, metric, "native"), (0, False))[1]
        ratio = rlo = rhi = float("nan")
        if native is not None and env != "native" and not (below or native_below):
            nat_median = summaries[(bench, metric, "native")].median
            if nat_median and isfinite(nat_median):
                ratio = s.median / nat_median
                rlo, rhi = stats.bootstrap_ratio_ci(g["value"], native["value"])
        elif env == "native":
            ratio = 1.0
        reps = g["replicate"] if "replicate" in g else g.index.to_series()
        accel = ", ".join(sorted(set(map(str, g["accelerator"])))) if "accelerator" in g else ""
        rows.append({"benchmark": bench, "metric": metric, "environment": env,
                     "unit": str(g["unit"].iloc[0]), "direction": str(g["direction"].iloc[0]),
                     "n": s.n, "n_independent": int(reps[g["value"].notna()].nunique()), "accelerator": accel,
                     "median": s.median, "ci_low": s.ci_low, "ci_high": s.ci_high,
                     "cv_pct": s.cv_pct, "noise": noise, "below_noise": below,
                     "ratio_native": ratio, "ratio_ci_low": rlo, "ratio_ci_high": rhi})
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    order = {e: i for i, e in enumerate(env_order(df["environment"]))}
    df["_env"] = df["environment"].map(order)
    return df.sort_values(["benchmark", "metric", "_env"], kind="stable").drop(columns="_env") \
             .reset_index(drop=True)


def lookup(summary: pd.DataFrame, benchmark: str, metric: str, environment: str) -> dict | None:
    hit = summary[(summary["benchmark"] == benchmark) & (summary["metric"] == metric)
                  & (summary["environment"] == environment)]
    return None if hit.empty else hit.iloc[0].to_dict()


def ci_text(low: float, high: float, unit: str) -> str:
    """``1.2 – 3.4``; a size interval reaching below zero starts at "≤ 0" (sizes are never negative)."""
    if not isfinite(low):
        return "—"
    lo = "≤ 0" if unit in SIZE_UNITS and low < 0 else fmt_num(low)
    return f"{lo} – {fmt_num(high)}"


def env_label(env: str, accelerator: str = "") -> str:
    """``vm (TCG)`` when the VM ran under emulation; other environments by name."""
    accels = [a for a in str(accelerator).split(", ") if a and a != "none"]
    return f"{env} ({', '.join(a.upper() for a in accels)})" if accels else env


def values_text(n: int, n_independent: int) -> str:
    """``5`` when every value came from its own instance, else ``5 (1 independent)``."""
    return str(n) if n_independent >= n else f"{n} ({n_independent} independent)"


def benchmark_table(summary: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """The displayed per-metric table of one benchmark (strings, ready for a Styler)."""
    part = summary[summary["benchmark"] == benchmark]
    out = []
    for r in part.to_dict("records"):
        better = "lower" if r["direction"] == "lower" else "higher"
        ci = ci_text(r["ci_low"], r["ci_high"], r["unit"]) if not r["below_noise"] else "—"
        median = fmt_noise(r["noise"], r["unit"]) if r["below_noise"] else fmt_num(r["median"])
        out.append({"metric": r["metric"], "environment": env_label(r["environment"], r.get("accelerator", "")),
                    "unit": f"{r['unit']} ({better} better)", "median": median,
                    "95% CI of median": ci,
                    "CV %": fmt_num(r["cv_pct"]) if isfinite(r["cv_pct"]) else "—",
                    "ratio to native": fmt_ratio(r["ratio_native"]) if r["environment"] != "native" else "1",
                    "values": values_text(int(r["n"]), int(r.get("n_independent", r["n"])))})
    return pd.DataFrame(out, columns=["metric", "environment", "unit", "median", "95% CI of median",
                                      "CV %", "ratio to native", "values"])


# ---------------------------------------------------------------- course notes: weight & performance

@dataclass(frozen=True)
class NotesRow:
    aspect: str
    measure: str
    benchmark: str
    metric: tuple[str, ...]  # alternatives, first present wins; "<base>_n*" picks the largest N
    notes_containers: str
    notes_vms: str


WEIGHT_ROWS = (
    NotesRow("Size", "on-disk size", "footprint", ("disk_bytes", "size_on_disk_mib"), "Lightweight",
             "Heavy (full OS)"),
    NotesRow("Startup", "create → exit", "startup", ("create_to_exit_s", "create_to_exit_ms"), "Seconds", "Minutes"),
    NotesRow("Startup", "create → first HTTP reply", "startup", ("create_to_http_s", "create_to_http_ms"), "Seconds", "Minutes"),
    NotesRow("Resources", "host memory per instance, N instances (processes + kernel + shared helpers)",
             "footprint", ("accounted_mib_per_instance_n*", "pss_per_instance_mib"), "Efficient", "High overhead"),
    NotesRow("Resources", "host memory per instance (slope of MemAvailable)", "footprint",
             ("density_mib_per_instance", "mem_delta_per_instance_mib_n*"), "Efficient", "High overhead"),
    NotesRow("Resources", "instances started per second", "footprint", ("instances_per_s",),
             "Efficient", "High overhead"),
    NotesRow("Resources", "CPU throughput, 1 CPU", "cpu", ("events_per_s_1t", "events_per_s_1cpu"), "Efficient", "High overhead"),
    NotesRow("Resources", "CPU throughput, all CPUs", "cpu", ("events_per_s_all", "events_per_s_allcpu"), "Efficient",
             "High overhead"),
    NotesRow("Resources", "memory bandwidth, sequential", "memory", ("bandwidth_mib_s",), "Efficient", "High overhead"),
    NotesRow("Resources", "memory, random reads over 4× the last-level cache (TLB / nested paging)", "memory",
             ("random_read_mib_s",), "Efficient", "High overhead"),
    NotesRow("Resources", "system calls (write to /dev/null)", "syscalls", ("write_calls_per_s",), "Efficient",
             "High overhead"),
    NotesRow("Resources", "disk, random 4 KiB reads, direct I/O (own disk; native: host directory)", "disk",
             ("layer_randread_mib_s", "volume_randread_mib_s"), "Efficient", "High overhead"),
    NotesRow("Resources", "disk, sequential 1 MiB writes, direct I/O (own disk; native: host directory)", "disk",
             ("layer_seqwrite_mib_s", "volume_seqwrite_mib_s"), "Efficient", "High overhead"),
)


def _resolve_metric(summary: pd.DataFrame, benchmark: str, metrics: tuple[str, ...], env: str | None = None) -> str:
    """The first alternative the run has (``_n*``: the largest N present), in ``env`` when given;
    else the first name."""
    rows = summary[summary["benchmark"] == benchmark]
    if env is not None:
        rows = rows[rows["environment"] == env]
    present = set(rows["metric"].unique())
    for metric in metrics:
        if metric.endswith("_n*"):
            base = metric[:-3]
            ns = [p[1] for m in present if (p := metric_n(m)) and p[0] == base]
            if ns:
                return f"{base}_n{max(ns)}"
        elif metric in present:
            return metric
    return metrics[0]


def weight_performance(summary: pd.DataFrame, facts: dict, failures: list | None = None) -> pd.DataFrame:
    failed = failed_pairs(failures)
    sizes = facts.get("sizes") or {}
    # the four core environments always, plus any that was measured, sized or only failed (an OCI runtime
    # that cannot run here still gets its column); an opt-in environment that was not asked for gets none
    ran = set(summary["environment"]) | {e for _, e in failed if e != "*"} | set(sizes)
    envs = env_order(list(CORE_ENVIRONMENTS) + sorted(ran))
    rows = []
    for spec in WEIGHT_ROWS:
        metric = _resolve_metric(summary, spec.benchmark, spec.metric)
        measure = spec.measure.replace("N instances", f"{metric_n(metric)[1]} instances") \
            if metric_n(metric) else spec.measure.replace(", N instances", "")
        row = {"aspect": spec.aspect, "measured as": measure,
               "course notes: containers / VMs": f"{spec.notes_containers} / {spec.notes_vms}"}
        medians = {}
        for env in envs:
            # per environment the first alternative it has (disk: native has only the host directory)
            hit = lookup(summary, spec.benchmark, _resolve_metric(summary, spec.benchmark, spec.metric, env), env)
            # facts.sizes says what was counted, per environment: it wins over a size metric
            if spec.aspect == "Size" and isinstance(sizes.get(env), dict) and "bytes" in sizes[env]:
                hit = {"median": float(sizes[env].get("bytes", float("nan"))), "unit": "bytes"}
            if hit is None:
                row[env] = _absent(failed, spec.benchmark, env)
                continue
            row[env] = display_value(hit)
            if not hit.get("below_noise"):
                medians[env] = hit["median"]
        for env in envs:
            if env != "native" and env in medians and medians.get("native"):
                row[env] += f" ({fmt_ratio(medians[env] / medians['native'])})"
        vm, ct = medians.get("vm"), medians.get("container")
        row["VM ÷ container"] = fmt_ratio(vm / ct) if vm is not None and ct else "—"
        rows.append(row)
    if sizes:
        rows.append({"aspect": "Size", "measured as": "what was counted",
                     "course notes: containers / VMs": "", **{env: str(sizes.get(env, {}).get("what", NOT_MEASURED))
                                          for env in envs}, "VM ÷ container": ""})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- course notes: isolation

def namespace_matrix(facts: dict) -> pd.DataFrame:
    """Rows: the notes' namespaces; columns: environments; cell: verdict + evidence."""
    iso = facts.get("isolation") or {}
    envs = env_order(iso.keys())
    rows = []
    for key, label in NAMESPACES.items():
        row = {"namespace": label}
        for env in envs:
            cell = (iso.get(env) or {}).get(key)
            if cell is None:
                row[env] = NOT_MEASURED
            else:
                verdict = "isolated" if cell.get("isolated") else "shared with host"
                row[env] = f"{verdict}: {cell.get('evidence', '')}".rstrip(": ")
        rows.append(row)
    # namespaces the harness measured beyond the notes' list (e.g. cgroup, time)
    extra = sorted({k for env in iso.values() for k in (env or {}) if k not in NAMESPACES
                    and not k.startswith(BREAKOUT)})
    for key in extra:
        row = {"namespace": key}
        for env in envs:
            cell = (iso.get(env) or {}).get(key)
            row[env] = NOT_MEASURED if cell is None else \
                f"{'isolated' if cell.get('isolated') else 'shared with host'}: {cell.get('evidence', '')}"
        rows.append(row)
    rows += breakout_rows(iso, envs)
    return pd.DataFrame(rows, columns=["namespace", *envs])


def breakout_rows(iso: dict, envs: list[str]) -> list[dict]:
    """The security area's breakout probes (``breakout:<probe>`` keys): blocked / NOT blocked / not run,
    in the order the harness wrote them, then a count of blocked probes per environment."""
    names = list(dict.fromkeys(k for env in envs for k in (iso.get(env) or {}) if k.startswith(BREAKOUT)))
    rows, counts = [], {env: [0, 0] for env in envs}
    for key in names:
        desc = next((c.get("description") for env in envs if (c := (iso.get(env) or {}).get(key))), None)
        row = {"namespace": f"breakout probe {key[len(BREAKOUT):]}" + (f": {desc}" if desc else "")}
        for env in envs:
            cell = (iso.get(env) or {}).get(key)
            if cell is None:
                row[env] = NOT_MEASURED
                continue
            ev = str(cell.get("evidence", ""))
            if cell.get("isolated") is None:
                row[env] = ev if ev.startswith(("not run", "skipped")) else f"not run: {ev}"
                continue
            counts[env][0] += bool(cell["isolated"])
            counts[env][1] += 1
            row[env] = ev if ev.startswith(("blocked", "NOT blocked")) else \
                f"{'blocked' if cell['isolated'] else 'NOT blocked'}: {ev}"
        rows.append(row)
    if names:
        rows.append({"namespace": "breakout probes blocked",
                     **{env: f"{b}/{n} run" if n else "none run" for env, (b, n) in counts.items()}})
    return rows


def _fmt_any(value) -> str:
    return fmt_num(value) if isinstance(value, (int, float)) or value is None else str(value)


def enforcement_table(facts: dict) -> pd.DataFrame:
    rows = []
    for e in facts.get("enforcement") or []:
        asked, measured = e.get("asked"), e.get("measured")
        acc = (measured / asked) if isinstance(asked, (int, float)) and asked and \
            isinstance(measured, (int, float)) else float("nan")
        rows.append({"environment": e.get("environment", "?"), "limit": e.get("limit", "?"),
                     "asked": _fmt_any(asked), "measured": _fmt_any(measured), "unit": e.get("unit", ""),
                     "measured ÷ asked": fmt_ratio(acc), "held": "held" if e.get("held") else "NOT held",
                     "held by": e.get("cgroup", ""), "evidence": e.get("evidence", "")})
    return pd.DataFrame(rows, columns=["environment", "limit", "asked", "measured", "unit",
                                       "measured ÷ asked", "held", "held by", "evidence"])


# ---------------------------------------------------------------- course notes: ephemerality

def _survived(value) -> str:
    return {True: "survived", False: "lost", None: "not tested"}.get(value, str(value))


def ephemerality_table(facts: dict) -> pd.DataFrame:
    eph = facts.get("ephemerality") or {}
    rows = [{"environment": env, "file written, no volume": _survived(eph[env].get("without_volume_survived")),
             "file written to a volume": _survived(eph[env].get("with_volume_survived")),
             "evidence": eph[env].get("evidence", "")} for env in env_order(eph.keys())]
    return pd.DataFrame(rows, columns=["environment", "file written, no volume", "file written to a volume",
                                       "evidence"])


# ---------------------------------------------------------------- course notes: port mapping

PORT_COST_METRICS = (  # (column, alternatives): the cost shown beside each mapping
    ("requests/s through it", ("http_requests_per_s", "http_req_s")),
    ("p50 latency", ("http_p50_ms",)),
    ("bulk throughput", ("tcp_gbit_s", "iperf3_gbit_s")),
)


def port_mapping_table(facts: dict, summary: pd.DataFrame | None = None, benchmark: str = "network",
                       failures: list | None = None) -> pd.DataFrame:
    """host:PORT → target:PORT per environment, with what traffic through it measured (× native)."""
    failed = failed_pairs(failures)
    rows = []
    for p in facts.get("port_mapping") or []:
        env = p.get("environment", "?")
        row = {"environment": env, "protocol": p.get("protocol", "tcp"), "host": p.get("host", "?"),
               "→": "→", "target": p.get("target", "?")}
        for column, metrics in PORT_COST_METRICS:
            hit = None
            if summary is not None:
                hit = next((h for m in metrics if (h := lookup(summary, benchmark, m, env))), None)
            row[column] = _absent(failed, benchmark, env) if hit is None else \
                f"{fmt_value(hit['median'], hit['unit'])} ({fmt_ratio(hit['ratio_native'])} native)"
        rows.append(row)
    return pd.DataFrame(rows, columns=["environment", "protocol", "host", "→", "target",
                                       *[c for c, _ in PORT_COST_METRICS]])


def port_mapping_cost(summary: pd.DataFrame, benchmark: str = "network") -> pd.DataFrame:
    """Network metrics per environment, with the ratio to native (loopback, no mapping) as the cost."""
    part = summary[summary["benchmark"] == benchmark]
    envs = env_order(part["environment"].unique())
    rows = []
    for metric, g in part.groupby("metric", sort=False):
        unit = str(g["unit"].iloc[0])
        direction = str(g["direction"].iloc[0])
        row = {"metric": metric, "unit": f"{unit} ({direction} better)"}
        for env in envs:
            hit = lookup(summary, benchmark, metric, env)
            if hit is None:
                row[env] = NOT_MEASURED
            elif env == "native":
                row[env] = fmt_num(hit["median"])
            else:
                row[env] = f"{fmt_num(hit['median'])} ({fmt_ratio(hit['ratio_native'])})"
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "unit", *envs])


# ---------------------------------------------------------------- course notes: running across systems

# what the Windows/macOS row quotes from the vm-container environment (containers inside a Linux VM)
VM_CONTAINER_FIGURES = (  # (label, benchmark, metric)
    ("start-up, VM already up", "startup", "create_to_exit_s"),
    ("start-up, cold (VM boot included)", "startup", "cold_create_to_exit_s"),
    ("first HTTP response through host -> VM -> container", "startup", "create_to_http_s"),
    ("CPU, 1 thread", "cpu", "events_per_s_1t"),
    ("memory bandwidth", "memory", "bandwidth_mib_s"),
    ("HTTP requests/s through the port", "network", "http_requests_per_s"),
    ("QEMU PSS per idle container (largest N)", "footprint", "pss_mib_per_instance"),
    ("host memory per extra container (MemAvailable slope)", "footprint", "density_mib_per_instance"),
)


def vm_container_figures(summary: pd.DataFrame | None, accel: str, env: str = "vm-container") -> str:
    """Measured figures of containers inside this host's Linux VM (``env``: vm-container with isobench's
    runtime, vm-container-runc with runc), each median with its ratio to native, labelled with the
    accelerator (TCG: emulated, far slower than a real Docker Desktop VM)."""
    if summary is None or summary.empty or not (summary["environment"] == env).any():
        return f"{NOT_MEASURED} (isobench bench --env {env})"
    parts = []
    for label, benchmark, metric in VM_CONTAINER_FIGURES:
        hit = lookup(summary, benchmark, metric, env)
        if hit is None:
            continue
        text = fmt_value(hit["median"], hit["unit"])
        if isfinite(hit.get("ratio_native", float("nan"))):
            text += f" ({fmt_ratio(hit['ratio_native'])} native)"
        parts.append(f"{label} {text}")
    label = "TCG: emulated VM" if accel == "tcg" else accel.upper()
    return f"measured here [{env}, {label}]: " + "; ".join(parts)


def platform_table(facts: dict, meta: dict, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    plat = facts.get("platform") or {}
    accel = meta.get("accelerator") or "unknown"
    host = f"this host: {plat.get('os', 'Linux')}, kernel {plat.get('kernel') or meta.get('kernel', '?')}"
    rows = [
        {"platform": "Linux", "containers (course notes)": "Native kernel support",
         "VMs": "hypervisor (KVM)"},
        {"platform": "Windows/macOS", "containers (course notes)": "Linux VM required", "VMs": "hypervisor"},
        {"platform": "Windows/macOS, as run here: containers in a Linux VM",
         "containers (course notes)": vm_container_figures(summary, accel),
         "VMs": plat.get("vm_container_execution", "")},
    ]
    if summary is not None and not summary.empty and (summary["environment"] == "vm-container-runc").any():
        rows.append({"platform": "Windows/macOS, as run here: runc in a Linux VM",
                     "containers (course notes)": vm_container_figures(summary, accel, "vm-container-runc"),
                     "VMs": plat.get("vm_container_runc_execution", "")})
    rows += [
        {"platform": host,
         "containers (course notes)": plat.get("container_execution", NOT_MEASURED),
         "VMs": f"{plat.get('vm_execution', NOT_MEASURED)} [accelerator: {accel}]"},
    ]
    # how each environment of this run executed (meta.execution, when the harness records it)
    execution = meta.get("execution") or {}
    for env in env_order(execution.keys()):
        info = execution[env]
        text = info.get("execution", "") if isinstance(info, dict) else str(info)
        target = "VMs" if env in ("vm", "vm-container", "vm-container-runc") else "containers (course notes)"
        row = {"platform": f"this host: {env}", "containers (course notes)": "", "VMs": ""}
        row[target] = text
        rows.append(row)
    return pd.DataFrame(rows)


def failures_table(failures: list) -> pd.DataFrame:
    return pd.DataFrame([{"benchmark": f.get("benchmark", "?"), "environment": f.get("environment", "?"),
                          "error": f.get("error", "")} for f in failures or []],
                        columns=["benchmark", "environment", "error"])


# ---------------------------------------------------------------- styling (pandas Styler only)

_TABLE_CSS = [
    {"selector": "th", "props": "text-align:left;"},
]


def _base_styler(df: pd.DataFrame, table_id: str):
    return (df.style.hide(axis="index")
            .format(escape="html", na_rep="—")
            .set_uuid(table_id)
            .set_table_attributes('class="data"')
            .set_table_styles(_TABLE_CSS))


_GOOD = {"held", "lost", "faster", "pass"}
_BAD = {"NOT held", "survived", "slower", "FAIL", "missing", FAILED}


def _cell_class(value) -> str:
    text = str(value).split(" · ")[0]
    if text in (NOT_MEASURED, "not tested", "skipped"):
        return "color:#888;font-style:italic;"
    if text.startswith(("not run", "skipped")):
        return "color:#888;font-style:italic;"
    if text.startswith(("isolated", "blocked")) or text in _GOOD:
        return "background-color:#e3f4e1;"
    if text.startswith(("shared with host", "NOT blocked")) or text in _BAD:
        return "background-color:#fbe3d6;"
    return ""


def _expect_kept(value) -> str:
    """For the volume column: surviving is what the notes promise."""
    return {"survived": "background-color:#e3f4e1;", "lost": "background-color:#fbe3d6;"}.get(
        str(value), _cell_class(value))


DETAILS_AFTER_CHARS = 48   # longer cells fold into <details>: the table keeps its width, the text stays


def details_html(value) -> str:
    """A long cell as ``<details><summary>head</summary>full text</details>`` (escaped here: the
    Styler's own escaping is off for these columns). ``verdict: evidence`` cells keep the verdict as the
    summary; other long text shows its start."""
    from markupsafe import escape

    text = str(value)
    if len(text) <= DETAILS_AFTER_CHARS:
        return str(escape(text))
    colon, paren = text.find(": "), text.find(" (")
    if 0 < paren < colon:        # "blocked (own kernel: ...): exit 0: ..." -> "blocked", all of it inside
        head, rest = text[:paren], text
    elif 0 < colon <= DETAILS_AFTER_CHARS:   # "isolated: evidence" -> "isolated", the evidence inside
        head, rest = text[:colon], text[colon + 2:]
    else:
        cut = text.rfind(" ", 0, DETAILS_AFTER_CHARS)
        head, rest = text[:cut if cut > 20 else DETAILS_AFTER_CHARS] + " …", text
    return f"<details><summary>{escape(head)}</summary>{escape(rest)}</details>"


def style(df: pd.DataFrame, table_id: str, *, verdict_columns: list[str] | None = None,
          wrap_columns: list[str] | None = None, kept_columns: list[str] | None = None,
          wrap_min_width: str = "12em", details_columns: list[str] | None = None,
          labels: dict[str, str] | None = None, tag_columns: dict[str, str] | None = None) -> str:
    """HTML of one table: escaped cells, verdict colouring, long-text columns allowed to wrap, long
    evidence folded into ``<details>``. ``kept_columns`` invert the survived/lost colours (a volume
    should keep data). ``labels`` rename environment columns and ``environment`` cells (``vm`` ->
    ``vm (TCG, microvm)``); ``tag_columns`` append a tag to every measured cell of a column (each VM
    figure says TCG)."""
    labels = labels or {}
    df = df.copy()
    for col, tag in (tag_columns or {}).items():
        if col in df.columns:
            # figures only (a number or "< noise"): labels such as "what was counted" stay as they are
            df[col] = [f"{v} · {tag}" if str(v)[:1].isdigit() or str(v).startswith("<") else v for v in df[col]]
    if "environment" in df.columns:
        df["environment"] = [labels.get(str(e), str(e)) for e in df["environment"]]
    df = df.rename(columns=labels)

    def cols(names):
        return [c for c in dict.fromkeys(labels.get(n, n) for n in names or []) if c in df.columns]

    st = _base_styler(df, table_id)
    if kept_columns and cols(kept_columns) and not df.empty:
        st = st.map(_expect_kept, subset=cols(kept_columns))
    if verdict_columns and cols(verdict_columns) and not df.empty:
        st = st.map(_cell_class, subset=cols(verdict_columns))
    if wrap_columns and cols(wrap_columns) and not df.empty:
        st = st.set_properties(subset=cols(wrap_columns), **{"white-space": "normal", "min-width": wrap_min_width})
    if details_columns and cols(details_columns) and not df.empty:
        st = st.format(details_html, subset=cols(details_columns), escape=None, na_rep="—")
    return st.to_html()
