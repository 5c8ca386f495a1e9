"""Leased scratch dirs under ``<root>/tmp``, so ``isobench gc`` can remove those of a killed command.

A build, a RUN step or an image load needs a private temp dir; ``kill -9`` skips every ``finally``,
so the dir (and overlay mounts a RUN step made below it) would stay forever unless gc can tell an
orphan from a dir a live command is using -- possibly under another state root's command on the same
host. Each scratch dir is therefore named ``isobench-<kind>-<id>`` and leased to its creator's pid
(:mod:`core.leases`); :func:`gc` removes exactly the dirs whose lease owner is dead.

Half-written files of atomic writes get the same treatment without a lease: :func:`temp_prefix` puts
the writer's pid in the name (``.tmp-<tag>-pid<pid>-*``), and :func:`gc` deletes such files of dead
writers anywhere under the state root (content trees -- layers, flat rootfs dirs, mounts -- excepted).

Dirs with no lease at all (made by code predating this module, or a crash between ``mkdir`` and the
lease -- the lease is taken first, so only the former) are removed when their name embeds a dead pid
(``isobench-<kind>-<pid>-<hex>``, the older tempfile names do not) or when they are older than
:data:`UNLEASED_MAX_AGE_S`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from core import leases
from core import syscalls
from core.fsutil import atomic_write_bytes
from core.paths import PREFIX, HostPaths, new_id

UNLEASED_MAX_AGE_S = 10 * 60  # no build step of a killed command is still running after this
_KIND = re.compile(r"^[a-z][a-z0-9]{0,15}$")
# isobench-<kind>-<pid>-<hex>: the id embeds the creator's pid, so even a lost lease names its owner
_NAME = re.compile(rf"^{PREFIX}([a-z][a-z0-9]*)-(\d+)-([0-9a-f]+)$")


_TEMP_FILE = re.compile(r"^\.tmp-(?:[a-z]+-)?pid(\d+)-")
# content trees never hold state files of ours: do not walk them (and never through a mount)
_CONTENT_DIRS = ("rootfs", "diff", "merged", "upper", "work")


def temp_prefix(tag: str) -> str:
    """``mkstemp`` prefix for a temp file in a state dir: names this process, so gc can tell an orphan."""
    return f".tmp-{_check_kind(tag)}-pid{os.getpid()}-"


def atomic_write_owned(path: Path, data: bytes, mode: int = 0o644) -> None:
    """:func:`core.fsutil.atomic_write_bytes` with a pid-tagged temp name (collectable by :func:`gc`)."""
    atomic_write_bytes(path, data, mode, prefix=temp_prefix("w"))


def _check_kind(kind: str) -> str:
    if not _KIND.match(kind):
        raise ValueError(f"scratch kind {kind!r}: expected lowercase letters/digits, at most 16")
    return kind


def make_scratch(paths: HostPaths, kind: str) -> Path:
    """Create and lease ``<root>/tmp/isobench-<kind>-<pid>-<hex>``; the caller must :func:`remove_scratch`.
    Prefer the :func:`scratch_dir` context manager."""
    obj_id = f"{_check_kind(kind)}-{os.getpid()}-{new_id()}"
    # lease first: a kill between the two leaves a lease without a dir (harmless), never an unowned dir
    leases.take(obj_id, pid=os.getpid(), kind="scratch", root=str(paths.root))
    path = paths.tmp / f"{PREFIX}{obj_id}"
    try:
        paths.tmp.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except BaseException:
        leases.release(obj_id)
        raise
    return path


def remove_scratch(path: Path) -> None:
    """Remove a scratch dir made by :func:`make_scratch` (mounts below it first) and release its lease."""
    _unmount_below(path)
    if not _has_mounts_below(path):  # never delete through a mount that would not go away
        shutil.rmtree(path, ignore_errors=True)
    leases.release(path.name.removeprefix(PREFIX))


@contextlib.contextmanager
def scratch_dir(paths: HostPaths, kind: str) -> Iterator[Path]:
    """A leased scratch dir removed on exit, also on exceptions; after ``kill -9`` :func:`gc` removes it."""
    path = make_scratch(paths, kind)
    try:
        yield path
    finally:
        remove_scratch(path)


# --------------------------------------------------------------------------- gc

def _mount_points() -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            # mountinfo octal-escapes space, tab, newline and backslash in paths
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return out


def _below(path: Path) -> list[str]:
    base = str(path)
    return [m for m in _mount_points() if m == base or m.startswith(base + "/")]


def _has_mounts_below(path: Path) -> bool:
    return bool(_below(path))


def _unmount_below(path: Path) -> list[str]:
    """Lazily unmount every mount at or below ``path``, deepest first; returns what was unmounted."""
    done = []
    for point in sorted(_below(path), key=lambda p: p.count("/"), reverse=True):
        with contextlib.suppress(OSError):
            syscalls.umount(point, syscalls.MNT_DETACH)
            done.append(point)
    return done


    return True


def is_orphan(path: Path, now: float | None = None) -> bool:
    """True when ``path`` (a dir in ``<root>/tmp`` named ``isobench-...``) belongs to no live command."""
    name = path.name
    if not name.startswith(PREFIX) or not path.is_dir() or path.is_symlink():
        return False
    obj_id = name.removeprefix(PREFIX)
    if (leases.lease_dir() / f"{obj_id}.json").exists():
        return not leases.is_live(obj_id)
    m = _NAME.match(name)
    if m and not leases.pid_alive(int(m.group(2))):
        return True
    try:
        age_s = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age_s > UNLEASED_MAX_AGE_S


def orphan_temp_files(paths: HostPaths) -> list[Path]:
    """Pid-tagged temp files (:func:`temp_prefix`) under the state root whose writer is dead."""
    out: list[Path] = []
    if not paths.root.is_dir():
        return out
    skip = {paths.layers, paths.flat, paths.tmp, paths.volumes}  # content and user data: never ours to sweep
    for dirpath, dirnames, filenames in os.walk(paths.root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d not in _CONTENT_DIRS and here / d not in skip
                       and not (here / d).is_mount()]
        for f in filenames:
            m = _TEMP_FILE.match(f)
            if m and not leases.pid_alive(int(m.group(1))):
                out.append(here / f)
        for d in list(dirnames):  # pid-tagged TemporaryDirectory of a killed writer (e.g. VM shim staging)
            m = _TEMP_FILE.match(d)
            if m and not leases.pid_alive(int(m.group(1))):
                out.append(here / d)
                dirnames.remove(d)
    return out


def gc(paths: HostPaths) -> list[str]:
    """Remove orphaned scratch dirs under ``<root>/tmp`` (unmounting what a killed RUN step left
    mounted below them) and half-written pid-tagged temp files of dead writers; returns what was
    removed. Dirs and files of live commands, of any root, are kept."""
    removed: list[str] = []
    for f in orphan_temp_files(paths):
        with contextlib.suppress(FileNotFoundError):
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f)
            else:
                f.unlink()
            removed.append(f"partial file {f}")
    if not paths.tmp.is_dir():
        return removed
    for d in sorted(paths.tmp.iterdir()):
        if not is_orphan(d):
            continue
        for point in _unmount_below(d):
            removed.append(f"scratch mount {point}")
        if _has_mounts_below(d):
            continue  # an unmount failed: deleting would reach into a mounted filesystem
        shutil.rmtree(d, ignore_errors=True)
        leases.release(d.name.removeprefix(PREFIX))
        if not d.exists():
            removed.append(f"scratch dir {d}")
    return removed
