"""`isobench calibrate`: minimum effects and check margins from A/A runs (arithmetic on known values,
refusal of too few or mismatched runs, TOML round trip, the CLI writes a file compare and check read)."""

import json
import shutil
from pathlib import Path

import pytest

from app.cli import main
from bench.calibrate import (MAX_HEADROOM, bound_calibration, calibrate, headroom, load_calibration,
                             metric_calibration, parse_calibration, to_toml)
from bench.calibrate import COVERAGE
from bench.check import parse_bounds
from bench.stats import student_t_quantile
from bench.results import load_run
from core.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "results" / "fixtures" / "quick-tcg"


def test_metric_calibration_arithmetic():
    # run means 10, 11, 12: cv = 1/11; max change 12/10 - 1 = 20%; on logs: stdev(ln 10, ln 11, ln 12)
    # = 0.09116; 3 runs know sigma to 2 degrees of freedom: t = 19.21 (not 3), 19.21*sqrt(2)*0.09116 = 2.476,
    # expm1(2.477) = 1090%: three runs cannot promise more than that
    m = metric_calibration(("startup", "runc", "x"), [[9.0, 11.0], [11.0, 11.0], [12.0, 12.0]])
    assert m.aa_max_change == pytest.approx(0.2)
    assert m.between_run_cv == pytest.approx(1 / 11, abs=1e-6)
    assert student_t_quantile(COVERAGE, 2) == pytest.approx(19.21, abs=0.01)
    assert m.min_effect == pytest.approx(10.905, abs=0.006)
    five = metric_calibration(("startup", "runc", "x"), [[10.0], [11.0], [12.0], [10.5], [11.5]])
    assert five.min_effect < 1.0  # five runs: t = 6.62, the limit shrinks to 77%
    assert (m.runs, m.values_per_run) == (3, 2)


def test_metric_calibration_negative_statistic_uses_relative_changes():
    # means -1, 1, 3 (a memory delta below the noise can be negative): linear rule, cv = 2 / 1
    m = metric_calibration(("footprint", "runc", "mem_delta_mib_n1"), [[-1.0], [1.0], [3.0]])
    assert m.aa_max_change == pytest.approx(4.0)  # 3 / -1 - 1, in size
    assert m.min_effect == pytest.approx(54.325, abs=0.006)  # t(2)*sqrt(2)*cv = 19.21*1.414*2


def test_metric_calibration_floor():
    m = metric_calibration(("cpu", "native", "x"), [[100.5], [100.5], [100.5]])
    assert m.min_effect == pytest.approx(0.01) and m.aa_max_change == 0


def test_headroom_and_margin():
    [b] = parse_bounds('[[bound]]\nname="r"\nkind="median"\nbenchmark="b"\nmetric="m"\nenvironment="e"\n'
                       'floor=0.95\nceiling=1.05\n')
    cal = bound_calibration(b, [1.0, 1.01, 0.99, 1.0, 1.0])
    # prediction interval of one more run from 5: t(4) * stdev * sqrt(1 + 1/5) = 6.62 * 0.00707 * 1.095
    assert cal.margin == pytest.approx(0.0513, abs=2e-4)
    assert cal.headroom == pytest.approx(1.05 + cal.margin - 1.0, abs=1e-6)  # the ceiling is nearer
    assert headroom(300.0, 1.0, None, 0.0) == pytest.approx(299)  # "VM start slower than container start"
    assert headroom(300.0, 1.0, None, 0.0) > MAX_HEADROOM
    assert headroom(0.3, None, 0.5, 0.25) == pytest.approx(1.5)  # needs the value to grow 2.5-fold
    assert headroom(1.0, 1.0, None, 0.0) == 0  # a held limit: fails the moment it is not held


