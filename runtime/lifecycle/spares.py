"""Made ahead: the next container's network namespace, state directory and start helper (``keep_spares``).

Why: a process that starts containers one after another (a harness, the API in a loop) spends much of
a start's host-side work on things that do not depend on the next container's options: a network
namespace (~0.5 ms of kernel work), the container's directory with its writable-layer dirs, log
files, /etc files and lease (about ten file creations: ~1 ms on a busy ext4), and the posix_spawn of
the static start helper (~0.3 ms) that then waits for its plan. With spares kept, each
``delete`` makes the *next* container's network namespace, directory and start helper (after the exit:
inside the "incl. delete" span of the benchmark, outside the next start's), and the next ``create`` and
``start`` take them instead of making them on their critical path. The work is the same; only its
place moves. Not overlapped with the start itself: on a host whose scheduler packs runnable tasks onto
few vCPUs (this one: ``kernel.sched_vcpu_pack``), the child woken by the runtime waits for the
runtime's CPU, so runtime work beside the child's is serial anyway. Off by default: a process that
starts one container (a CLI command) would waste them.

What a spare is: a network namespace held by an fd of this process only, with lo up and nothing ever
run in it (:mod:`runtime.namespaces`); a container directory named by a fresh id, under this process's
lease, holding ``upper/``, ``work/``, empty logs and the /etc files of a container with the default
hostname (``create`` rewrites them when the options differ), an empty ``config.json`` the container's
bundle config is written into (in place: nothing reads a container's dir before its state record)
and the empty temp file its first ``state.json`` write fills and renames (a file creation is ~0.1-0.3 ms on this
host's journal-less ext4, which scans recently deleted inodes on every allocation); and ``isobench-nsexec`` spawned with
that directory's logs as its stdio, PID 1 of a new PID namespace, blocked reading its plan (a
container with other stdio, or a plan it cannot run, discards it). No state file: ``ps`` does not list
the directory, and if the process dies, the helper reads EOF and exits and ``gc`` removes the
directory as one whose lease owner is gone. Turning spares off (or the process exiting normally)
removes all of them.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

from core import leases
from core.paths import HostPaths, new_id
from runtime import namespaces
from runtime.lifecycle import state as S

LOGS = ("stdout.log", "stderr.log")
CONFIG = "config.json"  # made empty here; runtime.api writes the container's bundle config into it


@dataclass
class SpareDir:
    owner_pid: int
    paths: HostPaths
    container_id: str
    helper: Any = None  # runtime.lifecycle.process.Prespawned: the start helper, its stdio the dir's logs
    cgroup: Any = None  # (CgroupPlan, Cgroup): isobench-<id> made without limits


_keep = False
_spare: SpareDir | None = None
_atexit_registered = False


def keep(on: bool = True) -> None:
    """Keep spares from now on (``False``: stop, and drop the ones made)."""
    global _keep
    _keep = on
    if not on:
        namespaces.drop_spare_netns()
        drop_dir()


def make(paths: HostPaths) -> None:
    """Make what is missing of the spares (kept only): a network namespace, and a directory in
    ``paths`` with its cgroup and prespawned start helper. A failure leaves nothing half-made."""
    if not _keep:
        return
    namespaces.make_spare_netns()
    _make_dir(paths)


def _make_dir(paths: HostPaths) -> None:
    global _spare, _atexit_registered
    if _spare is not None:
        if _spare.owner_pid == os.getpid() and _spare.paths.root == paths.root:
            return
        if _spare.owner_pid == os.getpid():  # another state root now: that one's spare goes
            drop_dir()
        else:
            _spare = None  # inherited through a fork: the parent's to use and remove
    cid = new_id()
    cdir = S.container_dir(paths, cid)
    spare = SpareDir(os.getpid(), paths, cid)
    leases.take(cid, kind="container", root=str(paths.root))
    try:
        cdir.mkdir(parents=True)
        os.mkdir(cdir / "upper")
        os.mkdir(cdir / "work")
        for name in LOGS:
            os.close(os.open(cdir / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640))
        # the files start's first writes fill: state.json's temp (renamed over), config.json itself
        for name in (f".{S.STATE_FILE}.{os.getpid()}", CONFIG):
            os.close(os.open(cdir / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        S.write_etc_files(cdir, default_hostname(cid), "none")
        spare.cgroup = _make_cgroup(cid)
        spare.helper = _prespawn(cdir, cid, spare.cgroup[0].self_join_files())
        spare.helper.start_time = S.proc_start_time(spare.helper.pid)
    except BaseException:
        release(spare)
        raise
    _spare = spare
    if not _atexit_registered:
        atexit.register(drop_dir)
        _atexit_registered = True


def _prespawn(cdir: Any, cid: str, join: tuple[str, ...]) -> Any:
    """The spare's start helper: spawned now, with /dev/null and the dir's logs as its stdio (what a
    container created without ``stdio`` gets), in the spare cgroup (``join``: its cgroup_join files,
    written by the helper itself), waiting for its plan."""
    from runtime.lifecycle import process

    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    stdio = (os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), os.open(cdir / LOGS[0], flags),
             os.open(cdir / LOGS[1], flags))
    try:
        return process.prespawn_helper(f"isobench-{cid}", stdio, join)
    finally:
        for fd in stdio:
            os.close(fd)


def _make_cgroup(cid: str) -> tuple[Any, Any]:
    """The spare's cgroup as a container without limits gets it: (its plan, the made cgroup)."""
    from core.paths import host_name
    from runtime.cgroups import plan_cgroup
    from runtime.spec import Resources

    plan = plan_cgroup(host_name(cid), Resources())
    return plan, plan.make()


def take_cgroup(spare_cgroup: Any, plan: Any) -> Any:
    """The spare cgroup with ``plan``'s limits written into it when ``plan`` (the container's) names
    the same directories (it does: the same id), else None (then the caller keeps and later removes
    it: the spare helper may be inside it)."""
    if spare_cgroup is None:
        return None
    made_plan, cg = spare_cgroup
    if plan.paths != made_plan.paths or plan.layout != made_plan.layout:
        return None
    return plan.apply_limits(cg)


def default_hostname(cid: str) -> str:
    """A container's hostname without ``--hostname``: its id's first 12 characters, as Docker's."""
    return cid[:12]


def take_dir(paths: HostPaths) -> SpareDir | None:
    """The spare directory for a container of ``paths`` (the caller owns it, its helper and its
    cgroup from now on: :func:`take_cgroup`, ``process.discard_prespawned``), or None (none made, another
    state root's, or inherited through a fork)."""
    global _spare
    spare = _spare
    if spare is None or spare.owner_pid != os.getpid() or spare.paths.root != paths.root:
        return None
    _spare = None
    return spare


def drop_dir() -> None:
    """Remove this process's spare directory and its lease (nothing when there is none)."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and spare.owner_pid == os.getpid():
        release(spare)


def release(spare: SpareDir) -> None:
    """Remove a spare and all of it: one being made that failed, one taken that its container could
    not use (a failed create), or this process's own when spares stop."""
    if spare.helper is not None:
        from runtime.lifecycle import process

        process.discard_prespawned(spare.helper)
        spare.helper = None
    if spare.cgroup is not None:
        spare.cgroup[1].destroy()
        spare.cgroup = None
    S.remove_dir(spare.paths, spare.container_id)
    leases.release(spare.container_id)
