"""Orphaned containers of crashed runs, removed by `isobench gc` (first of the gc areas).

A container is an orphan when no live process holds its lease (its monitor, or the in-process harness
that created it, was killed) and it was not simply *stopped*: an exited container of a live user is
kept until ``rm``, as in Docker. For an orphan, gc kills its PID 1 (the kernel then kills the whole PID
namespace and drops its mounts with the mount namespace), empties and removes its cgroup, detaches its
network, and removes its directory and name. Directories that never got a state file (a crash inside
``create``) are removed once no lease covers them. In every container dir, kept or not, half-written
``.state.json.<pid>`` temp files of writers that are dead (a ``kill -9`` between write and rename in
:func:`runtime.lifecycle.state.write_state`) are removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from core import leases
from core.errors import IsobenchError
from core.paths import HostPaths, host_name

STATELESS_GRACE_S = 60.0  # a dir without state.json younger than this may be a create in progress


def _is_orphan(st: dict) -> bool:
    if leases.owner_alive(st["id"]):
        return False
    return not (st.get("status") == "exited" and not st.get("auto_remove"))


def _kill_pid1(st: dict) -> None:
    from runtime.lifecycle.state import wait_pid_exit
    from runtime.lifecycle.state import alive

    pid, start = st.get("pid"), st.get("pid_start")
    if pid and alive(pid, start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
        wait_pid_exit(int(pid), start, 5.0)


def _remove_cgroup(cid: str) -> None:
    from runtime.cgroups import open_cgroup

    try:
        cg = open_cgroup(host_name(cid))
    except IsobenchError:
        return  # never made, or already removed
    cg.kill_all()
    cg.destroy()


def remove_orphan(paths: HostPaths, st: dict) -> None:
    from runtime.lifecycle import state as S

    cid = st["id"]
    _kill_pid1(st)
    _remove_cgroup(cid)
    if st.get("network_mode") == "bridge":
        from runtime import network

        network.detach(cid, paths)
    S.release_name(paths, st.get("name"), cid)
    S.remove_dir(paths, cid)
    leases.release(cid)


    return True


def stray_state_temps(cdir) -> list:
    """``.state.json.<pid>`` files in ``cdir`` whose writer is no longer running."""
    from runtime.lifecycle.state import TEMP_STATE

    out = []
    try:
        entries = list(os.scandir(cdir))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for e in entries:
        m = TEMP_STATE.match(e.name)
        if m and not leases.pid_alive(int(m.group(1))):
            out.append(cdir / e.name)
    return out


def gc(paths: HostPaths) -> list[str]:
    """Remove this state root's orphaned containers; return what was removed."""
    from runtime.lifecycle import state as S

    removed: list[str] = []
    for cid in S.all_ids(paths):
        cdir = S.container_dir(paths, cid)
        for tmp in stray_state_temps(cdir):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(f"partial state file {tmp}")
        try:
            st = S.read_state(cdir)
        except IsobenchError:
            st = None
        if st is None:
            with contextlib.suppress(OSError):
                if not leases.owner_alive(cid) and time.time() - cdir.stat().st_mtime > STATELESS_GRACE_S:
                    S.remove_dir(paths, cid)
                    removed.append(f"container dir {cdir} (no state)")
            continue
        if not _is_orphan(st):
            continue
        remove_orphan(paths, st)
        removed.append(f"container {cid}" + (f" ({st['name']})" if st.get("name") else ""))
    names = S.names_dir(paths)
    if names.is_dir():
        for entry in names.iterdir():
            with contextlib.suppress(OSError):
                owner = entry.read_text().strip()
                fresh = time.time() - entry.stat().st_mtime < STATELESS_GRACE_S  # a create in progress
                if not fresh and not S.container_dir(paths, owner).is_dir():
                    entry.unlink()
                    removed.append(f"stale container name {entry.name}")
    return removed
