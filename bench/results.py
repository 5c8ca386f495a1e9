"""The on-disk format of one benchmark run, shared by the harness (writer) and report/compare/check
(readers). Changing a column here changes it for everyone.

A run directory ``results/<UTC time>-<host>/`` holds:

- ``samples.csv``: the tidy table, one row per measured value, columns :data:`SAMPLE_COLUMNS`
  (``benchmark, environment, metric, value, unit, iteration, direction, replicate, accelerator``;
  direction is ``lower`` or ``higher`` = which is better). Warm-up values are not written.
  ``replicate`` names the instance (container, runc container, VM boot) a value came from: values
  that share one are not independent, and :func:`independent_counts` counts them as one.
  ``accelerator`` is ``tcg`` or ``kvm`` for VM rows (``none`` elsewhere): a TCG figure is emulation.
- ``<environment>.json``: a pyperf BenchmarkSuite per environment (benchmark name
  ``<benchmark>.<metric>``), readable by ``python -m pyperf stats`` / ``compare_to``.
- ``meta.json``: host and run conditions (:data:`META_KEYS`), image digests, profile, timestamps.
- ``facts.json``: non-numeric findings keyed by benchmark: isolation matrix with evidence, ephemerality
  outcomes, enforcement asked-vs-measured, VM and container phase breakdowns, port mappings.
- ``failures.json``: list of ``{benchmark, environment, error}`` for benchmarks that failed.
- ``logs/``: per-benchmark logs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

SAMPLE_COLUMNS = ("benchmark", "environment", "metric", "value", "unit", "iteration", "direction", "replicate",
                  "accelerator")
# runs written before replicate/accelerator existed stay readable: load_run fills them (see _fill_optional)
REQUIRED_COLUMNS = SAMPLE_COLUMNS[:7]
ENVIRONMENTS = ("native", "container", "runc", "vm", "vm-container", "vm-container-runc")
META_KEYS = ("hostname", "cpu_model", "cpu_count", "kernel", "cgroup_version", "accelerator",
             "accelerator_reason", "versions", "image_digests", "profile", "started_utc", "finished_utc",
             "python")


@dataclass(frozen=True)
class Sample:
    benchmark: str
    environment: str
    metric: str
    value: float
    unit: str
    iteration: int
    direction: Literal["lower", "higher"]
    replicate: str = ""          # the instance/boot the value came from ("" = its own, named by iteration)
    accelerator: str = "none"    # VM rows: tcg or kvm


@dataclass
class Run:
    """A loaded run. ``samples`` is a pandas DataFrame with :data:`SAMPLE_COLUMNS`."""

    path: Path
    samples: Any
    meta: dict
    facts: dict
    failures: list


def append_samples(run_dir: Path, samples: list[Sample]) -> None:
    """Append rows to samples.csv (header written once). Called after every iteration so a Ctrl-C
    leaves a valid partial run."""
    path = run_dir / "samples.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(SAMPLE_COLUMNS)
        for s in samples:
            w.writerow([s.benchmark, s.environment, s.metric, repr(float(s.value)), s.unit, s.iteration,
                        s.direction, s.replicate or f"{s.environment}-{s.iteration}", s.accelerator])


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory into pandas (the loader the report, compare, check and notebooks use)."""
    import pandas as pd

    from core.errors import BenchError

    path = Path(run_dir).resolve()
    csv_path = path / "samples.csv"
    if not csv_path.exists():
        raise BenchError(f"{path}: not a run directory (no samples.csv)")
    samples = pd.read_csv(csv_path)
    missing = [c for c in REQUIRED_COLUMNS if c not in samples.columns]
    if missing:
        raise BenchError(f"{csv_path}: missing columns {', '.join(missing)}")

    def _json(name: str, default: Any) -> Any:
        p = path / name
        if not p.exists():
            return default
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise BenchError(f"{p}: invalid JSON ({exc})") from exc

    meta = _json("meta.json", {})
    return Run(path=path, samples=_fill_optional(samples, meta), meta=meta, facts=_json("facts.json", {}),
               failures=_json("failures.json", []))


def _fill_optional(samples, meta: dict):
    """Older runs: every value its own replicate; VM rows carry the run's accelerator."""
    if "replicate" not in samples.columns:
        samples["replicate"] = samples["environment"].astype(str) + "-" + samples["iteration"].astype(str)
    if "accelerator" not in samples.columns:
        vm_accel = str(meta.get("accelerator") or "unknown").lower()
        samples["accelerator"] = [vm_accel if e == "vm" else "none" for e in samples["environment"]]
    samples["replicate"] = samples["replicate"].astype(str)
    samples["accelerator"] = samples["accelerator"].fillna("none").astype(str)
    return samples


def independent_counts(samples):
    """``(benchmark, metric, environment) -> number of independent values`` (distinct replicates): the n
    a statistic may use. Five values read inside one VM boot count as one."""
    if samples.empty:
        return {}
    counts = samples.groupby(["benchmark", "metric", "environment"], sort=False)["replicate"].nunique()
    return {k: int(v) for k, v in counts.items()}


def sample_dict(s: Sample) -> dict:
    return asdict(s)
