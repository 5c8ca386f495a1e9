"""An OCI bundle's ``mounts``, ``linux.devices`` and ``/dev`` population, as runc does them.

Split like the rest of the start path: :func:`plan` (parent, pure: runtime-spec options -> mount flags
and data via runc's tables) and :func:`apply` (the container's child, inside its mount namespace,
before pivot_root: every destination is resolved with ``secure_join`` so an image symlink cannot
send a mount to the host). ``cgroup`` mounts get what runc gives on each layout: cgroup2 with a cgroup
namespace, else a read-only tmpfs holding the container's own cgroup directory of each v1 hierarchy.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from core import syscalls as S

# runc's mountFlags table (libcontainer/specconv/spec_linux.go): option -> (clear?, flag)
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "acl": (False, 0), "async": (True, S.MS_SYNCHRONOUS), "atime": (True, S.MS_NOATIME),
    "bind": (False, S.MS_BIND), "defaults": (False, 0), "dev": (True, S.MS_NODEV),
    "diratime": (True, S.MS_NODIRATIME), "dirsync": (False, S.MS_DIRSYNC), "exec": (True, S.MS_NOEXEC),
    "mand": (False, S.MS_MANDLOCK), "noatime": (False, S.MS_NOATIME), "nodev": (False, S.MS_NODEV),
    "nodiratime": (False, S.MS_NODIRATIME), "noexec": (False, S.MS_NOEXEC), "nomand": (True, S.MS_MANDLOCK),
    "norelatime": (True, S.MS_RELATIME), "nostrictatime": (True, S.MS_STRICTATIME), "nosuid": (False, S.MS_NOSUID),
    "rbind": (False, S.MS_BIND | S.MS_REC), "relatime": (False, S.MS_RELATIME), "remount": (False, S.MS_REMOUNT),
    "ro": (False, S.MS_RDONLY), "rw": (True, S.MS_RDONLY), "strictatime": (False, S.MS_STRICTATIME),
    "suid": (True, S.MS_NOSUID), "sync": (False, S.MS_SYNCHRONOUS), "lazytime": (False, S.MS_LAZYTIME),
}
PROPAGATION: dict[str, int] = {
    "private": S.MS_PRIVATE, "rprivate": S.MS_PRIVATE | S.MS_REC, "shared": S.MS_SHARED,
    "rshared": S.MS_SHARED | S.MS_REC, "slave": S.MS_SLAVE, "rslave": S.MS_SLAVE | S.MS_REC,
    "unbindable": S.MS_UNBINDABLE, "runbindable": S.MS_UNBINDABLE | S.MS_REC,
}
# runc's default devices (libcontainer/specconv AllowedDevices): created in every container's /dev
DEFAULT_DEVICES: dict[str, tuple[int, int]] = {
    "null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0),
}
DEV_LINKS: dict[str, str] = {
    "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
}
DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
_BIND_KEEP = S.MS_RDONLY | S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC | S.MS_NOATIME | S.MS_NODIRATIME | S.MS_RELATIME


@dataclass(frozen=True)
class Mount:
    """One mount, ready for mount(2)."""

    destination: str
    fstype: str
    source: str
    flags: int
    data: str
    propagation: int = 0

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & S.MS_BIND)


@dataclass(frozen=True)
class Device:
    path: str
    mode: int          # S_IF* | permission bits
    rdev: int
    uid: int
    gid: int


def parse_options(options: tuple[str, ...]) -> tuple[int, int, str]:
    """Options -> (flags, propagation, data) with runc's tables; the rest is data for the file system."""
    flags, prop, data = 0, 0, []
    for opt in options:
        if opt in FLAG_OPTIONS:
            clear, flag = FLAG_OPTIONS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in PROPAGATION:
            prop |= PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, prop, ",".join(data)


def plan(mounts: tuple, devices: tuple = ()) -> tuple[tuple[Mount, ...], tuple[Device, ...]]:
    """Bundle mounts/devices (runtime.oci.bundle types) -> what :func:`apply` mounts and makes."""
    out = []
    for m in mounts:
        flags, prop, data = parse_options(m.options)
        if m.type == "bind":
            flags |= S.MS_BIND
        out.append(Mount(m.destination, m.type, m.source, flags, data, prop))
    devs = tuple(Device(d.path, DEVICE_TYPES[d.type] | (d.file_mode & 0o7777), os.makedev(d.major, d.minor),
                        d.uid, d.gid) for d in devices)
    return tuple(out), devs


