"""The host bridge ``isobench0`` every bridged container and VM tap plugs into.

Created on first use (not at install) so a host that never runs a bridged container is never changed;
it stays until ``isobench network prune`` so container start-up does not pay for it. The subnet is
configurable per state root (``network/config.json``; default 10.88.0.0/16, gateway = first address)
and refused when it overlaps a route the host already has, since the host could then no longer reach
that network. Creation is serialized by a host-wide lock because the bridge is host-wide while state
roots are not; :func:`ensure_bridge` is cached per process and costs one ``stat`` when the bridge
exists.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core.errors import NetworkError, UsageError
from core.fsutil import atomic_write_json, file_lock, read_json
from core.paths import HostPaths

BRIDGE_NAME = "isobench0"
DEFAULT_SUBNET = "10.88.0.0/16"
MAX_PREFIXLEN = 29  # at least 6 usable addresses: gateway plus a few containers
SYS_NET = Path("/sys/class/net")
PROC_SYS = Path("/proc/sys/net/ipv4")


@dataclass(frozen=True)
class BridgeInfo:
    name: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Interface  # the bridge's own address, e.g. 10.88.0.1/16
    ifindex: int

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen


@dataclass(frozen=True)
class NetworkConfig:
    bridge: str = BRIDGE_NAME
    subnet: str = DEFAULT_SUBNET

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        net = self.network
        return ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")


# --- pure checks ---------------------------------------------------------------------------------

def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """A strict IPv4 CIDR with room for a gateway and some containers."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f"--subnet {text}: not an IPv4 network in CIDR form ({exc})") from exc
    if net.prefixlen > MAX_PREFIXLEN:
        raise UsageError(f"--subnet {text}: /{net.prefixlen} is too small (at most /{MAX_PREFIXLEN})")
    if net.is_loopback or net.is_multicast or net.is_link_local:
        raise UsageError(f"--subnet {text}: loopback, multicast and link-local ranges cannot be used")
    return net


def check_overlap(subnet: ipaddress.IPv4Network, routes: Iterable[tuple[str, str]], bridge: str) -> None:
    """Refuse a subnet overlapping a host route (``(cidr, device)`` pairs), ignoring default routes and
    the bridge's own route."""
    for cidr, dev in routes:
        net = ipaddress.IPv4Network(cidr, strict=False)
        if net.prefixlen == 0 or dev == bridge:
            continue
        if net.overlaps(subnet):
            raise NetworkError(f"subnet {subnet} overlaps host route {net} dev {dev}")


# --- configuration -------------------------------------------------------------------------------

def config_path(paths: HostPaths) -> Path:
    return paths.network / "config.json"


def load_config(paths: HostPaths) -> NetworkConfig:
    try:
        raw = read_json(config_path(paths))
    except FileNotFoundError:
        return NetworkConfig()
    except (OSError, ValueError) as exc:
        raise NetworkError(f"{config_path(paths)}: unreadable network config ({exc})") from exc
    return NetworkConfig(bridge=raw.get("bridge", BRIDGE_NAME), subnet=raw.get("subnet", DEFAULT_SUBNET))


def set_subnet(paths: HostPaths, text: str) -> NetworkConfig:
    """Configure the bridge subnet for this state root (checked against host routes now)."""
    net = parse_subnet(text)
    cfg = NetworkConfig(bridge=load_config(paths).bridge, subnet=str(net))
    check_overlap(net, host_routes(), cfg.bridge)
    current = bridge_address(cfg.bridge)
    if current is not None and current != cfg.gateway:
        raise NetworkError(f"bridge {cfg.bridge} exists with {current}; run `isobench network prune` "
                           f"before changing the subnet to {net}")
    atomic_write_json(config_path(paths), {"bridge": cfg.bridge, "subnet": cfg.subnet})
    return cfg


# --- host effects --------------------------------------------------------------------------------

def host_lock_path() -> Path:
    from core import leases

    return leases.lease_dir().parent / "network.lock"


def bridge_exists(name: str = BRIDGE_NAME) -> bool:
    return (SYS_NET / name).exists()


def _ifindex(name: str) -> int | None:
    try:
        return int((SYS_NET / name / "ifindex").read_text())
    except (OSError, ValueError):
        return None


def host_routes() -> list[tuple[str, str]]:
    """IPv4 routes of the main table as (cidr, device)."""
    from runtime.network.veth import iproute

    with iproute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        out = []
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get_attr("RTA_DST") or "0.0.0.0"
            out.append((f"{dst}/{r['dst_len']}", names.get(r.get_attr("RTA_OIF"), "?")))
    return out


