"""Container hardening applied in the container's init process just before execve.

Placeholder with the final call signatures (the security area fills in capabilities, no_new_privs,
seccomp and masked paths): the runtime calls :func:`prepare_mounts_in_child` after /proc, /sys and /dev
are mounted in the new root, and :func:`enter` as the very last step before ``execve``.
"""

from __future__ import annotations

import os

from runtime.spec import SecuritySpec


def prepare_mounts_in_child(spec: SecuritySpec) -> None:
    """Mask and read-only paths inside the container's root (after pivot_root, /proc mounted)."""


def enter(spec: SecuritySpec, uid: int, gid: int, groups: tuple[int, ...] = ()) -> None:
    """Become ``uid:gid`` and lock the process down (bounding set, caps, no_new_privs, seccomp)."""
    os.setgroups(list(groups))
    os.setgid(gid)
    os.setuid(uid)
