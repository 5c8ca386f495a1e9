"""The regression checks on real runs: identical small benches recorded one after another on the
project's 2-core TCG machine (results/fixtures/aa/run*, same commit; see results/fixtures/aa/README.md).

Held out, leave-two-out: for every pair of recorded runs, the minimum effects and margins are calibrated
from the OTHER runs only (as `isobench calibrate` does), then

- A/A: comparing the pair flags nothing (no slower, no faster);
- an injected 20% slowdown (the second run's values x1.2 for lower-is-better metrics, /1.2 for higher)
  is flagged: `compare` finds slower metrics, and every metric that can show it (enough independent
  values, calibrated minimum effect below the injected change) is slower;
- `isobench check` passes on each run with margins calibrated from the other runs, and on every run with
  the committed calibration (the CI check is green on identical code).

A first calibration rule (a flat 3 sigma, the normal quantile) failed here: 4 of the 10 pairs flagged a
change, because 3 runs say little about the spread; the rule now uses Student's t (bench/calibrate.py).

The committed results/calibration.toml was made from all recorded runs (its [conditions] list them).
"""

import itertools
from pathlib import Path

import pandas as pd
import pytest

from bench.calibrate import calibrate, load_calibration
from bench.check import check_run, load_bounds
from bench.compare import CompareConfig, compare_samples
from bench.results import load_run

ROOT = Path(__file__).resolve().parents[2]
AA = ROOT / "results" / "fixtures" / "aa"
CALIBRATION = ROOT / "results" / "calibration.toml"
BOUNDS = ROOT / "results" / "bounds.toml"
RUNS = sorted(p.name for p in AA.glob("run*") if (p / "samples.csv").is_file())
PAIRS = list(itertools.combinations(RUNS, 2))
SLOWDOWN = 1.2
_LOADED: dict = {}


def run(name: str):
    if name not in _LOADED:
        _LOADED[name] = load_run(AA / name)
    return _LOADED[name]


def held_out_calibration(*excluded: str):
    return calibrate([run(r) for r in RUNS if r not in excluded], load_bounds(BOUNDS))


def test_recorded_runs_and_committed_calibration():
    assert len(RUNS) >= 5 and len(PAIRS) >= 10
    cal = load_calibration(CALIBRATION)
    assert sorted(Path(r).name for r in cal.conditions["runs"]) == RUNS
    assert cal.conditions["accelerator"] == "tcg" and cal.conditions["cpu_count"] == 2
    assert len(cal.metrics) >= 30


@pytest.mark.parametrize("base,new", PAIRS)
def test_aa_pair_flags_nothing(base, new):
    cal = held_out_calibration(base, new)
    comps = compare_samples(run(base).samples, run(new).samples, CompareConfig(min_effects=cal.min_effects()),
                            run(base).meta, run(new).meta)
    flagged = [(c.environment, c.metric, round(c.change_pct), c.min_effect_pct) for c in comps
               if c.verdict in ("slower", "faster")]
    assert not flagged


def slowed(samples: pd.DataFrame, factor: float = SLOWDOWN) -> pd.DataFrame:
    lower = samples["direction"] == "lower"
    return samples.assign(value=samples["value"].where(~lower, samples["value"] * factor)
                          .where(lower, samples["value"] / factor))


@pytest.mark.parametrize("base,new", PAIRS)
def test_injected_slowdown_is_flagged(base, new):
    cal = held_out_calibration(base, new)
    comps = compare_samples(run(base).samples, slowed(run(new).samples), CompareConfig(min_effects=cal.min_effects()),
                            run(base).meta, run(new).meta)
    assert not [c for c in comps if c.verdict == "faster"]
    injected_pct = 100 * (1 - 1 / SLOWDOWN)  # 16.7%: the smaller side of x1.2 and /1.2
    can_show = [c for c in comps if not c.mirror_of and c.min_effect_pct < injected_pct
                and not c.reason.startswith("too few values")]
    slower = [c for c in comps if c.verdict == "slower" and not c.mirror_of]
    assert len(slower) >= 3
    missed = [(c.environment, c.metric, c.verdict, c.reason) for c in can_show if c.verdict != "slower"]
    assert len(missed) <= len(can_show) // 4, missed


@pytest.mark.parametrize("name", RUNS)
def test_check_passes_with_margins_from_the_other_runs(name):
    cal = held_out_calibration(name)
    report = check_run(run(name), load_bounds(BOUNDS), {b.name: b.margin for b in cal.bounds})
    assert report.ok, [(r.bound.name, r.value, r.floor, r.ceiling) for r in report.failed]


def test_check_passes_on_every_run_with_the_committed_calibration():
    margins = {b.name: b.margin for b in load_calibration(CALIBRATION).bounds}
    for name in RUNS:
        report = check_run(run(name), load_bounds(BOUNDS), margins)
        assert report.ok, (name, [(r.bound.name, r.value) for r in report.failed])