def _scaled_copy(tmp_path, name, factor, host=None):
    run = tmp_path / name
    shutil.copytree(FIXTURE, run)
    lines = (run / "samples.csv").read_text().splitlines()
    out = [lines[0]] + [",".join(f[:3] + [repr(float(f[3]) * factor)] + f[4:])
                        for f in (line.split(",") for line in lines[1:])]
    (run / "samples.csv").write_text("\n".join(out) + "\n")
    if host:
        meta = json.loads((run / "meta.json").read_text())
        meta["hostname"] = host
        (run / "meta.json").write_text(json.dumps(meta))
    return run


BOUNDS = parse_bounds('[[bound]]\nname="container start"\nkind="ratio"\nbenchmark="startup"\n'
                      'metric="create_to_exit_s"\nenvironment="container"\nreference="runc"\nceiling=0.5\n')


def test_calibrate_needs_three_matching_runs(tmp_path):
    runs = [load_run(_scaled_copy(tmp_path, f"r{i}", 1.0)) for i in range(2)]
    with pytest.raises(UsageError, match="at least 3 A/A runs"):
        calibrate(runs, BOUNDS)
    runs.append(load_run(_scaled_copy(tmp_path, "other", 1.0, host="elsewhere")))
    with pytest.raises(UsageError, match="differ in hostname"):
        calibrate(runs, BOUNDS)


def test_calibration_round_trip(tmp_path):
    runs = [load_run(_scaled_copy(tmp_path, f"r{i}", f)) for i, f in enumerate((1.0, 1.02, 0.99))]
    cal = calibrate(runs, BOUNDS)
    m = {x.key: x for x in cal.metrics}[("startup", "container", "create_to_exit_s")]
    assert m.aa_max_change == pytest.approx(1.02 / 0.99 - 1, rel=1e-4)
    assert cal.conditions["accelerator"] == "tcg" and len(cal.conditions["runs"]) == 3
    [b] = cal.bounds
    assert b.margin == pytest.approx(0.0, abs=1e-9)  # a ratio of two equally scaled metrics does not move
    back = parse_calibration(to_toml(cal, "isobench calibrate a b c"))
    assert back.metrics == cal.metrics and back.bounds[0].name == "container start"
    assert back.conditions["runs"] == cal.conditions["runs"]


def test_cli_calibrate_writes_what_compare_reads(tmp_path, capsys):
    runs = [str(_scaled_copy(tmp_path, f"r{i}", f)) for i, f in enumerate((1.0, 1.03, 0.98))]
    out = tmp_path / "cal.toml"
    assert main(["calibrate", *runs, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "calibrated from 3 A/A runs" in text and "[TCG]" in text and "bound" in text
    cal = load_calibration(out)
    assert all(m.min_effect >= 0.05 for m in cal.metrics)  # 1.03/0.98 - 1 = 5.1%: every metric moved so
    assert main(["compare", runs[0], runs[1], "--calibration", str(out)]) == 0
    assert "minimum effects: calibrated" in capsys.readouterr().out


@pytest.mark.parametrize("text,match", [
    ("[[metric]]\nbenchmark = 'x'\n", "malformed entry"),
    ("not toml [", "invalid TOML"),
    ("[[metric]]\nbenchmark='b'\nenvironment='e'\nmetric='m'\nruns=3\nvalues_per_run=5\nbetween_run_cv=0.1\n"
     "aa_max_change=0.1\nmin_effect=-1\n", "min_effect -1"),
])
def test_bad_calibration_rejected(text, match):
    with pytest.raises(UsageError, match=match):
        parse_calibration(text)


def test_calibration_file_missing(tmp_path, capsys):
    assert main(["compare", str(FIXTURE), str(FIXTURE), "--calibration", str(tmp_path / "no.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_counts_get_their_resolution():
    """31 processes every time: one more or fewer is the count's granularity (1/31 = 3.2% + 0.5% -> 4%)."""
    m = metric_calibration(("enforcement", "runc", "pids_reached"), [[31.0] * 5, [31.0] * 5, [31.0] * 5])
    assert m.min_effect == pytest.approx(0.04)
    assert 1 / 31 < m.min_effect < 2 / 31
