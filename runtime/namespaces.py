"""Which namespaces a container gets, and the user-namespace id maps.

Kept apart from the start path so the rules (which flags for which config, what ``--userns=remap``
maps to) are pure and unit tested, while the start path only calls ``unshare`` with the result.

Ordering (see ``runtime.lifecycle.process``): the PID namespace is created by the *parent* just
around ``fork`` so the forked child is PID 1 directly (one fork instead of two); the child unshares
mount/UTS/IPC/net (+cgroup) itself, and the user namespace last, after every mount, because mounts
made by real root stay owned by the initial user namespace (proc and sysfs cannot be mounted from a
child user namespace whose PID namespace belongs to the host).
"""

from __future__ import annotations

import os

from core import syscalls
from runtime.spec import ContainerConfig

# --userns=remap: container uid/gid 0..65535 become host 100000..165535 (Docker's dockremap default
# range size; a fixed base keeps files written to volumes predictable).
REMAP_HOST_BASE = 100_000
REMAP_SIZE = 65_536

# Namespaces every container gets, by name as in /proc/<pid>/ns (used by exec to join them).
BASE_NAMESPACES: dict[str, int] = {
    "mnt": syscalls.CLONE_NEWNS,
    "uts": syscalls.CLONE_NEWUTS,
    "ipc": syscalls.CLONE_NEWIPC,
}


def child_flags(config: ContainerConfig, cgroupns: bool) -> int:
    """unshare(2) flags the child calls first (everything except PID, made by the parent, and USER,
    made last)."""
    flags = syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC
    if config.network.mode != "host":
        flags |= syscalls.CLONE_NEWNET
    if cgroupns:
        flags |= syscalls.CLONE_NEWCGROUP
    return flags


def joined_namespaces(config_network_mode: str, userns_remap: bool, cgroupns: bool) -> list[str]:
    """Names under /proc/<pid>/ns that ``exec`` joins, in setns order.

    The container's user namespace (``--userns=remap``) is joined *last*: every other namespace was
    made by real root before it and is owned by the host's user namespace, so joining those needs the
    host privileges we lose on entering it; and the kernel refuses a user namespace to a chrooted
    caller, which we no longer are once in the container's mount namespace."""
    names = ["ipc", "uts"]
    if config_network_mode != "host":
        names.append("net")
    if cgroupns:
        names.append("cgroup")
    names += ["pid", "mnt"]
    if userns_remap:
        names.append("user")
    return names


def id_map_line(host_base: int = REMAP_HOST_BASE, size: int = REMAP_SIZE) -> str:
    """One uid_map/gid_map line: container 0 -> ``host_base``, ``size`` ids."""
    return f"0 {host_base} {size}\n"


def write_id_maps(pid: int, host_base: int = REMAP_HOST_BASE, size: int = REMAP_SIZE,
                  maps: tuple[str, str] | None = None) -> None:
    """Map root of ``pid``'s new user namespace to the unprivileged host range (parent side), or write
    ``maps`` (uid_map, gid_map text of an OCI bundle's linux.uidMappings/gidMappings)."""
    uid_map, gid_map = maps or (id_map_line(host_base, size),) * 2
    syscalls.write_file(f"/proc/{pid}/uid_map", uid_map)
    syscalls.write_file(f"/proc/{pid}/gid_map", gid_map)


def host_uid(container_uid: int, userns_remap: bool) -> int:
    return container_uid + REMAP_HOST_BASE if userns_remap else container_uid


_PIDNS_FD: int | None = None


def own_pidns_fd() -> int:
    """An fd on this process's PID namespace, kept open to switch ``pid_for_children`` back after the
    parent made a new PID namespace for the next fork."""
    global _PIDNS_FD
    if _PIDNS_FD is None:
        _PIDNS_FD = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    return _PIDNS_FD


# ----------------------------------------------------------------------------- a network namespace made ahead

_spare_netns: tuple[int, int] | None = None   # (owner pid, fd): one fresh namespace, lo up, never entered


def make_spare_netns() -> None:
    """Make the *next* container's network namespace now, unless this process holds one already
    (runtime.lifecycle.spares decides when): this thread unshares it and switches straight back.

    Why: a new network namespace costs ~0.4-0.5 ms of kernel work (every per-namespace subsystem
    initialised) on the start path of every container that gets one; a container given this one joins
    it instead. It is fresh (nothing ever ran in it) with its loopback up, as ``--network none``
    gives, and held by an fd of this process only: it dies with the process, no host object leaks."""
    global _spare_netns
    if _spare_netns is not None:
        if _spare_netns[0] == os.getpid():
            return
        drop_spare_netns()  # inherited through a fork: this process's copy of the parent's fd
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        try:
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            syscalls.setns(own, syscalls.CLONE_NEWNET)
    finally:
        os.close(own)
    try:
        syscalls.link_up_in(fd, "lo")
    except BaseException:
        os.close(fd)
        raise
    _spare_netns = (os.getpid(), fd)


def take_spare_netns() -> int | None:
    """The spare namespace's fd (the caller closes it once the container joined), or None."""
    global _spare_netns
    spare, _spare_netns = _spare_netns, None
    if spare is None:
        return None
    owner, fd = spare
    if owner != os.getpid():  # inherited through a fork: the parent's, which may hand it out too
        os.close(fd)
        return None
    return fd


def drop_spare_netns() -> None:
    """Close the spare namespace's fd (the namespace ends with it), if there is one."""
    fd = take_spare_netns()
    if fd is not None:
        os.close(fd)
