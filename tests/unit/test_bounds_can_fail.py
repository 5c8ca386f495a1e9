"""Why each committed bound in results/bounds.toml can fail: its measured value in a recorded real run,
moved just past the floor or ceiling widened by the calibrated margin, FAILS; and that move is a
plausible regression (no larger than the calibration's max headroom). A bound that passes this is not
decoration; one that cannot is removed from bounds.toml."""

import json
import shutil
from pathlib import Path

import pytest

from bench.check import check_run, load_bounds
from bench.results import load_run

ROOT = Path(__file__).resolve().parents[2]
BOUNDS = ROOT / "results" / "bounds.toml"


CALIBRATION = ROOT / "results" / "calibration.toml"
REAL_RUN = ROOT / "results" / "fixtures" / "aa" / "run1"  # a recorded real run


def _names(x) -> tuple[str, ...]:
    return (x,) if isinstance(x, str) else tuple(x)


def _move(run: Path, b, factor: float) -> None:
    """Scale what bound ``b`` measures in ``run`` by ``factor`` (a held limit becomes not held)."""
    if b.kind in ("ratio", "median"):
        lines = (run / "samples.csv").read_text().splitlines()
        names = set(_names(b.metric)) | set(_names(b.ratio_metric) if b.ratio_metric else ())
        out = [lines[0]]
        for line in lines[1:]:
            f = line.split(",")
            if f[0] == b.benchmark and f[1] == b.environment and f[2] in names:
                f[3] = repr(float(f[3]) * factor)
            out.append(",".join(f))
        (run / "samples.csv").write_text("\n".join(out) + "\n")
    elif b.kind == "enforcement":
        facts = json.loads((run / "facts.json").read_text())
        for e in facts["enforcement"]:
            if e["environment"] == b.environment and e["limit"] == b.limit:
                if b.value == "held":
                    e["held"] = False
                else:
                    e["measured"] *= factor
        (run / "facts.json").write_text(json.dumps(facts))
    else:
        raise AssertionError(f"no way to move a {b.kind} bound")


@pytest.mark.parametrize("bound", load_bounds(BOUNDS), ids=lambda b: b.name)
def test_every_committed_bound_can_fail(bound, tmp_path):
    """Why each bound can fail: its measured value, moved just past the widened floor or ceiling, FAILS,
    and that move is a plausible regression (at most the calibration's max headroom)."""
    from bench.calibrate import MAX_HEADROOM, load_calibration

    cal = load_calibration(CALIBRATION).bound(bound.name)
    assert cal is not None and cal.headroom <= MAX_HEADROOM, f"{bound.name}: uncalibrated or cannot fail"
    run = tmp_path / "run"
    shutil.copytree(REAL_RUN, run)
    [before] = [r for r in check_run(load_run(run), [bound], {bound.name: cal.margin}).results][:1]
    assert before.verdict == "pass"
    if bound.floor is not None:
        factor = (bound.floor - cal.margin) / before.value * 0.98
    else:
        factor = (bound.ceiling + cal.margin) / before.value * 1.02
    assert max(factor, 1 / factor) - 1 <= MAX_HEADROOM + 0.05 or bound.value == "held"
    _move(run, bound, factor)
    after = check_run(load_run(run), [bound], {bound.name: cal.margin}).results
    assert {r.verdict for r in after} == {"FAIL"}
