"""`isobench compare` on synthetic runs: identical -> no regression; 20% slower with low noise ->
regression and exit 1; noisy 3% -> same; direction-aware for higher-is-better metrics."""

import json

import numpy as np
import pytest

from app.cli import main
from bench.compare import CompareConfig, compare_samples, parse_threshold
from bench.results import Sample, append_samples, load_run
from core.errors import UsageError


def write_run(path, series, meta=None):
    """series: {(benchmark, environment, metric, direction): values}"""
    path.mkdir(parents=True)
    rows = [Sample(b, e, m, float(v), "ms" if d == "lower" else "ops/s", i, d)
            for (b, e, m, d), vals in series.items() for i, v in enumerate(vals)]
    append_samples(path, rows)
    (path / "meta.json").write_text(json.dumps(meta or {"hostname": "h", "accelerator": "tcg"}))
    return path


def noisy(median, rel_sd, n, seed):
    return median * (1 + np.random.default_rng(seed).normal(0, rel_sd, n))


KEY = ("startup", "container", "create_to_exit_ms", "lower")


def test_identical_runs_have_no_regression(tmp_path, capsys):
    vals = noisy(10.0, 0.02, 15, 1)
    base = write_run(tmp_path / "a", {KEY: vals})
    new = write_run(tmp_path / "b", {KEY: vals})
    assert main(["compare", str(base), str(new)]) == 0
    assert "0 slower" in capsys.readouterr().out


def test_twenty_percent_slower_is_a_regression(tmp_path, capsys):
    base = write_run(tmp_path / "a", {KEY: noisy(10.0, 0.01, 15, 1)})
    new = write_run(tmp_path / "b", {KEY: noisy(12.0, 0.01, 15, 2)})
    html = tmp_path / "cmp.html"
    assert main(["compare", str(base), str(new), "--threshold", "5%", "--p", "0.01", "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert "slower" in out and "1 slower" in out
    page = html.read_text()
    assert "1 slower" in page and "create_to_exit_ms" in page and "http" not in page.replace("http_", "")


def test_noisy_three_percent_is_same():
    base = load_like({KEY: noisy(10.0, 0.10, 15, 3)})
    new = load_like({KEY: noisy(10.3, 0.10, 15, 4)})
    [c] = compare_samples(base, new, CompareConfig(threshold=0.05, alpha=0.01))
    assert c.verdict == "same"


def test_low_noise_three_percent_is_below_threshold():
    base = load_like({KEY: noisy(10.0, 0.002, 20, 3)})
    new = load_like({KEY: noisy(10.3, 0.002, 20, 4)})
    [c] = compare_samples(base, new, CompareConfig(threshold=0.05))
    assert c.p_value < 0.01 and c.verdict == "same"  # significant but too small to matter


def test_direction_aware():
    key = ("cpu", "container", "events_per_s_1cpu", "higher")
    base = load_like({key: noisy(1000.0, 0.01, 12, 5)})
    worse = load_like({key: noisy(800.0, 0.01, 12, 6)})
    better = load_like({key: noisy(1200.0, 0.01, 12, 7)})
    assert compare_samples(base, worse)[0].verdict == "slower"
    assert compare_samples(base, better)[0].verdict == "faster"
    faster_start = compare_samples(load_like({KEY: noisy(12.0, 0.01, 12, 8)}),
                                   load_like({KEY: noisy(10.0, 0.01, 12, 9)}))
    assert faster_start[0].verdict == "faster"


def test_metrics_only_in_one_run():
    other = ("cpu", "vm", "events_per_s_1cpu", "higher")
    verdicts = {c.metric: c.verdict for c in compare_samples(load_like({KEY: [1.0, 2.0]}),
                                                              load_like({other: [3.0, 4.0]}))}
    assert verdicts == {"create_to_exit_ms": "only in base", "events_per_s_1cpu": "only in new"}


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("0.05", 0.05), ("10", 0.10), ("2.5%", 0.025)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "150%", "-1%"])
def test_parse_threshold_rejects(text):
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold(text)


def test_bad_p_is_usage_error(tmp_path, capsys):
    base = write_run(tmp_path / "a", {KEY: [1.0, 2.0]})
    assert main(["compare", str(base), str(base), "--p", "2"]) == 2
    assert "--p" in capsys.readouterr().err


