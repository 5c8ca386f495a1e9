"""CLI verbs that read runs: ``report`` (HTML page), ``compare`` (A/B regression test, exit 1 on a
significant regression) and ``check`` (machine-independent bounds, exit 1 on a failure).

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


def _compare(args) -> int:
    from bench.compare import (CompareConfig, compare_runs, condition_warnings, parse_alpha,
                               parse_threshold, render_compare_html, text_table)
    from core.errors import UsageError

    if args.resamples < 100:
        raise UsageError(f"--resamples {args.resamples} is too few (at least 100)")
    cfg = CompareConfig(threshold=parse_threshold(args.threshold), alpha=parse_alpha(args.p),
                        resamples=args.resamples, statistic=args.statistic)
    base, new, comps = compare_runs(_single_run(_run_dir(args.base)), _single_run(_run_dir(args.new)), cfg)
    for w in condition_warnings(base.meta, new.meta):
        print(f"warning: {w}", file=sys.stderr)
    print(text_table(comps))
    slower = [c for c in comps if c.regression]
    faster = sum(c.verdict == "faster" for c in comps)
    print(f"compare: {len(comps)} metrics, {len(slower)} slower, {faster} faster "
          f"(p < {cfg.alpha}, effect >= {cfg.threshold:.1%}, {cfg.statistic})")
    if args.html is not None:
        out = Path(args.html) if args.html else new.path / f"compare-{base.path.name}.html"
        print(render_compare_html(base, new, comps, cfg, out).resolve())
    return 1 if slower else 0


def default_bounds() -> Path:
    """``results/bounds.toml`` of the working directory, else the one committed beside this code."""
    here = Path("results/bounds.toml")
    return here if here.is_file() else Path(__file__).resolve().parents[1] / "results" / "bounds.toml"


def _check(args) -> int:
    from bench.check import check_run, load_bounds, report_text
    from bench.results import load_run

    bounds = load_bounds(args.bounds or default_bounds())
    report = check_run(load_run(_single_run(_run_dir(args.run_dir))), bounds)
    print(report_text(report))
    return 0 if report.ok else 1


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
    p.add_argument("--threshold", default="5%", help="minimum relative effect (default 5%%)")
    p.add_argument("--p", default="0.01", help="significance level of the permutation test (default 0.01)")
    p.add_argument("--resamples", type=int, default=10_000, help="permutations (default 10000)")
    p.add_argument("--statistic", choices=("mean", "median"), default="mean")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a comparison page (default NEW_DIR/compare-<BASE>.html)")
    p.set_defaults(func=_compare)

    p = sub.add_parser("check", help="check machine-independent bounds; exit 1 on a failure")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--bounds", default=None,
                   help="bounds TOML (default results/bounds.toml here, else the repository's)")
    p.set_defaults(func=_check)
