"""The only place that calls libc or changes the host directly.

Mount, unshare, setns, pivot_root, sethostname and friends go through here so that pure logic elsewhere
(spec conversion, validation, cgroup value rules, IPAM, domain XML) can be unit tested without root,
and so every host effect is easy to find. Thin wrappers: they raise ``OSError`` with the errno and the
argument that failed; callers turn that into an :class:`~core.errors.IsobenchError` with context.
"""

from __future__ import annotations

import _socket  # the C module only (``socket`` costs milliseconds); imported here, not in the child,
import ctypes   # where a first import costs the container start ~3 ms
import fcntl
import os
import struct
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import subprocess

def _load_libc() -> ctypes.CDLL:
    # glibc's soname directly: ctypes.util.find_library runs `ldconfig -p` (a subprocess, ~10 ms) and
    # this module is imported on the container start path.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes import util

        return ctypes.CDLL(util.find_library("c") or "libc.so.6", use_errno=True)


_libc = _load_libc()
# Resolve now, in the parent: ctypes looks a symbol up (dlsym, a new function object) on its first
# attribute access, and a forked child would repeat that for each call on the start path (~60 us each).
for _name in ("mount", "umount2", "unshare", "setns", "syscall", "sethostname", "prctl", "capset", "capget",
              "madvise"):
    getattr(_libc, _name)
del _name

# <linux/sockios.h>, <linux/if.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_SYNCHRONOUS = 16
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_UNBINDABLE = 1 << 17
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# <sys/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else s.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount {source!r} on {target!r} ({fstype})")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target!r}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare(0x{flags:x})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), f"setns(fd={fd})")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(155, _b(new_root), _b(put_old)), f"pivot_root {new_root!r}")  # SYS_pivot_root x86_64


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= ``first`` close-on-exec (close_range(2) with CLOSE_RANGE_CLOEXEC), so a container
    inherits only the descriptors the runtime hands it on purpose."""
    _check(_libc.syscall(436, ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(4)),
           "close_range")


def link_up_in(netns_fd: int, ifname: str) -> None:
    """Set IFF_UP on ``ifname`` in another network namespace (``netns_fd``: /proc/<pid>/ns/net).

    SIOCGIFFLAGS/SIOCSIFFLAGS ioctls cost microseconds where a netlink library costs an import. An
    interface ioctl acts on its socket's namespace, so only the socket's creation happens inside the
    target (this thread's setns, and straight back): the caller never runs anything there."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(netns_fd, CLONE_NEWNET)
        try:
            sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        finally:
            setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
    try:
        set_link_up(sock.fileno(), ifname)
    finally:
        sock.close()


def set_link_up(sock_fd: int, ifname: str) -> None:
    """Set IFF_UP on ``ifname`` in the network namespace of the socket ``sock_fd`` (SIOCGIFFLAGS, then
    SIOCSIFFLAGS only when it is down)."""
    req = struct.pack("16sH22x", ifname.encode(), 0)
    flags = struct.unpack_from("16sH", fcntl.ioctl(sock_fd, SIOCGIFFLAGS, req))[1]
    if not flags & IFF_UP:
        fcntl.ioctl(sock_fd, SIOCSIFFLAGS, struct.pack("16sH22x", ifname.encode(), flags | IFF_UP))


def set_process_name(name: str) -> None:
    """prctl(PR_SET_NAME): the name ``ps``/``top`` show (at most 15 bytes are kept)."""
    raw = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(PR_SET_NAME, raw, 0, 0, 0), f"prctl(PR_SET_NAME, {name!r})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname {name!r}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4),
                              ctypes.c_ulong(arg5)), f"prctl({option})")


def prctl_ptr(option: int, arg2: int, ptr: object) -> int:
    """prctl with a pointer third argument (``PR_SET_SECCOMP`` takes a ``struct sock_fprog *``);
    ``ptr`` is a ``ctypes.byref``/``pointer`` the caller built before fork."""
    return _check(_libc.prctl(option, ctypes.c_ulong(arg2), ptr, ctypes.c_ulong(0), ctypes.c_ulong(0)),
                  f"prctl({option})")


# <linux/capability.h>: capset/capget with version 3 headers (two 32-bit data words per set)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_CapData2 = _CapData * 2  # ctypes makes a new array type on every ``_CapData * 2``: once, here


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) on the calling thread with 64-bit masks (two 32-bit data words, version 3)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapData2()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), f"capset(eff=0x{effective:x}, prm=0x{permitted:x})")


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of ``pid`` (0 = the calling thread)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = _CapData2()
    _check(_libc.capget(ctypes.byref(hdr), data), f"capget({pid})")
    lo, hi = data[0], data[1]
    return (lo.effective | hi.effective << 32, lo.permitted | hi.permitted << 32,
            lo.inheritable | hi.inheritable << 32)


_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def madvise(addr: int, length: int, advice: int) -> bool:
    """madvise(2) on this process's own mapping; False (errno kept) where the kernel refuses it."""
    return _libc.madvise(addr, length, advice) == 0


# rt_sigaction(2) by number: glibc's signal()/sigaction() refuse its two reserved real-time signals
# (32, 33), yet an *ignored* one survives execve into a container's process.
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}.get(os.uname().machine)
_SIGACTION_DFL = ctypes.create_string_buffer(32)  # struct kernel_sigaction, all zero: SIG_DFL, no flags


def default_disposition_raw(sig: int) -> None:
    """Set ``sig`` to SIG_DFL with the raw system call (also glibc's reserved signals)."""
    if _SYS_RT_SIGACTION is None:
        return  # another architecture: only Python's own reset applies
    _check(_libc.syscall(ctypes.c_long(_SYS_RT_SIGACTION), ctypes.c_long(sig), _SIGACTION_DFL, None,
                         ctypes.c_long(8)), f"rt_sigaction({sig}, SIG_DFL)")


def mknod(path: str, mode: int, device: int) -> None:
    os.mknod(path, mode, device)


def write_file(path: str, data: str) -> None:
    """Write a kernel interface file (cgroup, /proc) in one write(2), as the kernel expects."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def read_file(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def run(argv: Sequence[str], *, check: bool = True, timeout_s: float | None = None,
        input_bytes: bytes | None = None, env: dict[str, str] | None = None,
        capture: bool = True) -> subprocess.CompletedProcess:
    """Run a host command (iptables, mkfs.ext4, runc, ...). Output captured as text."""
    import subprocess  # not at module level: this module is on the container start path

    return subprocess.run(list(argv), check=check, timeout=timeout_s, input=input_bytes, env=env,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None)
