"""Orphans of a killed ``isobench bench``, removed by ``isobench gc`` (listed in app/commands/gc.py).

The harness leases every host object it makes to its own pid: runc containers ``isobench-<id>`` (and
their bundle overlays), and the per-instance overlay mounts of native runs under
``<root>/tmp/bench/isobench-<id>/rootfs``. When the harness dies (kill -9), the leases go stale; this
removes exactly those objects: ``runc delete -f`` (kills the container), runc's state dir of a container
it never finished creating, a lazy unmount of the overlay
subtree, and the instance directory. Netns holders and ``runc run`` parents die with the harness
(PDEATHSIG); veths, DNAT rules, addresses and cgroups are removed by their own areas' gc.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path

from core import leases
from core import syscalls
from core.paths import PREFIX, HostPaths

_ID = re.compile(rf"/tmp/bench/({PREFIX}[0-9a-f]+)(/|$)")


def _oci_orphans(runtime: str) -> list[str]:
    """Containers of a dead harness that the OCI runtime ``runtime`` (runc, crun, ...) still lists."""
    res = subprocess.run([runtime, "list", "--format", "json"], capture_output=True, text=True)
    try:
        items = json.loads(res.stdout or "null") or []
    except json.JSONDecodeError:
        return []
    return [c["id"] for c in items if c.get("id", "").startswith(PREFIX) and not leases.owner_alive(c["id"])]


def _mounts() -> list[tuple[str, str]]:
    """(mount point, id) of bench overlay mounts and their submounts, deepest first."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        m = _ID.search(point)
        if m:
            out.append((point, m.group(1)))
    return sorted(out, key=lambda pm: pm[0].count("/"), reverse=True)


def gc(paths: HostPaths) -> list[str]:
    removed: list[str] = []
    from bench.environments import ociruntimes
    from bench.environments import runc as runcenv

    for rt in ociruntimes.found_on_host():  # the bench runs each one it finds
        for cid in _oci_orphans(rt.path):
            res = subprocess.run([rt.path, "delete", "-f", cid], capture_output=True, text=True)
            if res.returncode == 0:
                removed.append(f"{rt.name} container {cid}")

    # a runc killed while creating leaves a state dir `runc list` cannot show (no state.json)
    if runcenv.RUNC_STATE_ROOT.is_dir():
        for d in runcenv.RUNC_STATE_ROOT.glob(f"{PREFIX}*"):
            if not leases.owner_alive(d.name) and runcenv.remove_abandoned_state(d.name):
                removed.append(f"runc state dir {d}")
    for point, oid in _mounts():
        if leases.owner_alive(oid):
            continue
        with contextlib.suppress(OSError):
            syscalls.umount(point, syscalls.MNT_DETACH)
            removed.append(f"mount {point}")
    base = paths.tmp / "bench"
    if base.is_dir():
        for d in base.iterdir():
            if not d.name.startswith(PREFIX) or leases.owner_alive(d.name):
                continue
            if (d / "rootfs").is_dir() and Path(d / "rootfs").is_mount():
                continue  # still mounted (unmount failed): never delete through a mount
            for sub in ("upper", "work"):
                shutil.rmtree(d / sub, ignore_errors=True)
            shutil.rmtree(d, ignore_errors=True)
            leases.release(d.name)
            removed.append(f"bench dir {d}")
    scratch = paths.tmp / "bench-work"  # work dirs of runs predating core.scratch (now its gc)
    if scratch.is_dir():
        for d in scratch.iterdir():
            if d.name.startswith(PREFIX) and not leases.owner_alive(d.name):
                shutil.rmtree(d, ignore_errors=True)
                leases.release(d.name)
                removed.append(f"bench scratch {d}")
    for d in (base, scratch):  # the parents go too once empty (a live run recreates them)
        with contextlib.suppress(OSError):
            d.rmdir()
    return removed

