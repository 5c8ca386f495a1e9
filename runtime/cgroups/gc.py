"""Orphan removal for cgroups, called by `isobench gc`.

A crashed CLI or monitor can leave ``isobench-<id>`` cgroups behind in every hierarchy. Only orphans are
removed: the name must carry the project's prefix, its lease owner (``core.leases.owner_alive``) must
be dead — other state roots and tests on the same host own live cgroups — and any process still inside
is killed first (it belongs to a dead owner, so nobody else will). Cgroups not named ``isobench-*`` are
never looked at beyond their names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection

from core import leases
from runtime.cgroups.cgroup import UNIFIED, Cgroup
from runtime.cgroups.layout import CgroupLayout, detect
from core.errors import CgroupError
from core.paths import CGROUP_ROOT, PREFIX


MAX_DEPTH = 4  # other runtimes nest under a parent (runc: the caller's own cgroup, libvirt: machine/)


def _hierarchy_dirs(layout: CgroupLayout) -> dict[str, Path]:
    dirs = {**layout.v1, **layout.named}
    if layout.unified is not None:
        # on hybrid hosts other tools (runc) also make a twin in the controller-less v2 mount; a key other
        # than UNIFIED keeps Cgroup reading usage from the v1 dirs
        dirs[UNIFIED if layout.driver == "v2" else "unified-mount"] = layout.unified
    return dirs


def _find_prefixed(top: Path, depth: int = 0) -> list[Path]:
    """``isobench-*`` cgroups under ``top`` (not descending into them, nor deeper than MAX_DEPTH)."""
    try:
        subdirs = [p for p in top.iterdir() if p.is_dir()]
    except OSError:
        return []
    found = [p for p in subdirs if p.name.startswith(PREFIX)]
    if depth < MAX_DEPTH:
        for p in subdirs:
            if not p.name.startswith(PREFIX):
                found += _find_prefixed(p, depth + 1)
    return found


def orphan_candidates(layout: CgroupLayout) -> dict[str, dict[str, Path]]:
    """{name: {hierarchy: dir}} of every ``isobench-*`` cgroup, in every hierarchy."""
    found: dict[str, dict[str, Path]] = {}
    for key, mount in _hierarchy_dirs(layout).items():
        for entry in _find_prefixed(mount):
            slot = found.setdefault(entry.name, {})
            slot[key if key not in slot else f"{key}:{entry.parent}"] = entry
    return found


def gc(paths, names: Collection[str] | None = None) -> list[str]:
    """Remove orphaned ``isobench-*`` cgroups (dead lease owner); return ``cgroup <name>`` for each.
    ``names`` restricts the sweep (tests use it so they never race other suites' objects)."""
    root = getattr(paths, "cgroup_root", None) or CGROUP_ROOT
    try:
        layout = detect(Path(root))
    except CgroupError:
        return []  # no cgroupfs: nothing of ours can exist
    removed: list[str] = []
    for name, dirs in sorted(orphan_candidates(layout).items()):
        if (names is not None and name not in names) or leases.owner_alive(name):
            continue
        cg = Cgroup(name, dirs, layout)
        cg.kill_all()  # the owner is dead: whatever is left inside is an orphan too
        cg.destroy()
        removed.append(f"cgroup {name}")
    return removed
