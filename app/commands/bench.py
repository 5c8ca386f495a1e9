"""The ``isobench bench`` verb: run the workloads in the environments and write a results directory.

Nothing heavy is imported at module level (this parser is built on every ``isobench`` start).
"""

from __future__ import annotations

import argparse
import sys

WORKLOADS = ("startup", "cpu", "memory", "syscalls", "disk", "network", "footprint", "enforcement", "isolation",
             "ephemerality")
ENVS = ("native", "container", "runc", "vm")
# opt-in: containers inside a Linux VM (the Docker Desktop layout) boot a guest per run and cost minutes
OPTIONAL_ENVS = ("vm-container", "vm-container-runc")


def register(sub) -> None:
    """Add ``bench`` to the `isobench` parser."""
    b = sub.add_parser("bench", help="run the benchmarks in native, container, runc and vm",
                       description="Run the same image in four environments and store the results in "
                                   "results/<UTC time>-<host>/ (results/latest points at the newest).")
    b.add_argument("--profile", default="quick", metavar="quick|full", help="quick (default) or full")
    b.add_argument("--only", metavar="LIST", help=f"comma list of workloads ({','.join(WORKLOADS)})")
    b.add_argument("--env", metavar="LIST", help=f"comma list of environments ({','.join(ENVS)}; default all of "
                                                 f"these and the OCI runtimes found on the host or given with "
                                                 f"--runtime) or {','.join(OPTIONAL_ENVS)} (containers in a Linux VM, with isobench's runtime or runc)")
    b.add_argument("--runtime", action="append", default=[], metavar="NAME=PATH",
                   help="one more OCI runtime to run the start-up benchmark in, beside runc and the ones found "
                        "on the host (crun, youki, runsc); its NAME is its column (repeatable)")
    b.add_argument("--values", type=int, metavar="N", help="measured values per metric (overrides the profile)")
    b.add_argument("--seed", type=int, metavar="N",
                   help="seed of the random environment order per round (default: a fresh one, in meta.json)")
    b.add_argument("--gap", type=float, metavar="S", help="idle seconds before every step (overrides the profile)")
    b.add_argument("--out", metavar="DIR", help="run directory (default: results/<UTC time>-<host>)")
    b.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from bench import profiles, runner
    from core.errors import UsageError
    from core.paths import HostPaths

    if os.geteuid() != 0:
        raise UsageError("isobench bench needs root (namespaces, cgroups, mounts, libvirt)")
    from bench.environments import ociruntimes

    profile = profiles.get(args.profile).with_values(args.values).with_gap(args.gap)
    workloads = runner.parse_list(args.only, WORKLOADS, "--only")
    runtimes = ociruntimes.environments(tuple(args.runtime))
    ociruntimes.register(runtimes)
    others = tuple(rt.name for rt in runtimes if rt.name != "runc")
    default_envs = ENVS[:3] + others + ENVS[3:]  # the other OCI runtimes beside runc, before the VM
    envs = runner.parse_list(args.env, default_envs + OPTIONAL_ENVS, "--env") if args.env else default_envs
    run_dir = Path(args.out) if args.out else runner.default_run_dir()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"--out {run_dir}: directory exists and is not empty")
    paths = HostPaths.from_env().ensure()
    t0 = time.monotonic()
    print(f"[bench] profile {profile.name}: {profile.values} values (+{profile.warmups} warm-up), "
          f"workloads {','.join(workloads)}, environments {','.join(envs)} -> {run_dir}", file=sys.stderr)
    interrupted = False
    from bench import interrupt

    interrupt.install()
    from runtime.network import bridge

    bridge_existed = bridge.bridge_exists(bridge.load_config(paths).bridge)
    try:
        state = runner.run_benchmarks(paths=paths, profile=profile, workloads=workloads, envs=envs, run_dir=run_dir,
                                     seed=args.seed)
    except KeyboardInterrupt:
        interrupted = True
        state = None
    finally:
        if not bridge_existed:  # a bench leaves the host as it found it: its bridge and base rules go
            from runtime.network.gc import prune

            prune(paths)  # kept while a live container of any root still uses it
    if not args.out:
        runner.point_latest(run_dir)
    took = time.monotonic() - t0
    if interrupted:
        print(f"[bench] interrupted after {took:.0f}s: partial results in {run_dir}", file=sys.stderr)
        return 130
    nfail = len(state.failures)
    print(f"[bench] done in {int(took // 60)}m{int(took % 60):02d}s: {run_dir}"
          + (f" ({nfail} failed, see failures.json)" if nfail else ""), file=sys.stderr)
    print(run_dir)
    return 0
