"""report.html from the committed fixture: course-notes tables, numbers, banner, TCG warning,
self-contained (no URLs), and robust to partial runs."""

import json
import re
import shutil
from pathlib import Path

import pytest

from bench.report import tables
from bench.report.render import render_report
from bench.results import load_run

FIXTURE = Path(__file__).resolve().parents[2] / "results" / "fixtures" / "quick-tcg"


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    render_report(FIXTURE, out)
    return out.read_text()


def test_sections_and_course_note_tables(html):
    for anchor in ("weight", "isolation", "ephemeral", "ports", "platforms", "overhead", "metrics", "failures"):
        assert f'id="{anchor}"' in html
    for label in ("Process IDs (PIDs)", "Hostnames", "Network stacks", "User IDs (UIDs)",
                  "Inter-process communication (IPC)", "File systems"):
        assert label in html
    assert "127.0.0.1:18080" in html and "10.88.0.5:80" in html
    assert "Windows/macOS" in html and "Linux VM required" in html


def test_measured_numbers_present(html):
    run = load_run(FIXTURE)
    s = run.samples
    vm = s[(s.benchmark == "startup") & (s.environment == "vm") & (s.metric == "create_to_exit_s")]["value"]
    assert len(vm) == 10 and tables.fmt_value(float(vm.median()), "s") in html  # e.g. "6.02 s"
    ct = s[(s.benchmark == "startup") & (s.environment == "container") & (s.metric == "create_to_exit_s")]["value"]
    assert tables.fmt_value(float(ct.median()), "s").endswith(" ms")
    assert tables.fmt_value(float(ct.median()), "s") in html  # e.g. "9.23 ms"
    cpu = s[(s.benchmark == "cpu") & (s.environment == "native") & (s.metric == "events_per_s_1cpu")]["value"]
    assert tables.fmt_num(float(cpu.median())) in html
    assert "95% CI of median" in html and "CV %" in html and "ratio to native" in html
    assert "fio randread in vm" in html  # failures.json shown


def test_banner_warning_fixture_notice(html):
    assert 'id="banner"' in html and "6.18.44-fc-v669" in html and "v1 (hybrid)" in html
    assert "runc 1.1.5+ds1" in html and "qemu 7.2.22" in html
    assert 'id="tcg-warning"' in html and "software emulation" in html
    assert 'id="fixture-notice"' in html


def test_self_contained(html):
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 4
    assert "{{" not in html and "{%" not in html


def test_partial_run_renders_and_escapes(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    (run_dir / "facts.json").unlink()
    meta = json.loads((run_dir / "meta.json").read_text())
    meta.update(accelerator="kvm", profile="quick", hostname="<script>alert(1)</script>")
    (run_dir / "meta.json").write_text(json.dumps(meta))
    lines = (run_dir / "samples.csv").read_text().splitlines()
    (run_dir / "samples.csv").write_text("\n".join(l for l in lines if not l.startswith("footprint")) + "\n")
    out = render_report(run_dir)
    assert out == run_dir.resolve() / "report.html"
    page = out.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert 'id="tcg-warning"' not in page and 'id="fixture-notice"' not in page
    assert "not measured" in page


def test_weight_table_tolerates_missing_metrics():
    import pandas as pd

    empty = tables.metric_summary(pd.DataFrame(columns=["benchmark", "environment", "metric", "value", "unit",
                                                        "iteration", "direction"]))
    df = tables.weight_performance(empty, {})
    assert (df[["native", "container", "runc", "vm"]] == tables.NOT_MEASURED).all().all()


def test_malformed_facts_section_shows_problem(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    facts = json.loads((run_dir / "facts.json").read_text())
    facts["isolation"] = {"container": ["not", "a", "dict"]}
    facts["phases"] = {"vm": [{"phase": "kernel"}]}
    (run_dir / "facts.json").write_text(json.dumps(facts))
    page = render_report(run_dir).read_text()
    assert "could not read facts.isolation" in page
    assert "could not draw" in page
    assert 'id="tcg-warning"' in page and "create → exit" in page


def test_harness_metric_names_fill_course_notes_tables():
    import pandas as pd

    rows = [{"benchmark": "cpu", "environment": env, "metric": "events_per_s_1t", "value": v + i, "unit": "events/s",
             "iteration": i, "direction": "higher"} for env, v in (("native", 1000.0), ("container", 990.0))
            for i in range(3)]
    rows += [{"benchmark": "network", "environment": "container", "metric": "http_requests_per_s", "value": 900.0,
              "unit": "req/s", "iteration": 0, "direction": "higher"}]
    summary = tables.metric_summary(pd.DataFrame(rows))
    weight = tables.weight_performance(summary, {})
    cpu = weight[weight["measured as"] == "CPU throughput, 1 CPU"].iloc[0]
    assert cpu["native"] == "1,001 events/s" and cpu["container"].startswith("991 events/s (×0.99")
    ports = tables.port_mapping_table({"port_mapping": [{"environment": "container", "host": "127.0.0.1:1",
                                                         "target": "10.0.0.2:80"}]}, summary)
    assert ports.iloc[0]["requests/s through it"].startswith("900 req/s")


def test_short_version():
    from bench.report.render import short_version

    assert short_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)") == "7.2.22"
    assert short_version("runc version 1.1.5+ds1") == "1.1.5+ds1"
    assert short_version("unknown") == "unknown"


def test_failed_benchmark_cells_say_failed():
    import pandas as pd

    empty = tables.metric_summary(pd.DataFrame(columns=["benchmark", "environment", "metric", "value", "unit",
                                                        "iteration", "direction"]))
    weight = tables.weight_performance(empty, {}, [{"benchmark": "cpu", "environment": "vm", "error": "boom"}])
    cpu = weight[weight["measured as"] == "CPU throughput, 1 CPU"].iloc[0]
    assert cpu["vm"] == tables.FAILED and cpu["container"] == tables.NOT_MEASURED


def test_an_oci_runtime_that_only_failed_gets_its_column():
    """crun on a hybrid cgroup host: every start-up value failed; its column says so (the reason is in
    the failed-benchmarks table), beside runc's."""
    import pandas as pd

    empty = tables.metric_summary(pd.DataFrame(columns=["benchmark", "environment", "metric", "value", "unit",
                                                        "iteration", "direction"]))
    failures = [{"benchmark": "startup", "environment": "crun",
                 "error": "crun: cgroups in hybrid mode not supported, drop all controllers from cgroupv2"}]
    df = tables.weight_performance(empty, {}, failures)
    assert list(df.columns).index("crun") > list(df.columns).index("runc")
    start = df[df["aspect"] == "Startup"] if "Startup" in set(df["aspect"]) else df
    assert tables.FAILED in set(start["crun"])
