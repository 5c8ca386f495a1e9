"""The report of a fleet run (``isobench report FLEET_DIR``): the hosts side by side.

One machine's report answers "containers vs VMs here"; this page answers "and on which machine": per
host its status (and why it is missing when it failed or was unreachable), the conditions that decide
how containers and VMs run there (kernel, cgroup layout, VM accelerator, CPU), and every metric's
median and ratio to native per environment in one column per host. Each host's full report is
rendered beside its run (``FLEET/<host>/report.html``) and linked; ``isobench compare FLEET/a
FLEET/b`` tests two hosts against each other.
"""

from __future__ import annotations

import datetime as dt
from math import isfinite
from pathlib import Path

import pandas as pd

from bench.fleetresults import Fleet, load_fleet
from bench.report import tables
from bench.report.render import _figure, _table, render_report, template_env

STATUS_TEXT = {"ok": "ok", "failed": "FAILED", "unreachable": "UNREACHABLE", "interrupted": "interrupted"}


def _host_cell(host: dict) -> str:
    status = str(host.get("status", "?"))
    text = STATUS_TEXT.get(status, status)
    if status != "ok":
        task = host.get("task")
        text += f" in '{task}': " if task else ": "
        text += str(host.get("reason") or "no reason recorded")
    return text


def systems_table(fleet: Fleet) -> pd.DataFrame:
    """Running across systems: one column per inventory host, one row per condition."""
    rows: dict[str, dict[str, str]] = {}

    def put(aspect: str, host: str, value) -> None:
        rows.setdefault(aspect, {})[host] = "" if value is None else str(value)

    for h in fleet.hosts:
        name = str(h.get("name"))
        put("status", name, _host_cell(h))
        put("address", name, h.get("address", "?"))
        run = fleet.runs.get(name)
        if run is None:
            continue
        meta, plat = run.meta or {}, (run.facts or {}).get("platform") or {}
        accel = meta.get("accelerator") or "unknown"
        reason = meta.get("accelerator_reason")
        put("hostname (as the host reports it)", name, meta.get("hostname", "?"))
        put("OS", name, plat.get("os", tables.NOT_MEASURED))
        put("CPU", name, f"{meta.get('cpu_model', '?')}, {meta.get('cpu_count', '?')} CPUs")
        put("kernel", name, meta.get("kernel", "?"))
        put("cgroup layout", name, meta.get("cgroup_version", "?"))
        put("VM accelerator", name, f"{accel} ({reason})" if reason else accel)
        put("containers execute", name, plat.get("container_execution", tables.NOT_MEASURED))
        put("VMs execute", name, plat.get("vm_execution", tables.NOT_MEASURED))
        put("runc", name, tables_version(meta, "runc"))
        put("qemu", name, tables_version(meta, "qemu"))
        put("profile", name, meta.get("profile", "?"))
        put("run (UTC)", name, f"{meta.get('started_utc', '?')} → {meta.get('finished_utc', '?')}")
        put("values", name, len(run.samples))
        put("failed benchmarks", name, len(run.failures or []))
        put("fleet time (copy, setup, bench, fetch)", name, f"{h.get('seconds', '?')} s")
    names = [str(h.get("name")) for h in fleet.hosts]
    return pd.DataFrame([{"": aspect, **{n: vals.get(n, "—") for n in names}} for aspect, vals in rows.items()],
                        columns=["", *names])


def tables_version(meta: dict, tool: str) -> str:
    from bench.report.render import short_version

    v = (meta.get("versions") or {}).get(tool)
    return short_version(v) if v else "not recorded"


def summaries(fleet: Fleet) -> dict[str, pd.DataFrame]:
    return {name: tables.metric_summary(run.samples) for name, run in fleet.runs.items()}


