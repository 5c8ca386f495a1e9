"""A container's network from spec to teardown: ``prepare`` (before start), ``attach`` (after the child
has its own network namespace), ``detach`` (on rm/stop/crash clean-up).

The split mirrors what can fail where: everything a user can get wrong (a bad mode/port combination, a
host port already taken, an overlapping subnet) is found in :func:`prepare` *before* the container
process exists, and whatever ``prepare`` took is released again if a later check fails. ``attach`` then
only builds: the veth pair, the address and route inside, the DNAT rules. ``detach`` is idempotent so
``rm``, ``stop --rm`` and ``gc`` can all call it.

The runtime must hold the container's lease (``leases.take(container_id, pid)``) before ``prepare`` so
a concurrent ``gc`` does not take the fresh address and rules for orphans.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Callable, Mapping

from core.errors import NetworkError, UsageError
from core.paths import HostPaths
from runtime.spec import NetworkSpec, PortMapping

LOCALHOST_ENTRIES: tuple[tuple[str, str], ...] = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
)


@dataclass(frozen=True)
class NetworkPlan:
    """What :func:`prepare` decided and reserved; handed to :func:`attach`."""

    container_id: str
    mode: str
    ports: tuple[PortMapping, ...] = ()          # host ports resolved and checked free
    address: ipaddress.IPv4Interface | None = None
    gateway: str | None = None
    bridge: str | None = None
    bridge_index: int = 0
    paths: HostPaths | None = None               # state root the address and port record live in


@dataclass(frozen=True)
class NetworkAttachment:
    """The container's network as built; the runtime writes /etc/hosts and /etc/resolv.conf from it."""

    mode: str
    ip: str | None
    prefixlen: int
    gateway: str | None
    ports: tuple[PortMapping, ...]
    nameservers: tuple[str, ...]
    hosts_entries: tuple[tuple[str, str], ...]


# --- validation: small named checks --------------------------------------------------------------

def _check_mode(spec: NetworkSpec) -> None:
    if spec.mode not in ("bridge", "none", "host"):
        raise UsageError(f"--network {spec.mode}: expected bridge, none or host")


def _check_ports_need_bridge(spec: NetworkSpec) -> None:
    if (spec.ports or spec.publish_all) and spec.mode != "bridge":
        flag = "-p" if spec.ports else "-P"
        raise UsageError(f"{flag} needs --network bridge (got {spec.mode})")


CHECKS: tuple[Callable[[NetworkSpec], None], ...] = (_check_mode, _check_ports_need_bridge)


def wanted_ports(spec: NetworkSpec, exposed_ports: tuple[str, ...]) -> tuple[PortMapping, ...]:
    """``-p`` mappings plus, with ``-P``, every exposed port not already published (random host port)."""
    from runtime.network.portspec import parse_exposed

    ports = list(spec.ports)
    if spec.publish_all:
        have = {(m.container_port, m.protocol) for m in ports}
        for text in exposed_ports:
            m = parse_exposed(text)
            if (m.container_port, m.protocol) not in have:
                ports.append(m)
                have.add((m.container_port, m.protocol))
    return tuple(ports)


# --- prepare / attach / detach -------------------------------------------------------------------

def prepare(container_id: str, spec: NetworkSpec, paths: HostPaths,
            exposed_ports: tuple[str, ...] = ()) -> NetworkPlan:
    for check in CHECKS:
        check(spec)
    if spec.mode != "bridge":
        return NetworkPlan(container_id=container_id, mode=spec.mode)
    from runtime.network import bridge, ipam, portmap

    with contextlib.ExitStack() as undo:
        # ports first: "host port in use" must fail before anything else is created
        ports = portmap.resolve(container_id, wanted_ports(spec, exposed_ports))
        undo.callback(portmap.release_ports, container_id, ports)
        # the address claim before the bridge: `network prune` sees this owner as a user from here on
        addr = ipam.allocate_address(container_id, paths)
        undo.callback(ipam.release_address, container_id, paths)
        info = bridge.ensure_bridge(paths)
        plan = NetworkPlan(container_id=container_id, mode="bridge", ports=ports, address=addr,
                           gateway=str(info.gateway.ip), bridge=info.name, bridge_index=info.ifindex,
                           paths=paths)
        undo.pop_all()
    return plan


def attach(plan: NetworkPlan, pid: int) -> NetworkAttachment:
    """Build the planned network for the process ``pid`` (already in its own netns unless host)."""
    builder = _ATTACH[plan.mode]
    return builder(plan, pid)


def _attach_host(plan: NetworkPlan, pid: int) -> NetworkAttachment:
    return NetworkAttachment(mode="host", ip=None, prefixlen=0, gateway=None, ports=(),
                             nameservers=host_nameservers(allow_loopback=True), hosts_entries=())


