"""veth pairs between the bridge and a container's network namespace, and loopback bring-up.

Netlink goes through pyroute2, imported lazily: its import costs ~150 ms, which a ``--network none``
start must not pay. That path only needs ``lo`` up: one ``SIOCSIFFLAGS`` ioctl
(``core.syscalls.set_link_up``), which the runtime's parent issues with ``syscalls.link_up_in``
while the child mounts; :func:`bring_up_loopback` issues it from a short helper thread that
``setns``-es into the container's namespace (the bridge and ``none`` network attachments).

Why a helper thread and not ``pyroute2.NetNS``: NetNS (and ``IPRoute(netns=...)``) forks a process to
open its socket, costing milliseconds; ``setns(CLONE_NEWNET)`` changes only the calling thread, so a
thread that enters the namespace, opens its netlink socket there and configures ``eth0``/``lo``/the
default route is both cheap and leaves the rest of the process untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from typing import Callable, Iterator, TypeVar

from core.errors import NetworkError
from core.paths import PREFIX

IFNAMSIZ = 16  # including the NUL: names are at most 15 characters
CONTAINER_IFNAME = "eth0"

T = TypeVar("T")


def veth_name(owner_id: str) -> str:
    """Host side of an owner's veth: ``isobench-<first 6 of id>`` (15 characters, the kernel limit)."""
    key = owner_id.removeprefix(PREFIX)
    name = PREFIX + key[: IFNAMSIZ - 1 - len(PREFIX)]
    if len(key) == 0:
        raise NetworkError(f"owner id {owner_id!r} is empty: cannot name its veth")
    return name


def bring_up_loopback() -> None:
    """Set ``lo`` up in the calling thread's network namespace: one ioctl, no netlink library."""
    from core import syscalls

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        syscalls.set_link_up(s.fileno(), "lo")


def in_netns(pid: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread that has joined the network namespace of ``pid``."""
    from core import syscalls

    path = f"/proc/{pid}/ns/net"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetworkError(f"cannot open {path}: {exc.strerror} (is process {pid} alive?)") from exc
    box: dict[str, object] = {}

    def body() -> None:
        try:
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread and re-raised there
            box["error"] = exc

    try:
        t = threading.Thread(target=body, name=f"netns-{pid}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(fd)
    if "error" in box:
        err = box["error"]
        if isinstance(err, NetworkError):
            raise err
        raise NetworkError(f"network setup in the namespace of pid {pid} failed: {err}") from err  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def netlink_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


@contextlib.contextmanager
def iproute() -> Iterator[object]:
    """An rtnetlink socket in the calling thread's namespace (pyroute2 imported on first use)."""
    from pyroute2 import IPRoute

    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def create_veth(owner_id: str, pid: int, bridge_index: int) -> str:
    """A veth pair whose peer is created directly inside ``pid``'s namespace as ``eth0`` (one netlink
    request instead of create + move + rename), host side enslaved to the bridge and up."""
    host_if = veth_name(owner_id)
    with iproute() as ipr:
        try:
            # master and up in the creating request: one netlink round trip for the host side
            ipr.link("add", ifname=host_if, kind="veth", master=bridge_index, state="up",
                     peer={"ifname": CONTAINER_IFNAME, "net_ns_pid": pid})
        except netlink_error() as exc:
            if getattr(exc, "code", 0) == errno.EEXIST:
                raise NetworkError(f"interface {host_if} already exists (another owner with the same "
                                   f"id prefix, or an orphan: run `isobench gc`)") from exc
            raise NetworkError(f"cannot create veth {host_if} into pid {pid}: {exc}") from exc
    # hairpin: let a container's packets come back out of its own bridge port (its own published
    # port reached through a host address); a sysfs write, cheaper than another netlink request
    try:
        with open(f"/sys/class/net/{host_if}/brport/hairpin_mode", "w", encoding="ascii") as f:
            f.write("1")
    except OSError as exc:
        delete_link(host_if)
        raise NetworkError(f"cannot enable hairpin mode on {host_if}: {exc.strerror}") from exc
    return host_if


def configure_inside(pid: int, address: str, prefixlen: int, gateway: str) -> None:
    """Inside the namespace of ``pid``: lo up, eth0 up with its address, default route via the bridge."""

    def body() -> None:
        bring_up_loopback()
        with iproute() as ns:
            idx = ns.link_lookup(ifname=CONTAINER_IFNAME)
            if not idx:
                raise NetworkError(f"no {CONTAINER_IFNAME} in the namespace of pid {pid}")
            ns.addr("add", index=idx[0], address=address, prefixlen=prefixlen)
            ns.link("set", index=idx[0], state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=gateway)

    in_netns(pid, body)


def delete_link(name: str) -> bool:
    """Delete a link by name; False when it was already gone (deleting one veth end removes both)."""
    if not os.path.exists(f"/sys/class/net/{name}"):
        return False
    with iproute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except netlink_error() as exc:
            if getattr(exc, "code", 0) in (errno.ENODEV, errno.ENOENT):
                return False
            raise NetworkError(f"cannot delete link {name}: {exc}") from exc
    return True


def project_links() -> dict[str, str]:
    """Every link named ``isobench*`` on the host, with its kind ("veth", "bridge", "tun", ...)."""
    names = [n for n in os.listdir("/sys/class/net") if n.startswith(PREFIX.rstrip("-"))]
    if not names:
        return {}
    out: dict[str, str] = {}
    with iproute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name in names:
                info = link.get_attr("IFLA_LINKINFO")
                out[name] = (info.get_attr("IFLA_INFO_KIND") if info is not None else "") or ""
    return out