def bridge_address(name: str) -> ipaddress.IPv4Interface | None:
    if not bridge_exists(name):
        return None
    from runtime.network.veth import iproute

    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        for a in ipr.get_addr(family=2, index=idx[0]):
            return ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    return None


def _sysctl(path: Path, value: str) -> None:
    from core import syscalls

    try:
        if syscalls.read_file(str(path)).strip() != value:
            syscalls.write_file(str(path), value)
    except OSError as exc:
        raise NetworkError(f"cannot set {path} to {value}: {exc.strerror}") from exc


_READY: dict[tuple[str, str], BridgeInfo] = {}


def ensure_bridge(paths: HostPaths) -> BridgeInfo:
    """The configured bridge, created with address, forwarding, masquerade and chains if missing."""
    cfg = load_config(paths)
    key = (cfg.bridge, cfg.subnet)
    cached = _READY.get(key)
    if cached is not None and _ifindex(cfg.bridge) == cached.ifindex:  # not re-created meanwhile
        return cached
    net = parse_subnet(cfg.subnet)
    with file_lock(host_lock_path()):
        info = _create_or_verify(cfg, net)
        _sysctl(PROC_SYS / "ip_forward", "1")
        # DNAT from 127.0.0.1 leaves through the bridge with a loopback source: allowed only with
        # route_localnet on the outgoing interface (the POSTROUTING MASQUERADE then rewrites it)
        _sysctl(PROC_SYS / "conf" / cfg.bridge / "route_localnet", "1")
        from runtime.network import firewall

        firewall.apply(firewall.base_script(cfg.bridge, str(net)), f"bridge {cfg.bridge}")
    _READY[key] = info
    return info


def _create_or_verify(cfg: NetworkConfig, net: ipaddress.IPv4Network) -> BridgeInfo:
    from runtime.network.veth import iproute, netlink_error

    with iproute() as ipr:
        idx = ipr.link_lookup(ifname=cfg.bridge)
        if idx:
            addrs = [ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                     for a in ipr.get_addr(family=2, index=idx[0])]
            if addrs and cfg.gateway not in addrs:
                raise NetworkError(f"bridge {cfg.bridge} exists with {addrs[0]}, not the configured "
                                   f"{cfg.gateway}; run `isobench network prune` or set the subnet back")
            if not addrs:
                ipr.addr("add", index=idx[0], address=str(cfg.gateway.ip), prefixlen=net.prefixlen)
            ipr.link("set", index=idx[0], state="up")
            return BridgeInfo(cfg.bridge, net, cfg.gateway, idx[0])
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        routes = [(f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}", names.get(r.get_attr("RTA_OIF"), "?"))
                  for r in ipr.get_routes(family=2, table=254)]
        check_overlap(net, routes, cfg.bridge)
        try:
            ipr.link("add", ifname=cfg.bridge, kind="bridge")
            idx = ipr.link_lookup(ifname=cfg.bridge)[0]
            ipr.addr("add", index=idx, address=str(cfg.gateway.ip), prefixlen=net.prefixlen)
            ipr.link("set", index=idx, state="up")
        except netlink_error() as exc:
            _delete_link(cfg.bridge)  # half-made bridge: remove before reporting
            raise NetworkError(f"cannot create bridge {cfg.bridge} with {cfg.gateway}: {exc}") from exc
        return BridgeInfo(cfg.bridge, net, cfg.gateway, idx)


def _delete_link(name: str) -> None:
    from runtime.network.veth import delete_link

    delete_link(name)


def bridge_ports(name: str = BRIDGE_NAME) -> list[str]:
    """Interfaces enslaved to the bridge (container veths, VM taps)."""
    d = SYS_NET / name / "brif"
    try:
        return sorted(os.listdir(d))
    except FileNotFoundError:
        return []


def remove_bridge(paths: HostPaths) -> None:
    """Delete the bridge and the project's chains. The caller holds :func:`host_lock_path` and has
    checked that nobody uses them (``network prune``)."""
    cfg = load_config(paths)
    from runtime.network import firewall

    firewall.remove_table()
    firewall.remove_legacy_iptables(keep_tag=lambda tag: False)
    if bridge_exists(cfg.bridge):
        _delete_link(cfg.bridge)
    _READY.clear()