def ratios_table(sums: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per benchmark, metric and environment: each host's median with its ratio to that host's
    native median, and how far apart the hosts are (largest ÷ smallest median)."""
    keys: list[tuple[str, str, str, str]] = []
    cells: dict[tuple, dict[str, str]] = {}
    spread: dict[tuple, list[float]] = {}
    for host, df in sums.items():
        for r in df.itertuples(index=False):
            key = (r.benchmark, r.metric, r.environment, r.unit)
            if key not in cells:
                keys.append(key)
                cells[key] = {}
            text = tables.fmt_value(r.median, r.unit)
            if r.environment != "native" and isinstance(r.ratio_native, float) and isfinite(r.ratio_native):
                text += f" ({tables.fmt_ratio(r.ratio_native)})"
            cells[key][host] = text
            if isinstance(r.median, float) and isfinite(r.median) and r.median > 0:
                spread.setdefault(key, []).append(r.median)
    rows = []
    for key in keys:
        b, m, env, _unit = key
        vals = spread.get(key, [])
        rows.append({"benchmark": b, "metric": m, "environment": env,
                     **{h: cells[key].get(h, tables.NOT_MEASURED) for h in sums},
                     "hosts max ÷ min": tables.fmt_ratio(max(vals) / min(vals)) if len(vals) > 1 else "—"})
    return pd.DataFrame(rows, columns=["benchmark", "metric", "environment", *sums, "hosts max ÷ min"])


def ratio_figure(sums: dict[str, pd.DataFrame]):
    """Ratio to native per (metric, environment), one bar per host: the same overhead, host by host."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [df.assign(host=h) for h, df in sums.items() if not df.empty]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    df = df[(df["environment"] != "native") & df["ratio_native"].apply(lambda v: isinstance(v, float) and isfinite(v))]
    if df.empty:
        return None
    df = df.assign(label=df["benchmark"] + "." + df["metric"] + "\n" + df["environment"])
    labels = list(dict.fromkeys(df["label"]))
    hosts = list(sums)
    width = 0.8 / max(1, len(hosts))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) * max(1, len(hosts)) ** 0.5), 3.6))
    for i, host in enumerate(hosts):
        sub = df[df["host"] == host].set_index("label")["ratio_native"]
        xs = [j + (i - (len(hosts) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, [float(sub.get(lab, float("nan"))) for lab in labels], width, label=host)
    ax.axhline(1.0, color="#555", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("median ÷ native median")
    ax.legend(title="host", fontsize=8)
    fig.tight_layout()
    return fig


def build_context(fleet: Fleet) -> dict:
    sums = summaries(fleet)
    info = fleet.info
    hosts = fleet.hosts
    n_ok = sum(h.get("status") == "ok" for h in hosts)
    return {
        "title": f"isobench fleet report — {len(hosts)} hosts",
        "fleet_dir": str(fleet.path),
        "generated_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "info": {"inventory": info.get("inventory", "?"), "mode": info.get("mode", "?"),
                 "bench": "isobench bench " + " ".join(info.get("bench_args") or []),
                 "run": f"{info.get('started_utc', '?')} → {info.get('finished_utc', '?')}",
                 "controller": ", ".join(f"{k} {v}" for k, v in (info.get("controller") or {}).items())},
        "n_ok": n_ok,
        "hosts": [{"name": str(h.get("name")), "status": str(h.get("status")), "text": _host_cell(h),
                   "has_report": str(h.get("name")) in fleet.runs} for h in hosts],
        "any_tcg": any(str((r.meta or {}).get("accelerator", "")).lower() == "tcg" for r in fleet.runs.values()),
        "systems": _table("fleet systems", lambda: systems_table(fleet), wrap_columns=[str(h.get("name")) for h in hosts]),
        "ratios": _table("fleet ratios", lambda: ratios_table(sums)),
        "figure": _figure("fleet-ratios", "Ratio to native, host by host",
                          "Each environment's median ÷ the same host's native median, per metric; one bar "
                          "per host. Ratios compare hosts fairly where absolute figures reflect different "
                          "CPUs.", lambda: ratio_figure(sums)),
        "compare_hint": _compare_hint(fleet),
        "n_samples": int(len(fleet.samples)),
    }


def _compare_hint(fleet: Fleet) -> str:
    names = list(fleet.runs)
    if len(names) < 2:
        return ""
    return f"isobench compare {fleet.path / names[0]} {fleet.path / names[1]}"


def render_fleet_report(fleet_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render every host's own report, then the fleet page (``FLEET/report.html`` or ``out``)."""
    from core.fsutil import atomic_write_bytes

    fleet = load_fleet(fleet_dir)
    for name in fleet.runs:
        render_report(fleet.path / name)
    html = template_env().get_template("fleet.html.j2").render(**build_context(fleet))
    target = Path(out) if out else fleet.path / "report.html"
    atomic_write_bytes(target, html.encode("utf-8"))
    return target
