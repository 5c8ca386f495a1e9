"""Made ahead: the next container's network namespace and state directory (``keep_spares``).

Why: a process that starts containers one after another (a harness, the API in a loop) spends most of
a start's host-side work on things that do not depend on the next container's options: a network
namespace (~0.5 ms of kernel work) and the container's directory with its writable-layer dirs, log
files, /etc files and lease (about ten file creations: ~1 ms on a busy ext4). With spares kept, each
start makes the *next* container's network namespace while its own child builds its root (inside its
own span), each delete makes the next directory (after the exit, inside the "incl. delete" span: file
creations beside the child's overlay mount would slow that mount down), and the next ``create`` takes
them instead of making them on its critical path. The work is the same; only its place moves. Off by default: a process that
starts one container (a CLI command) would waste them.

What a spare is: a network namespace held by an fd of this process only, with lo up and nothing ever
run in it (:mod:`runtime.namespaces`); a container directory named by a fresh id, under this process's
lease, holding ``upper/``, ``work/``, empty logs and the /etc files of a container with the default
hostname (``create`` rewrites them when the options differ). No state file: ``ps`` does not list it,
and if the process dies, ``gc`` removes it as a directory whose lease owner is gone. Turning spares off
(or the process exiting normally) removes the spare directory.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

from core import leases
from core.paths import HostPaths, new_id
from runtime import namespaces
from runtime.lifecycle import state as S

LOGS = ("stdout.log", "stderr.log")


@dataclass(frozen=True)
class SpareDir:
    owner_pid: int
    paths: HostPaths
    container_id: str


_keep = False
_spare: SpareDir | None = None
_atexit_registered = False


def keep(on: bool = True) -> None:
    """Keep spares from now on (``False``: stop, and drop the ones made)."""
    global _keep
    _keep = on
    namespaces.keep_spare_netns(on)
    if not on:
        drop_dir()


def make(paths: HostPaths) -> None:
    """Make what is missing of the spares (kept only): a network namespace and a directory in ``paths``."""
    make_netns()
    make_dir(paths)


def make_netns() -> None:
    """The spare network namespace, if kept and missing (``runtime.api.start`` makes it while the
    current container builds its root: kernel work only, on the other CPU)."""
    if _keep:
        namespaces.make_spare_netns()


def make_dir(paths: HostPaths) -> None:
    """The spare directory in ``paths``, if kept and missing (``runtime.api.delete`` makes it: file
    creations, which on the start path would compete with the container's own overlay mount)."""
    global _spare, _atexit_registered
    if not _keep:
        return
    if _spare is not None:
        if _spare.owner_pid == os.getpid() and _spare.paths.root == paths.root:
            return
        if _spare.owner_pid == os.getpid():  # another state root now: that one's spare goes
            drop_dir()
        else:
            _spare = None  # inherited through a fork: the parent's to use and remove
    cid = new_id()
    cdir = S.container_dir(paths, cid)
    leases.take(cid, kind="container", root=str(paths.root))
    try:
        cdir.mkdir(parents=True)
        os.mkdir(cdir / "upper")
        os.mkdir(cdir / "work")
        for name in LOGS:
            os.close(os.open(cdir / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640))
        S.write_etc_files(cdir, default_hostname(cid), "none")
    except BaseException:
        S.remove_dir(paths, cid)
        leases.release(cid)
        raise
    _spare = SpareDir(os.getpid(), paths, cid)
    if not _atexit_registered:
        atexit.register(drop_dir)
        _atexit_registered = True


def default_hostname(cid: str) -> str:
    """A container's hostname without ``--hostname``: its id's first 12 characters, as Docker's."""
    return cid[:12]


def take_dir(paths: HostPaths) -> str | None:
    """The spare directory's container id for a container of ``paths``, or None (none made, another
    state root's, or inherited through a fork)."""
    global _spare
    spare = _spare
    if spare is None or spare.owner_pid != os.getpid() or spare.paths.root != paths.root:
        return None
    _spare = None
    return spare.container_id


def drop_dir() -> None:
    """Remove this process's spare directory and its lease (nothing when there is none)."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and spare.owner_pid == os.getpid():
        S.remove_dir(spare.paths, spare.container_id)
        leases.release(spare.container_id)
