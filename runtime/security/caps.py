"""Linux capabilities: Docker's default set, ``--cap-add``/``--cap-drop`` arithmetic, and the calls that
apply it (bounding set, capset, ambient) in the container's init process.

Root in a container is only as strong as its capabilities: Docker keeps 14 of ~41 (no CAP_SYS_ADMIN,
CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYS_PTRACE, ...), so that ``mount``, ``insmod`` or ``date -s`` fail
even for uid 0. The pure part (names, defaults, set arithmetic) is unit tested; the libc part is a few
prctl/capset calls made in the already-forked child, through the syscalls seam (core.syscalls).
"""

from __future__ import annotations

import functools
import os

from core import syscalls
from core.errors import SecurityError

# <linux/capability.h>: name -> number. Names as users write them, without the CAP_ prefix.
CAPS: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

# Docker's default capability set (moby oci/caps/defaults.go), the same for build containers.
DEFAULT_CAPS: frozenset[str] = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})

# prctl options used here (<linux/prctl.h>)
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def normalize(name: str) -> str:
    """``cap_net_admin`` / ``CAP_NET_ADMIN`` / ``net_admin`` -> ``NET_ADMIN``; "ALL" stays "ALL"."""
    n = name.strip().upper()
    return n[4:] if n.startswith("CAP_") else n


def _check_name(name: str, option: str) -> str:
    n = normalize(name)
    if n != "ALL" and n not in CAPS:
        raise SecurityError(f"{option} {name!r}: unknown capability (known: {', '.join(sorted(CAPS))}, ALL)")
    return n


def effective_set(cap_add: tuple[str, ...] = (), cap_drop: tuple[str, ...] = (),
                  privileged: bool = False, last_cap: int | None = None) -> frozenset[str]:
    """The capability names a container keeps, Docker's way: start from the default set (all caps when
    privileged), drop ``cap_drop`` ("ALL" drops everything), then add ``cap_add`` ("ALL" adds every cap
    the kernel knows). Adding wins over dropping, as in Docker."""
    known = {n for n, v in CAPS.items() if last_cap is None or v <= last_cap}
    adds = {_check_name(c, "--cap-add") for c in cap_add}
    drops = {_check_name(c, "--cap-drop") for c in cap_drop}
    if privileged:
        return frozenset(known)
    kept = set() if "ALL" in drops else set(DEFAULT_CAPS) - drops
    kept |= known if "ALL" in adds else adds
    return frozenset(kept & known)


@functools.lru_cache(maxsize=1)
def cap_last_cap() -> int:
    """Highest capability number of the running kernel (bounding-set drops must cover all of them);
    a constant of the booted kernel, so read once per process (it was two reads of every create)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return max(CAPS.values())


def mask_of(names: frozenset[str]) -> int:
    """64-bit capability mask of ``names``."""
    m = 0
    for n in names:
        m |= 1 << CAPS[n]
    return m


def names_of(mask: int) -> frozenset[str]:
    return frozenset(n for n, v in CAPS.items() if mask & (1 << v))


def prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "") -> int:
    try:
        return syscalls.prctl(option, arg2, arg3)
    except OSError as exc:
        raise OSError(exc.errno, f"prctl({what or option}): {os.strerror(exc.errno)}") from None


def drop_bounding(keep_mask: int, last_cap: int) -> None:
    """Remove every capability not in ``keep_mask`` from the bounding set (needs CAP_SETPCAP, which the
    init still has: this runs before setuid and capset)."""
    for cap in range(last_cap + 1):
        if not keep_mask & (1 << cap):
            prctl(PR_CAPBSET_DROP, cap, what=f"PR_CAPBSET_DROP {cap}")


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, 1 if on else 0, what="PR_SET_KEEPCAPS")


def clear_ambient() -> None:
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="PR_CAP_AMBIENT_CLEAR_ALL")
    except OSError as exc:  # kernels before 4.3 have no ambient set: nothing to clear
        if exc.errno != 22:
            raise


capset = syscalls.capset
capget = syscalls.capget
