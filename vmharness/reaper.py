"""A child-subreaper parent for libvirtd: ``python -m vmharness.reaper /usr/sbin/libvirtd``.

libvirtd double-forks QEMU, so an exited QEMU becomes a zombie of the nearest subreaper — normally
PID 1. On these machines PID 1 is a sandbox process that reaps lazily (~1.7 s), and libvirt keeps a
destroyed domain "active" until the zombie is reaped, which would add that delay to every VM's
"domain gone" phase. Running libvirtd under this small reaper (PR_SET_CHILD_SUBREAPER, blocking
``wait()`` loop) makes QEMU's parent reap it at once, as a normal init would. The reaper detaches
from the caller's session and exits when libvirtd does. It also gives libvirtd a private mount
namespace (see :func:`private_mounts`).
"""

from __future__ import annotations

import os
import subprocess
import sys

from core import syscalls


def private_mounts(mounts_file: str = "/proc/self/mounts") -> None:
    """Give the daemon a private mount namespace without stray cgroup mounts.

    libvirt finds cgroup hierarchies by parsing /proc/mounts at every domain start; a container
    rootfs whose cgroup mounts are visible on the host (e.g. ``.../rootfs/sys/fs/cgroup/cpu``) makes it
    pick that path and fail to start the domain once the container is gone. In a private namespace,
    later host mounts do not propagate, and cgroup mounts outside /sys/fs/cgroup are dropped."""
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    except OSError as exc:
        print(f"vmharness.reaper: no private mount namespace ({exc}); continuing", file=sys.stderr)
        return
    with open(mounts_file) as f:
        stray = [ln.split()[1] for ln in f if ln.split()[2:3] in (["cgroup"], ["cgroup2"])
                 and not ln.split()[1].startswith("/sys/fs/cgroup")]
    for target in sorted(stray, key=len, reverse=True):
        try:
            syscalls.umount(target.replace("\\040", " "), syscalls.MNT_DETACH)
        except OSError:
            pass  # already gone with its parent


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m vmharness.reaper DAEMON [ARGS...]", file=sys.stderr)
        return 2
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    private_mounts()
    daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except KeyboardInterrupt:
            continue
        if pid == daemon.pid:
            daemon.returncode = os.waitstatus_to_exitcode(status)
            return daemon.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
