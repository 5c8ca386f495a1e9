"""`isobench gc`: remove orphans of crashed runs in every area, by their ``isobench-`` names.

Each area exposes ``gc(paths) -> list[str]`` (what it removed), in :data:`GC_AREAS` order: containers
first, because their monitors and mounts hold the cgroups, links and addresses the later areas free.
"""

from __future__ import annotations

import importlib

GC_AREAS: tuple[str, ...] = (
    "runtime.lifecycle.gc",  # monitors, mounts, container dirs (first: they hold the rest)
    "core.scratch",       # leased scratch dirs (build/RUN/load) and pid-tagged temp files of killed commands
    "bench.gc",              # runc containers and overlay mounts of a killed `isobench bench`
    "runtime.cgroups.gc",
    "runtime.network.gc",
    "vmharness.gc",
    "runtime.image.gc",      # temp dirs of crashed unpacks and builds
    "app.server.protocol",  # socket and pidfile of a dead `isobench server` (never a live one's)
    "core.leases",           # last: lease files of dead owners (every area above has judged by them)
)


def register(sub) -> None:
    p = sub.add_parser("gc", help="remove orphaned containers, mounts, cgroups, links, rules, domains")
    p.set_defaults(func=_gc)


def _gc(args) -> int:
    from core.paths import HostPaths

    paths = HostPaths.from_env()
    removed: list[str] = []
    for name in GC_AREAS:
        removed += importlib.import_module(name).gc(paths)
    for item in removed:
        print(f"removed {item}")
    print(f"gc: {len(removed)} orphan(s) removed")
    return 0
