"""A private writable root for one native or runc instance: overlayfs over the image's flat rootfs.

Why: the flat rootfs under ``paths.flat`` is a shared, cached, read-only copy of the image; native
(chroot) and runc instances must be able to write (ephemerality, fio on the writable layer) without
changing it. An overlay with a fresh upper dir per instance gives each one a writable layer that
disappears with it, exactly like a container's. The mounts live in the host mount namespace, so they
are named ``isobench-<id>``, leased to this process, made private (no propagation into other
namespaces), and removed with one lazy unmount of the whole subtree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from core import leases
from core import syscalls
from core.errors import BenchError
from core.paths import HostPaths, host_name


@dataclass
class OverlayRoot:
    id: str                 # isobench-<id>
    dir: Path               # holds upper/, work/, rootfs/ (and runc's config.json)
    rootfs: Path
    mounted: list[Path]

    def remove(self) -> None:
        """Unmount everything under rootfs (lazy, whole subtree) and delete the instance dir."""
        errors = []
        for target in reversed(self.mounted):
            try:
                syscalls.umount(str(target), syscalls.MNT_DETACH)
            except OSError as exc:
                if exc.errno not in (22, 2):  # EINVAL: not mounted (already gone with its parent)
                    errors.append(str(exc))
        self.mounted.clear()
        if os.path.ismount(self.rootfs):
            # mounted but not (yet) recorded: an exception (a Ctrl-C) landed between mount(2) and the
            # bookkeeping; one lazy unmount of the root takes any binds beneath it along
            try:
                syscalls.umount(str(self.rootfs), syscalls.MNT_DETACH)
            except OSError as exc:
                errors.append(str(exc))
        if os.path.ismount(self.rootfs):
            raise BenchError(f"{self.rootfs} is still mounted after unmount: {'; '.join(errors) or '?'}")
        # only upper/work are deleted recursively: they never hold mounts
        for sub in ("upper", "work"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.rootfs.rmdir()
        for f in self.dir.iterdir() if self.dir.exists() else ():
            if f.is_file():
                f.unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()
        leases.release(self.id)


def instance_dir(paths: HostPaths, obj_id: str) -> Path:
    return paths.tmp / "bench" / obj_id


def make_overlay(paths: HostPaths, lower: Path, obj_id: str | None = None) -> OverlayRoot:
    """Mount overlay(lower=flat rootfs, upper=fresh dir) at ``<dir>/rootfs``."""
    from core.paths import new_id

    oid = host_name(obj_id or new_id())
    leases.take(oid, kind="bench-rootfs", root=str(paths.root))
    d = instance_dir(paths, oid)
    root = OverlayRoot(id=oid, dir=d, rootfs=d / "rootfs", mounted=[])
    try:
        for sub in ("upper", "work", "rootfs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={lower},upperdir={d / 'upper'},workdir={d / 'work'}"
        syscalls.mount(oid, str(root.rootfs), "overlay", 0, opts)
        root.mounted.append(root.rootfs)
        syscalls.mount(None, str(root.rootfs), None, syscalls.MS_PRIVATE)
    except OSError as exc:
        root.remove()
        raise BenchError(f"cannot mount the overlay rootfs for {oid} at {root.rootfs}: {exc}") from exc
    except BaseException:
        root.remove()
        raise
    return root


def bind(root: OverlayRoot, source: str | Path, dest: str, recursive: bool = False) -> None:
    """Bind ``source`` at ``dest`` inside the root (creating the mount point in the upper layer)."""
    target = root.rootfs / dest.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    flags = syscalls.MS_BIND | (syscalls.MS_REC if recursive else 0)
    try:
        syscalls.mount(str(source), str(target), None, flags)
        root.mounted.append(target)
        syscalls.mount(None, str(target), None, syscalls.MS_PRIVATE | (syscalls.MS_REC if recursive else 0))
    except OSError as exc:
        raise BenchError(f"cannot bind {source} at {dest} in {root.id}: {exc}") from exc


def mount_proc(root: OverlayRoot) -> None:
    target = root.rootfs / "proc"
    target.mkdir(parents=True, exist_ok=True)
    try:
        syscalls.mount("proc", str(target), "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
        root.mounted.append(target)
    except OSError as exc:
        raise BenchError(f"cannot mount /proc in {root.id}: {exc}") from exc
