"""Assembles ``report.html``: one self-contained page (inline CSS, plots as base64 PNG, no URLs).

The page is a Jinja2 template (autoescaped, strict about undefined names) fed with tables that
pandas Stylers rendered; nothing here concatenates HTML. A run that lacks a benchmark still renders:
every section says "not measured" for what is missing, so partial runs stay readable.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from bench.report import plots, tables
from bench.results import Run, load_run

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    caption: str
    png_base64: str | None   # None: nothing measured to draw (or a problem)
    problem: str | None = None


def template_env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


# A facts.json written by a newer or buggy harness must not cost the whole page: a section whose
# input has an unexpected shape shows the error in place (visible, not swallowed) and the rest renders.
MALFORMED = (KeyError, TypeError, AttributeError, ValueError, IndexError)


def _table(what: str, build, **style_kw) -> Markup:
    """One table through :func:`tables.style`; a malformed input shows its problem in place."""
    import pandas as pd

    try:
        df = build()
    except MALFORMED as exc:
        df = pd.DataFrame([{"problem": f"could not read {what}: {type(exc).__name__}: {exc}"}])
        style_kw = {}
    return Markup(tables.style(df, what.replace(".", "-").replace(" ", "-"), **style_kw))


def _figure(key: str, title: str, caption: str, draw) -> Figure:
    try:
        fig = draw()
    except MALFORMED as exc:
        return Figure(key, title, caption, None, f"could not draw: {type(exc).__name__}: {exc}")
    return Figure(key, title, caption, plots.to_png_base64(fig) if fig is not None else None)


_VERSION = re.compile(r"\d+(?:\.\d+)+[\w.+~-]*")
_BANNER_KEYS = {"hostname", "cpu_model", "cpu_count", "kernel", "cgroup_version", "accelerator",
                "accelerator_reason", "profile", "started_utc", "finished_utc", "python", "versions",
                "image_digests", "execution", "round_orders", "workload_seconds", "system"}
# pyperf's system metadata (meta.json "system") shown in the banner
_SYSTEM_KEYS = (("cpu_freq", "CPU frequency"), ("cpu_config", "CPU config"), ("load_avg_1min", "load avg 1 min (start)"),
                ("aslr", "ASLR"), ("boot_time", "host booted"))


def short_version(text: str) -> str:
    """``QEMU emulator version 7.2.22 (Debian ...)`` -> ``7.2.22``; the full text stays as a tooltip."""
    m = _VERSION.search(str(text))
    return m.group(0) if m else str(text)


def _banner(meta: dict) -> list[tuple[str, str]]:
    accel = str(meta.get("accelerator") or "unknown")
    reason = meta.get("accelerator_reason")
    items = [
        ("host", f"{meta.get('hostname', '?')} — {meta.get('cpu_model', '?')}, {meta.get('cpu_count', '?')} CPUs"),
        ("kernel", str(meta.get("kernel", "?"))),
        ("cgroup version", str(meta.get("cgroup_version", "?"))),
        ("VM accelerator", f"{accel} ({reason})" if reason else accel),
        ("profile", str(meta.get("profile", "?"))),
        ("run", f"{meta.get('started_utc', '?')} → {meta.get('finished_utc', '?')}"),
        ("python", str(meta.get("python", "?"))),
    ]
    system = meta.get("system") if isinstance(meta.get("system"), dict) else {}
    items += [(label, str(system[key])) for key, label in _SYSTEM_KEYS if key in system]
    # run conditions the harness records beyond the agreed keys (interleaving, batching, ...)
    for key, value in meta.items():
        if key in _BANNER_KEYS or isinstance(value, dict):
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        items.append((key.replace("_", " "), text))
    return items


def env_labels(samples, meta: dict) -> dict[str, str]:
    """Column labels: an environment that ran in a VM says how (``vm (TCG, microvm)``), from the
    samples' accelerator column (the run's accelerator for older runs' ``vm``) and, for ``vm``, the
    machine type QEMU really used."""
    out = {}
    machine = meta.get("vm_machine") or ((meta.get("execution") or {}).get("vm") or {}).get("machine")
    for env in dict.fromkeys(samples["environment"]):
        rows = samples[samples["environment"] == env]
        accels = sorted({str(a) for a in rows["accelerator"]} - {"none", "nan"}) if "accelerator" in rows else []
        if env == "vm" and not accels:
            accels = [str(meta.get("accelerator") or "unknown")]
        parts = [", ".join(a.upper() for a in accels)] if accels else []
        if env == "vm" and machine and not str(machine).startswith(("not booted", "microvm (requested")):
            parts.append(str(machine))
        if parts:
            out[env] = f"{env} ({', '.join(parts)})"
    return out


def noise_metrics(facts: dict) -> dict[tuple[str, str], str]:
    """facts.json ``noise_metrics`` (``"bench.metric": "noise_metric"``) as (bench, metric) -> noise metric."""
    out = {}
    for key, noise in (facts.get("noise_metrics") or {}).items():
        bench, _, metric = str(key).partition(".")
        out[(bench, metric)] = str(noise)
    return out


def conditions(facts: dict, meta: dict) -> list[str]:
    """How the VM-cost rows were measured, from facts.json: the random-read working set against the
    last-level cache, the storage under each environment's disk test, the order and independence."""
    out = []
    ws = facts.get("memory_working_set")
    if isinstance(ws, dict) and ws.get("what"):
        out.append(f"memory, random reads: {ws['what']}")
    storage = facts.get("disk_storage")
    if isinstance(storage, dict) and storage:
        parts = [f"{k}: {v.get('fstype', '?')} on {v.get('source', v.get('device', '?'))}"
                 for k, v in storage.items() if isinstance(v, dict)]
        same = len({(v.get("device"), v.get("fstype")) for v in storage.values() if isinstance(v, dict)}) == 1
        out.append("disk, direct I/O: " + "; ".join(parts) + (" (one filesystem: like with like)" if same else
                                                              " (different filesystems: compare with care)"))
    if meta.get("order_seed") is not None:
        out.append(f"environments in a random order per round (seed {meta['order_seed']}), "
                   f"idle gap {meta.get('idle_gap_s', 0)} s; VM tool values: {meta.get('vm_batching', '?')}")
    return out