def _ensure(path: str, is_dir: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _mount_one(root: str, m: Mount, cgroup_dirs: tuple[tuple[str, str], ...], secure_join) -> None:
    target = secure_join(root, m.destination)
    if m.fstype == "cgroup":
        _mount_cgroup(target, m, cgroup_dirs)
        return
    if m.is_bind:
        try:
            is_dir = os.path.isdir(m.source)
            os.stat(m.source)
        except OSError as exc:
            raise OSError(exc.errno, f"bind mount source {m.source!r} for {m.destination}: {exc.strerror}") from None
        _ensure(target, is_dir)
        S.mount(m.source, target, None, m.flags & (S.MS_BIND | S.MS_REC))
        extra = m.flags & _BIND_KEEP
        if extra:  # a bind ignores flags: they take a remount of the bind
            S.mount(None, target, None, S.MS_BIND | S.MS_REMOUNT | extra)
    else:
        _ensure(target, True)
        try:
            S.mount(m.source or m.fstype, target, m.fstype, m.flags, m.data or None)
        except OSError as exc:
            if m.fstype == "sysfs" and exc.errno == errno.EPERM:
                # the host's network namespace: the kernel refuses a new sysfs; bind the host's, read-only
                S.mount("/sys", target, None, S.MS_BIND | S.MS_REC)
                S.mount(None, target, None, S.MS_BIND | S.MS_REMOUNT | S.MS_RDONLY | S.MS_NOSUID | S.MS_NODEV)
            else:
                raise OSError(exc.errno, f"mount {m.fstype} on {m.destination}: {exc.strerror}") from None
    if m.propagation:
        S.mount(None, target, None, m.propagation)


def _mount_cgroup(target: str, m: Mount, cgroup_dirs: tuple[tuple[str, str], ...]) -> None:
    _ensure(target, True)
    ro = m.flags & S.MS_RDONLY
    base = S.MS_NOSUID | S.MS_NODEV | S.MS_NOEXEC
    if len(cgroup_dirs) == 1 and cgroup_dirs[0][0] == "unified":  # v2 + cgroup namespace: its own root
        S.mount("cgroup2", target, "cgroup2", base | ro)
        return
    S.mount("tmpfs", target, "tmpfs", base, "mode=755")
    for name, host_dir in cgroup_dirs:  # v1: each hierarchy shows only the container's own cgroup
        sub = f"{target}/{name}"
        os.mkdir(sub, 0o755)
        S.mount(host_dir, sub, None, S.MS_BIND)
        S.mount(None, sub, None, S.MS_BIND | S.MS_REMOUNT | base | ro)
    if ro:
        S.mount(None, target, None, S.MS_REMOUNT | base | S.MS_RDONLY, "mode=755")


def populate_dev(dev: str) -> None:
    """runc's default nodes and links in a tmpfs ``/dev`` and /dev/console: /dev/null until a terminal's
    slave is bound over it (no host console reaches the container)."""
    old_umask = os.umask(0)  # nodes get exactly their mode, without a chmod each
    try:
        for name, (major, minor) in DEFAULT_DEVICES.items():
            if not os.path.lexists(f"{dev}/{name}"):
                S.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
    finally:
        os.umask(old_umask)
    for name, target in DEV_LINKS.items():
        if not os.path.lexists(f"{dev}/{name}"):
            os.symlink(target, f"{dev}/{name}")
    _ensure(f"{dev}/console", False)
    S.mount(f"{dev}/null", f"{dev}/console", None, S.MS_BIND)


def make_devices(root: str, devices: tuple[Device, ...], secure_join) -> None:
    old_umask = os.umask(0)
    try:
        for d in devices:
            path = secure_join(root, d.path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.lexists(path):
                os.unlink(path)
            S.mknod(path, d.mode, d.rdev)
            os.chown(path, d.uid, d.gid)
    finally:
        os.umask(old_umask)


def apply(root: str, mounts: tuple[Mount, ...], devices: tuple[Device, ...],
          cgroup_dirs: tuple[tuple[str, str], ...], secure_join) -> None:
    """Mount everything under ``root`` (before pivot_root), then fill a tmpfs /dev."""
    dev_tmpfs = False
    for m in mounts:
        _mount_one(root, m, cgroup_dirs, secure_join)
        if m.destination.rstrip("/") == "/dev" and m.fstype == "tmpfs":
            dev_tmpfs = True
    make_devices(root, devices, secure_join)
    if dev_tmpfs:
        populate_dev(f"{root}/dev")
