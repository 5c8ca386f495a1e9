"""CLI verbs that read runs: ``report`` (HTML page), ``compare`` (A/B regression test, exit 1 on a
significant regression), ``check`` (machine-independent bounds, exit 1 on a failure) and ``calibrate``
(minimum effects and margins from A/A runs, for compare and check).

Parser-only at import time (``isobench run`` start-up is measured): pandas, numpy, matplotlib and
jinja2 are imported inside the handlers.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_RUN = "results/latest"


def _run_dir(text: str) -> Path:
    from core.errors import UsageError

    p = Path(text)
    if not p.exists():
        hint = " (run `make bench` or `isobench bench` first, or pass RUN_DIR)" if text == DEFAULT_RUN else ""
        raise UsageError(f"run directory {text}: no such directory{hint}")
    if not (p / "samples.csv").is_file():
        raise UsageError(f"run directory {text}: not a run (no samples.csv)")
    return p


def _single_run(p: Path) -> Path:
    """compare/check read one host's run: a fleet directory is refused with its hosts named."""
    from bench.fleetresults import is_fleet, read_info
    from core.errors import UsageError

    if is_fleet(p):
        names = [str(h.get("name")) for h in read_info(p)["hosts"] if h.get("status") == "ok"]
        raise UsageError(f"{p} is a fleet result; pass one host's run, e.g. {p / (names or ['HOST'])[0]}")
    return p


def _report(args) -> int:
    from bench.fleetresults import is_fleet

    run_dir = _run_dir(args.run_dir)
    if is_fleet(run_dir):
        from bench.report.fleet import render_fleet_report

        print(render_fleet_report(run_dir, args.out).resolve())
        return 0
    from bench.report.render import render_report

    out = render_report(run_dir, args.out)
    print(out.resolve())
    return 0


def _calibration(arg: str | None):
    """The calibration ``--calibration`` names (``none``: without one), else the default if present."""
    from bench.calibrate import default_calibration, load_calibration

    if arg == "none":
        return None
    path = arg or default_calibration()
    return load_calibration(path) if path else None


def _compare(args) -> int:
    from bench.compare import (CompareConfig, compare_runs, condition_warnings, parse_alpha,
                               parse_threshold, render_compare_html, summary_line, text_table)
    from core.errors import UsageError

    if args.resamples < 100:
        raise UsageError(f"--resamples {args.resamples} is too few (at least 100)")
    cal = _calibration(args.calibration)
    cfg = CompareConfig(threshold=parse_threshold(args.threshold) if args.threshold else None,
                        alpha=parse_alpha(args.p), resamples=args.resamples, statistic=args.statistic,
                        min_effects=cal.min_effects() if cal else ())
    base, new, comps = compare_runs(_single_run(_run_dir(args.base)), _single_run(_run_dir(args.new)), cfg)
    for w in condition_warnings(base.meta, new.meta):
        print(f"warning: {w}", file=sys.stderr)
    if cal is not None:
        for w in condition_warnings(cal.conditions, new.meta):
            print(f"warning: calibration: {w}", file=sys.stderr)
    print(text_table(comps))
    print(summary_line(comps, cfg))
    if args.html is not None:
        out = Path(args.html) if args.html else new.path / f"compare-{base.path.name}.html"
        print(render_compare_html(base, new, comps, cfg, out).resolve())
    return 1 if any(c.regression for c in comps) else 0


def default_bounds() -> Path:
    """``results/bounds.toml`` of the working directory, else the one committed beside this code."""
    here = Path("results/bounds.toml")
    return here if here.is_file() else Path(__file__).resolve().parents[2] / "results" / "bounds.toml"


def _check(args) -> int:
    from bench.check import check_run, load_bounds, report_text
    from bench.results import load_run

    bounds = load_bounds(args.bounds or default_bounds())
    cal = _calibration(args.calibration)
    margins = {b.name: b.margin for b in cal.bounds if b.margin == b.margin} if cal else {}
    report = check_run(load_run(_single_run(_run_dir(args.run_dir))), bounds, margins)
    print(report_text(report))
    return 0 if report.ok else 1


def _calibrate(args) -> int:
    from bench.calibrate import calibrate, summary_text, to_toml
    from bench.check import load_bounds
    from bench.results import load_run
    from core.fsutil import atomic_write_bytes

    runs = [load_run(_single_run(_run_dir(d))) for d in args.run_dirs]
    cal = calibrate(runs, load_bounds(args.bounds or default_bounds()), labels=args.run_dirs)
    print(summary_text(cal))
    command = "isobench calibrate " + " ".join(args.run_dirs) + f" --out {args.out}"
    atomic_write_bytes(Path(args.out), to_toml(cal, command).encode())
    print(Path(args.out).resolve())
    return 0


def register(sub) -> None:
    """Add ``report``, ``compare`` and ``check`` to the `isobench` parser."""
    p = sub.add_parser("report", help="render RUN_DIR/report.html (self-contained)")
    p.add_argument("run_dir", nargs="?", default=DEFAULT_RUN, metavar="RUN_DIR",
                   help=f"run directory (default {DEFAULT_RUN})")
    p.add_argument("-o", "--out", default=None, help="write the page here instead of RUN_DIR/report.html")
    p.set_defaults(func=_report)

    p = sub.add_parser("compare", help="A/B test two runs; exit 1 on a significant regression")
    p.add_argument("base", metavar="BASE_DIR")
    p.add_argument("new", metavar="NEW_DIR")
    p.add_argument("--threshold", default=None,
                   help="floor on every minimum relative effect, e.g. 10%% (default: calibrated per metric, "
                        "5%% for uncalibrated metrics)")
    p.add_argument("--p", default="0.05",
                   help="false discovery rate (Benjamini-Hochberg) across metrics; a metric whose values cannot "
                        "reach it is inconclusive (default 0.05)")
    p.add_argument("--calibration", default=None, metavar="TOML",
                   help="A/A calibration (default results/calibration.toml; 'none' to use 5%% everywhere)")
    p.add_argument("--resamples", type=int, default=10_000, help="permutations (default 10000)")
    p.add_argument("--statistic", choices=("mean", "median"), default="mean")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a comparison page (default NEW_DIR/compare-<BASE>.html)")
    p.set_defaults(func=_compare)

    p = sub.add_parser("check", help="check machine-independent bounds; exit 1 on a failure")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--bounds", default=None,
                   help="bounds TOML (default results/bounds.toml here, else the repository's)")
    p.add_argument("--calibration", default=None, metavar="TOML",
                   help="margins from A/A runs (default results/calibration.toml; 'none' for the bare claims)")
    p.set_defaults(func=_check)

    p = sub.add_parser("calibrate", help="minimum effects and check margins from A/A runs of the same code")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="at least 3 runs of the same commit and conditions")
    p.add_argument("--bounds", default=None, help="bounds whose margins to calibrate (default results/bounds.toml)")
    p.add_argument("--out", default="results/calibration.toml", help="where to write (default %(default)s)")
    p.set_defaults(func=_calibrate)