def load_like(series):
    import pandas as pd

    rows = [{"benchmark": b, "environment": e, "metric": m, "value": float(v), "unit": "u", "iteration": i,
             "direction": d} for (b, e, m, d), vals in series.items() for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- reachability, FDR, mirrors, calibration

def test_three_vs_five_values_is_inconclusive_not_same():
    """The issue's case: 3 vs 5 values cannot reach p < 0.01 (min p = 1/56), so an 82% drop is not "same"."""
    key = ("cpu", "container", "events_per_s_1t", "higher")
    base = load_like({key: [1000.0, 1010.0, 990.0]})
    new = load_like({key: [180.0, 182.0, 179.0, 181.0, 178.0]})
    [c] = compare_samples(base, new, CompareConfig(alpha=0.01))
    assert c.verdict == "inconclusive" and c.min_p == pytest.approx(1 / 56)
    assert "min p 0.018 > 0.01" in c.reason and "needs 5+ per run" in c.reason
    [c5] = compare_samples(base, new, CompareConfig(alpha=0.05))  # 0.018 is reachable at 5%
    assert c5.verdict == "slower" and c5.p_value == pytest.approx(1 / 56)


def test_many_metrics_fdr_keeps_a_lone_borderline_p_unflagged():
    """One metric at p = 2/252 = 0.0079 among 40 unchanged ones: below alpha alone, not after BH."""
    rng = np.random.default_rng(11)
    series_a, series_b = {}, {}
    for i in range(40):
        k = ("cpu", "native", f"m{i:02d}", "lower")
        series_a[k] = 10 + rng.normal(0, 0.5, 5)
        series_b[k] = 10 + rng.normal(0, 0.5, 5)
    k = ("cpu", "native", "changed", "lower")
    series_a[k] = [10.0, 10.2, 9.9, 10.1, 10.05]
    series_b[k] = [10.0 * 1.3, 10.2 * 1.3, 9.9 * 1.3, 10.1 * 1.3, 10.05 * 1.31]
    comps = {c.metric: c for c in compare_samples(load_like(series_a), load_like(series_b), CompareConfig(alpha=0.05))}
    changed = comps["changed"]
    assert changed.p_value == pytest.approx(2 / 252) and changed.q_value > 0.05
    assert changed.verdict == "inconclusive"  # a 30% change the values cannot confirm among 41 tests
    assert not any(c.verdict in ("slower", "faster") for c in comps.values())


def test_mirrors_are_tested_once():
    """mem_delta_mib_n1 == mem_delta_per_instance_mib_n1 and _n2 = 2x per-instance: one test, one vote."""
    per_a, per_b = [30.0, 31.0, 29.5, 30.5, 30.2], [40.0, 41.0, 39.5, 40.5, 40.2]
    a = {("footprint", "runc", "mem_delta_per_instance_mib_n1", "lower"): per_a,
         ("footprint", "runc", "mem_delta_mib_n1", "lower"): per_a,
         ("footprint", "runc", "mem_delta_mib_n2", "lower"): [2 * v for v in per_a],
         ("footprint", "runc", "held", "higher"): [1.0] * 5}
    b = {("footprint", "runc", "mem_delta_per_instance_mib_n1", "lower"): per_b,
         ("footprint", "runc", "mem_delta_mib_n1", "lower"): per_b,
         ("footprint", "runc", "mem_delta_mib_n2", "lower"): [2 * v for v in per_b],
         ("footprint", "runc", "held", "higher"): [1.0] * 5}
    comps = compare_samples(load_like(a), load_like(b))
    by = {c.metric: c for c in comps}
    assert by["mem_delta_mib_n1"].mirror_of == "" and by["mem_delta_mib_n1"].verdict == "slower"
    assert by["mem_delta_mib_n2"].mirror_of == "mem_delta_mib_n1"
    assert by["mem_delta_per_instance_mib_n1"].mirror_of == "mem_delta_mib_n1"
    assert {by[m].verdict for m in by if m != "held"} == {"slower"}
    assert by["held"].mirror_of == ""  # a constant is nobody's mirror
    from bench.compare import verdict_counts
    assert verdict_counts(comps)["slower"] == 1


def test_mirror_needs_both_runs_proportional():
    a = {("f", "runc", "x", "lower"): [1.0, 2.0, 3.0], ("f", "runc", "y", "lower"): [1.0, 2.0, 3.0]}
    b = {("f", "runc", "x", "lower"): [1.0, 2.0, 3.0], ("f", "runc", "y", "lower"): [1.0, 2.5, 3.0]}
    assert all(not c.mirror_of for c in compare_samples(load_like(a), load_like(b)))


def test_calibrated_min_effect_decides():
    """A clean, significant 10% change: slower with the 5% default, same when A/A runs moved by 15%."""
    base = load_like({KEY: noisy(10.0, 0.01, 8, 1)})
    new = load_like({KEY: noisy(11.0, 0.01, 8, 2)})
    [default] = compare_samples(base, new)
    assert default.verdict == "slower" and default.effect_source == "default"
    cal = CompareConfig(min_effects=((KEY[:3], 0.15),))
    [calibrated] = compare_samples(base, new, cal)
    assert calibrated.verdict == "same" and calibrated.effect_source == "calibrated"
    assert "below the minimum effect 15.0%" in calibrated.reason
    [floored] = compare_samples(base, new, CompareConfig(threshold=0.2, min_effects=((KEY[:3], 0.02),)))
    assert floored.min_effect_pct == pytest.approx(20.0) and floored.effect_source == "--threshold"


def test_values_sharing_an_instance_count_once():
    rows = load_like({KEY: [10.0, 10.2, 10.1, 10.3, 9.9, 10.0]}).assign(replicate=[0, 0, 1, 1, 2, 2])
    new = load_like({KEY: [12.0, 12.2, 12.1, 12.3, 11.9, 12.0]}).assign(replicate=[0, 0, 1, 1, 2, 2])
    [c] = compare_samples(rows, new, CompareConfig(alpha=0.05))
    assert (c.n_base, c.n_new) == (3, 3) and c.min_p == pytest.approx(0.1) and c.verdict == "inconclusive"


def test_tcg_runs_label_vm_lines(tmp_path, capsys):
    key_vm = ("startup", "vm", "create_to_exit_s", "lower")
    base = write_run(tmp_path / "a", {KEY: noisy(10.0, 0.01, 6, 1), key_vm: noisy(6.0, 0.01, 6, 2)})
    new = write_run(tmp_path / "b", {KEY: noisy(10.0, 0.01, 6, 3), key_vm: noisy(6.0, 0.01, 6, 4)})
    assert main(["compare", str(base), str(new), "--calibration", "none"]) == 0
    out = capsys.readouterr().out
    vm_lines = [line for line in out.splitlines() if " vm" in line]
    assert vm_lines and all("vm [TCG]" in line for line in vm_lines)
    assert "[TCG: VM figures from emulation]" in out.splitlines()[-1]
    assert not any("[TCG]" in line for line in out.splitlines() if " container " in line)


def test_row_accelerator_column_labels_lines():
    key_vm = ("cpu", "vm", "events_per_s_1t", "higher")
    a = load_like({key_vm: noisy(500.0, 0.01, 6, 1)}).assign(accelerator="tcg")
    b = load_like({key_vm: noisy(500.0, 0.01, 6, 2)}).assign(accelerator="tcg")
    [c] = compare_samples(a, b)
    assert c.env_label == "vm [TCG]"
    [k] = compare_samples(a.assign(accelerator="kvm"), b.assign(accelerator="kvm"))
    assert k.env_label == "vm"


def test_condition_warnings_include_load():
    from bench.compare import condition_warnings

    warn = condition_warnings({"system": {"load_avg_1min": 0.4}}, {"system": {"load_avg_1min": 2.9}})
    assert warn == ["load average (1 min) differs: base 0.4, new 2.9: other work on the host moves every figure"]
    assert condition_warnings({"system": {"load_avg_1min": 0.4}}, {"system": {"load_avg_1min": 0.9}}) == []
    assert condition_warnings({"accelerator": "tcg"}, {"accelerator": "kvm"}) == [
        "VM accelerator differs: base tcg, new kvm"]


def test_min_effect_is_symmetric_on_the_log_scale():
    from bench.compare import _at_least

    assert _at_least(0.2, 0.2) and _at_least(1 / 1.2 - 1, 0.2)  # x1.2 and /1.2 both reach 20%
    assert not _at_least(-0.16, 0.2) and not _at_least(0.19, 0.2)  # /1.2 is -16.7%
    assert _at_least(-2.0, 1.5) and not _at_least(-1.0 - 1e-9 + 0.5, 1.5)  # through zero: plain size
