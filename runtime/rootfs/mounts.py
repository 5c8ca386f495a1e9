"""Mount the container's root (child side): overlay, volumes, /proc, /dev, /sys, /etc files, pivot_root.

The plan is computed in the parent (pure data, survives fork). The start helper ``csrc/nsexec.c``
mounts it in C (the same steps, in the same order); :func:`setup` here serves the Python child, which
starts plans with fields the helper does not implement yet (``process.helper_runs``). Paths inside
the new root are resolved with :func:`secure_join` so an image symlink (``/data -> /etc``) cannot
redirect a mount to the host.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from core import syscalls as S

_NOSUID_NODEV_NOEXEC = S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC


@dataclass(frozen=True)
class MountPlan:
    """One volume: ``kind`` bind (also named volumes, by their host dir) or tmpfs."""

    kind: str
    source: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class RootfsPlan:
    lowerdirs: tuple[str, ...]        # image layers, lowest first
    upper: str
    work: str
    merged: str
    mounts: tuple[MountPlan, ...] = ()
    etc_files: tuple[tuple[str, str], ...] = ()   # (container path, host file) bind-mounted
    read_only: bool = False
    overlay_extra: str = ""          # e.g. build steps: "index=off,redirect_dir=off,metacopy=off"
    init_binary: str = ""            # --init: host path of the static init, bound read-only at /dev/init
    # An OCI bundle's root: its mounts and devices (runtime.rootfs.ocimounts) replace the fixed set
    # above; without lowerdirs, ``rootfs_dir`` (root.path) is bound at ``merged`` instead of an overlay.
    oci_mounts: tuple | None = None
    oci_devices: tuple = ()
    cgroup_dirs: tuple[tuple[str, str], ...] = ()  # (hierarchy name, host dir) for a "cgroup" mount
    rootfs_dir: str = ""


def overlay_options(lowerdirs: tuple[str, ...], upper: str, work: str, extra: str = "") -> str:
    """overlayfs wants the *topmost* lowerdir first."""
    opts = f"lowerdir={':'.join(reversed(lowerdirs))},upperdir={upper},workdir={work}"
    return f"{opts},{extra}" if extra else opts


def secure_join(root: str, path: str, _depth: int = 0) -> str:
    """``root``/``path`` with every symlink resolved as if ``root`` were ``/`` (never escapes)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    cur = ""  # relative to root, no leading slash
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = f"{cur}/{part}" if cur else part
        full = f"{root}/{nxt}"
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            cur = nxt
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, f"too many symlinks resolving {path!r} in the container")
            target = os.readlink(full)
            if target.startswith("/"):
                cur = ""
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        cur = nxt
    return f"{root}/{cur}" if cur else root


def _ensure(path: str, is_dir: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _bind(source: str, target: str, read_only: bool, recursive: bool = True) -> None:
    S.mount(source, target, None, S.MS_BIND | (S.MS_REC if recursive else 0))
    if read_only:
        S.mount(None, target, None, S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY | S.MS_NOSUID | S.MS_NODEV)


def mount_dev(root: str) -> None:
    """A tmpfs /dev with the standard nodes, a private devpts, /dev/shm, /dev/mqueue and fd links."""
    from runtime.rootfs.ocimounts import populate_dev

    dev = f"{root}/dev"
    _ensure(dev, True)
    S.mount("tmpfs", dev, "tmpfs", S.MS_NOSUID, "mode=755,size=65536k")
    os.mkdir(f"{dev}/pts")
    S.mount("devpts", f"{dev}/pts", "devpts", S.MS_NOSUID | S.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620")
    os.mkdir(f"{dev}/shm", 0o1777)
    S.mount("shm", f"{dev}/shm", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k")
    os.mkdir(f"{dev}/mqueue")
    S.mount("mqueue", f"{dev}/mqueue", "mqueue", _NOSUID_NODEV_NOEXEC)
    populate_dev(dev)


def mount_sys(root: str) -> None:
    target = f"{root}/sys"
    _ensure(target, True)
    try:  # a fresh sysfs shows this network namespace's interfaces
        S.mount("sysfs", target, "sysfs", _NOSUID_NODEV_NOEXEC | S.MS_RDONLY)
    except OSError:  # host network namespace (--network host): the kernel refuses a new sysfs
        _bind("/sys", target, read_only=True)


def setup(plan: RootfsPlan) -> None:
    """Build the root at ``plan.merged`` and pivot into it. Caller: the child, in its own mount ns."""
    S.mount(None, "/", None, S.MS_REC | S.MS_PRIVATE)  # nothing propagates back to the host
    root = plan.merged
    if plan.lowerdirs:
        S.mount("overlay", root, "overlay", 0, overlay_options(plan.lowerdirs, plan.upper, plan.work,
                                                                      plan.overlay_extra))
    else:
        S.mount(plan.rootfs_dir, root, None, S.MS_BIND | S.MS_REC)
    if plan.oci_mounts is not None:
        from runtime.rootfs import ocimounts

        ocimounts.apply(root, plan.oci_mounts, plan.oci_devices, plan.cgroup_dirs, secure_join)
        _pivot(root, plan.read_only)
        return
    for m in plan.mounts:
        target = secure_join(root, m.destination)
        if m.kind == "tmpfs":
            _ensure(target, True)
            S.mount("tmpfs", target, "tmpfs", S.MS_NOSUID | S.MS_NODEV | (S.MS_RDONLY if m.read_only else 0),
                    "mode=1777")
        else:
            _ensure(target, os.path.isdir(m.source))
            _bind(m.source, target, m.read_only)
    proc = secure_join(root, "/proc")
    _ensure(proc, True)
    S.mount("proc", proc, "proc", _NOSUID_NODEV_NOEXEC)
    mount_dev(root)
    if plan.init_binary:
        _ensure(f"{root}/dev/init", False)
        _bind(plan.init_binary, f"{root}/dev/init", read_only=True, recursive=False)
    mount_sys(root)
    for dest, host_file in plan.etc_files:
        target = secure_join(root, dest)
        if os.path.islink(target):
            continue  # dangling symlink (e.g. systemd-resolved style): leave the image's choice alone
        _ensure(target, False)
        S.mount(host_file, target, None, S.MS_BIND)
    _pivot(root, plan.read_only)


def _pivot(root: str, read_only: bool) -> None:
    os.chdir(root)
    S.pivot_root(".", ".")            # old root stacked under the new one ...
    S.umount(".", S.MNT_DETACH)       # ... and detached: the host's tree is gone from this namespace
    os.chdir("/")
    if read_only:
        S.mount(None, "/", None, S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY)
