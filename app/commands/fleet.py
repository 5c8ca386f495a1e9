"""The ``isobench fleet`` verbs: the same benchmark on many hosts through Ansible, one result directory.

Parser only at import time; the handler imports the fleet package (and runs Ansible as a subprocess).
"""

from __future__ import annotations

import argparse
import sys

from app.commands.bench import ENVS, WORKLOADS
from app.commands.common import verb, verb_group


def register(sub) -> None:
    """Add ``fleet run`` to the `isobench` parser."""
    fsub = verb_group(sub, "fleet", "run the benchmarks on many hosts (Ansible) into one result",
                      dest="fleet_command", metavar="COMMAND",
                      description="Benchmark every host of an Ansible inventory and merge the results.")
    r = verb(fsub, "run", _run, help="copy the project to each host, make setup, isobench bench, fetch",
             description="Per host: copy this project, `make setup`, `isobench bench` under a "
                         "lock on the host, fetch the run into OUT/<host>/. A host that fails "
                         "or is unreachable is reported; the others still finish.")
    r.add_argument("-i", "--inventory", required=True, metavar="INVENTORY",
                   help="Ansible inventory (INI or YAML); host vars isobench_dir, isobench_root")
    r.add_argument("--profile", default="quick", metavar="quick|full", help="bench profile (default quick)")
    r.add_argument("--only", metavar="LIST", help=f"comma list of workloads ({','.join(WORKLOADS)})")
    r.add_argument("--env", metavar="LIST", help=f"comma list of environments ({','.join(ENVS)})")
    r.add_argument("--values", type=int, metavar="N", help="measured values per metric (overrides the profile)")
    r.add_argument("--limit", metavar="HOSTS", help="comma list of inventory hosts (default: all)")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--parallel", dest="parallel", action="store_true", default=True,
                      help="all hosts at once (default)")
    mode.add_argument("--serial", dest="parallel", action="store_false", help="one host after another")
    r.add_argument("--out", metavar="DIR", help="fleet directory (default: results/fleet-<UTC time>)")


def bench_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The `isobench bench` arguments every host gets, checked here first (a typo fails before any
    host is touched, with the same message bench would print)."""
    from bench import profiles, runner

    profiles.get(args.profile).with_values(args.values)
    out = ["--profile", args.profile]
    if args.only:
        out += ["--only", ",".join(runner.parse_list(args.only, WORKLOADS, "--only"))]
    if args.env:
        out += ["--env", ",".join(runner.parse_list(args.env, ENVS, "--env"))]
    if args.values is not None:
        out += ["--values", str(args.values)]
    return tuple(out)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.fleet import inventory
    from bench.fleet.orchestrate import FleetOptions, default_fleet_dir, run_fleet
    from core.errors import UsageError

    opts = FleetOptions(bench_args=bench_args(args), parallel=args.parallel)
    out = Path(args.out) if args.out else default_fleet_dir()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty directory")
    hosts = inventory.load(args.inventory, args.limit)
    outcomes = run_fleet(hosts, args.inventory, out, opts)
    bad = [o for o in outcomes if o.status != "ok"]
    for o in bad:
        print(f"isobench: fleet: host {o.name} ({o.address}) {o.status} in '{o.task}': {o.reason}",
              file=sys.stderr)
    print(f"[fleet] {len(outcomes) - len(bad)}/{len(outcomes)} hosts ok: {out} "
          f"(`isobench report {out}`)", file=sys.stderr)
    print(out)
    if any(o.status == "interrupted" for o in outcomes):
        return 130
    return 1 if bad else 0
