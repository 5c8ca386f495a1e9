"""The report never prints a negative size or ratio (issue 14: "host memory per instance: -0.475 MiB |
-0.707 MiB (x1.49) | 1.22 MiB (x-2.57)"): values inside their noise floor read "< noise (+-x MiB)",
VM figures say TCG, and shared-instance values are counted once."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.report import tables
from bench.report.render import build_context, env_labels, render_report
from bench.results import load_run

FIXTURE = Path(__file__).resolve().parents[2] / "results" / "fixtures" / "quick-tcg"
NEGATIVE = re.compile(r"(?<![\w.])[-−]\d|×[-−]")


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("noise") / "run"
    shutil.copytree(FIXTURE, run)
    return render_report(run).read_text()


def _cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def test_no_negative_size_or_ratio_anywhere_in_the_tables(html):
    bad = [c for c in _cells(html) if NEGATIVE.search(c) and "exit -" not in c]
    assert not bad, bad[:10]


def test_density_inside_its_noise_reads_below_noise(html):
    assert "&lt; noise (±1.9" in html or "&lt; noise (±2" in html
    run = load_run(FIXTURE)
    summary = tables.metric_summary(run.samples, {("footprint", "density_mib_per_instance"): "density_noise_mib"})
    row = tables.lookup(summary, "footprint", "density_mib_per_instance", "container")
    assert row["below_noise"] and row["noise"] > 0 and not (row["ratio_native"] == row["ratio_native"])
    vm = tables.lookup(summary, "footprint", "density_mib_per_instance", "vm")
    assert not vm["below_noise"]                       # 197 MiB per VM is far above its 8 MiB floor
    assert tables.display_value(row).startswith("< noise (±")


def test_a_negative_size_without_companion_is_noise_not_a_size():
    samples = pd.DataFrame([{"benchmark": "footprint", "environment": env, "metric": "shared_mib_per_instance",
                             "value": v, "unit": "MiB", "iteration": i, "direction": "lower",
                             "replicate": f"{env}-{i}", "accelerator": "none"}
                            for env, vals in (("native", (0.01, 0.02, 0.0)), ("container", (-0.19, -0.1, 0.05)))
                            for i, v in enumerate(vals)])
    summary = tables.metric_summary(samples)
    row = tables.lookup(summary, "footprint", "shared_mib_per_instance", "container")
    assert row["below_noise"] and row["noise"] >= 0.1
    assert tables.fmt_ratio(-2.57) == "—" and tables.fmt_ratio(0.0) == "—"
    zero = samples.assign(value=0.0)
    assert not tables.lookup(tables.metric_summary(zero), "footprint", "shared_mib_per_instance", "native")["below_noise"]
    assert tables.ci_text(-3.0, 20.0, "MiB") == "≤ 0 – 20.0"


def test_vm_is_labelled_with_accelerator_and_machine_and_values_count_independent_ones():
    run = load_run(FIXTURE)
    assert env_labels(run.samples, run.meta) == {"vm": "vm (TCG, microvm)"}
    ctx = build_context(run)
    assert "vm (TCG, microvm)" in str(ctx["weight"]) and "· TCG" in str(ctx["weight"])
    cpu = dict(ctx["per_benchmark"])["cpu"]
    assert "vm (TCG)" in str(cpu) and "5 (1 independent)" in str(cpu)


def test_long_evidence_folds_into_details_and_stays_escaped():
    cell = tables.details_html("isolated: " + "<script>x</script> " * 10)
    assert cell.startswith("<details><summary>isolated</summary>") and "<script>" not in cell
    assert tables.details_html("short") == "short"
    assert "<summary>blocked</summary>" in tables.details_html("blocked (own kernel: guest): exit 0: " + "y" * 60)


def test_conditions_say_how_the_vm_cost_rows_were_measured(html):
    assert 'id="conditions"' in html
    assert "3.4x the 300 MiB last-level cache" in html and "one filesystem: like with like" in html
    assert "random order per round (seed 1764169123)" in html