def _attach_none(plan: NetworkPlan, pid: int) -> NetworkAttachment:
    from runtime.network.veth import bring_up_loopback, in_netns

    in_netns(pid, bring_up_loopback)
    return NetworkAttachment(mode="none", ip=None, prefixlen=0, gateway=None, ports=(), nameservers=(),
                             hosts_entries=LOCALHOST_ENTRIES)


def _attach_bridge(plan: NetworkPlan, pid: int) -> NetworkAttachment:
    from runtime.network import portmap, veth

    if plan.address is None or plan.gateway is None:
        raise NetworkError(f"network plan of {plan.container_id} has no address: call prepare() first")
    paths = plan.paths or HostPaths.from_env()
    ip = str(plan.address.ip)
    with contextlib.ExitStack() as undo:
        host_if = veth.create_veth(plan.container_id, pid, plan.bridge_index)
        undo.callback(veth.delete_link, host_if)
        veth.configure_inside(pid, ip, plan.address.network.prefixlen, plan.gateway)
        # in-process nftables: well under a millisecond, so no need to overlap it with the veth work
        ports = portmap.publish_ports(plan.container_id, ip, plan.ports, paths)
        undo.pop_all()
    short = plan.container_id.removeprefix("isobench-")[:12]
    return NetworkAttachment(
        mode="bridge", ip=ip, prefixlen=plan.address.network.prefixlen,
        gateway=plan.gateway, ports=ports, nameservers=host_nameservers(allow_loopback=False),
        hosts_entries=LOCALHOST_ENTRIES + ((ip, short),))


class _Background:
    """Run ``fn(*args)`` in a thread; :meth:`result` joins and returns or re-raises its outcome."""

    def __init__(self, fn: Callable, *args) -> None:
        import threading

        self._box: dict[str, object] = {}
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable, args: tuple) -> None:
        try:
            self._box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the joining thread by result()
            self._box["error"] = exc

    def join(self) -> None:
        self._thread.join()

    def result(self):
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]  # type: ignore[misc]
        return self._box["value"]


_ATTACH: Mapping[str, Callable[[NetworkPlan, int], NetworkAttachment]] = {
    "bridge": _attach_bridge, "none": _attach_none, "host": _attach_host,
}

def detach(container_id: str, paths: HostPaths) -> None:
    """Remove the container's veth, rules and address; idempotent, cheap when nothing exists. The rule
    removal and the veth deletion (each waits on the kernel for tens of ms) run side by side."""
    from runtime.network import ipam, portmap
    from runtime.network.veth import veth_name

    errors: list[str] = []
    if portmap.record_path(container_id, paths).exists():
        rules_done = _Background(portmap.unpublish_ports, container_id, paths).result
    else:  # nothing published: no thread, no exec; claims of a prepared plan may still be held
        rules_done = lambda: portmap.release_claims_of(container_id)  # noqa: E731
    for step in (lambda: _delete_veth(veth_name(container_id)), rules_done,
                 lambda: ipam.release_address(container_id, paths)):
        try:
            step()
        except NetworkError as exc:  # keep tearing down the rest, report all at the end
            errors.append(str(exc))
    if errors:
        raise NetworkError(f"detach {container_id}: " + "; ".join(errors))


def _delete_veth(name: str) -> None:
    import os

    if os.path.exists(f"/sys/class/net/{name}"):
        from runtime.network.veth import delete_link

        delete_link(name)


# --- /etc/hosts and /etc/resolv.conf --------------------------------------------------------------

def host_nameservers(allow_loopback: bool, resolv_conf: str = "/etc/resolv.conf") -> tuple[str, ...]:
    """The host's nameservers; for a bridged container loopback ones are useless (they would be the
    container's own loopback), so they are dropped."""
    try:
        with open(resolv_conf, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return ()
    return parse_nameservers(lines, allow_loopback)


def parse_nameservers(lines, allow_loopback: bool) -> tuple[str, ...]:
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if addr.is_loopback and not allow_loopback:
                continue
            out.append(parts[1])
    return tuple(out)


def hosts_file(att: NetworkAttachment, hostname: str | None = None) -> str:
    """Content for the container's /etc/hosts (the runtime writes it)."""
    lines = [f"{ip}\t{names}" for ip, names in att.hosts_entries]
    if hostname and att.ip:
        lines.append(f"{att.ip}\t{hostname}")
    elif hostname:
        lines.append(f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"


def resolv_conf(att: NetworkAttachment) -> str:
    """Content for the container's /etc/resolv.conf (the runtime writes it)."""
    return "".join(f"nameserver {ns}\n" for ns in att.nameservers)