def build_context(run: Run) -> dict:
    """Everything the template shows, computed from a loaded run."""
    meta, facts = run.meta or {}, run.facts or {}
    summary = tables.metric_summary(run.samples, noise_metrics(facts))
    labels = env_labels(run.samples, meta)
    tcg = {env: "TCG" for env, label in labels.items() if "TCG" in label}   # every emulated figure says so
    benchmarks = list(dict.fromkeys(summary["benchmark"]))
    per_benchmark = [(b, _table(f"metric {b}", lambda b=b: tables.benchmark_table(summary, b)))
                     for b in benchmarks]
    versions = meta.get("versions") or {}
    figures = {
        "phases": _figure("phases", "Boot and start phases",
                          "Where the time goes between create and the workload running: the VM's boot "
                          "phases (seconds) beside the container runtimes' start phases (milliseconds).",
                          lambda: plots.phases_figure(facts, labels)),
        "startup": _figure("startup", "Start-up distributions",
                           "Every measured start-up value per environment (box: quartiles; log scale).",
                           lambda: plots.startup_figure(run.samples, labels=labels)),
        "footprint": _figure("footprint", "Footprint vs number of instances",
                             "Host memory per instance and in total as more instances run at once.",
                             lambda: plots.footprint_figure(run.samples, labels=labels)),
        "overhead": _figure("overhead", "Cost factor per metric",
                            "Cost factor of each environment against native per metric "
                            "(direction-aware: right of 1 is worse), with bootstrap 95% CIs of the "
                            "ratio of medians.",
                            lambda: plots.overhead_figure(
                                summary, env_labels=labels,
                                exclude_metrics=tuple({*noise_metrics(facts).values(), *tables.DEFAULT_NOISE.values()}))),
    }
    accel = str(meta.get("accelerator") or "").lower()
    return {
        "title": f"isobench report — {meta.get('hostname', run.path.name)}",
        "run_dir": str(run.path),
        "generated_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "is_fixture": str(meta.get("profile", "")).lower() == "fixture",
        "is_tcg": accel == "tcg",
        "accelerator": accel or "unknown",
        "banner": _banner(meta),
        "conditions": conditions(facts, meta),
        "versions": sorted((str(k), short_version(v), str(v)) for k, v in versions.items()),
        "image_digests": sorted((str(k), str(v)) for k, v in (meta.get("image_digests") or {}).items()),
        "weight": _table("weight", lambda: tables.weight_performance(summary, facts, run.failures),
                         verdict_columns=list(tables.ENVIRONMENTS),
                         wrap_columns=[*tables.ENVIRONMENTS, "measured as", "course notes: containers / VMs"],
                         wrap_min_width="6em", labels=labels, tag_columns=tcg),
        "namespaces": _table("facts.isolation", lambda: tables.namespace_matrix(facts),
                             verdict_columns=list(tables.ENVIRONMENTS), wrap_columns=list(tables.ENVIRONMENTS),
                             wrap_min_width="6em", details_columns=list(tables.ENVIRONMENTS), labels=labels),
        "has_isolation": bool(facts.get("isolation")),
        "enforcement": _table("facts.enforcement", lambda: tables.enforcement_table(facts),
                              verdict_columns=["held"], wrap_columns=["evidence"], details_columns=["evidence"],
                              labels=labels),
        "has_enforcement": bool(facts.get("enforcement")),
        "ephemerality": _table("facts.ephemerality", lambda: tables.ephemerality_table(facts),
                               verdict_columns=["file written, no volume"],
                               kept_columns=["file written to a volume"], wrap_columns=["evidence"],
                               details_columns=["evidence"], labels=labels),
        "has_ephemerality": bool(facts.get("ephemerality")),
        "port_mapping": _table("facts.port_mapping",
                               lambda: tables.port_mapping_table(facts, summary, failures=run.failures),
                               verdict_columns=[c for c, _ in tables.PORT_COST_METRICS], labels=labels,
                               wrap_columns=[c for c, _ in tables.PORT_COST_METRICS], wrap_min_width="8em"),
        "has_port_mapping": bool(facts.get("port_mapping")),
        "port_cost": _table("network metrics", lambda: tables.port_mapping_cost(summary), labels=labels,
                            tag_columns=tcg),
        "has_port_cost": bool((summary["benchmark"] == "network").any()),
        "platform": _table("facts.platform", lambda: tables.platform_table(facts, meta, summary),
                           wrap_columns=["containers (course notes)", "VMs"]),
        "per_benchmark": per_benchmark,
        "failures": _table("failures.json", lambda: tables.failures_table(run.failures), wrap_columns=["error"],
                           details_columns=["error"], labels=labels),
        "n_failures": len(run.failures or []),
        "n_samples": int(len(run.samples)),
        "figures": figures,
    }


def render_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``RUN_DIR/report.html`` (or ``out``) and return its path."""
    run = load_run(run_dir)
    html = template_env().get_template("report.html.j2").render(**build_context(run))
    target = Path(out) if out else run.path / "report.html"
    from core.fsutil import atomic_write_bytes

    atomic_write_bytes(target, html.encode("utf-8"))
    return target
