"""Masked and read-only paths under /proc and /sys, as Docker and runc set them.

/proc and /sys are not fully namespaced: /proc/kcore is the host's physical memory, /proc/keys lists
keys of every namespace, /proc/sys and /proc/sysrq-trigger change the host kernel, /sys/firmware holds
the host's ACPI tables. runc hides the first kind (bind /dev/null over files, an empty read-only tmpfs
over directories) and makes the second read-only (bind onto itself, remount read-only). This runs in the
container's mount namespace after pivot_root, so nothing here touches the host's mount table.
"""

from __future__ import annotations

import errno
import os
import stat

from core import syscalls

# runc/Docker defaults (moby oci/defaults.go): hidden entirely.
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
# ... and visible but not writable.
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

_NOSUID_NODEV_NOEXEC = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


def mask(path: str) -> bool:
    """Hide ``path``: /dev/null over a file, an empty read-only tmpfs over a directory. False if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        syscalls.mount("tmpfs", path, "tmpfs", syscalls.MS_RDONLY | _NOSUID_NODEV_NOEXEC, "size=0,mode=0555")
    else:
        syscalls.mount("/dev/null", path, None, syscalls.MS_BIND)
    return True


def make_readonly(path: str) -> bool:
    """Bind ``path`` onto itself and remount that bind read-only. False if absent."""
    try:
        syscalls.mount(path, path, None, syscalls.MS_BIND | syscalls.MS_REC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    syscalls.mount(path, path, None,
                   syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY | _NOSUID_NODEV_NOEXEC)
    return True


def apply(masked: tuple[str, ...] = MASKED_PATHS, readonly: tuple[str, ...] = READONLY_PATHS) -> list[str]:
    """Apply both lists; returns the paths changed (absent ones are skipped, as runc does)."""
    done = []
    for p in readonly:
        if make_readonly(p):
            done.append(p)
    for p in masked:
        if mask(p):
            done.append(p)
    return done
