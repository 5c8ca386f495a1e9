"""Orphan removal for networking, called by ``isobench gc``.

Removes, host-wide, veths and firewall rules named/tagged ``isobench-<owner>`` whose owner has no live
lease (a container monitor or VM harness that was ``kill -9``-ed), and in this state root the address
allocations and port records of dead owners, plus host-wide address claims of dead owners. The bridge
and its bridge-wide rules are never removed here: only ``isobench network prune`` removes them, and
only when nobody uses them. A link or rule with a live owner (another state root, another test) is
never touched.
"""

from __future__ import annotations

import contextlib

from core.paths import HostPaths


def gc(paths: HostPaths) -> list[str]:
    """Remove this area's orphans; return what was removed (one description per object)."""
    from core import leases
    from runtime.network import firewall, ipam, portmap
    from runtime.network.veth import delete_link, project_links

    removed: list[str] = []

    # firewall rules by tag (any state root: the table is host-wide); base rules stay until prune
    def keep(tag: str) -> bool:
        return tag.endswith("-base") or not tag.startswith(firewall.TAG_PREFIX) or leases.owner_alive(tag)

    doomed = {r.tag for r in firewall.tagged_rules() if not keep(r.tag)}
    if doomed:
        for r in firewall.remove_tagged(doomed):
            removed.append(f"rule {r.chain} handle {r.handle} ({r.tag})")
    for line in firewall.remove_legacy_iptables(keep_tag=keep):
        removed.append(f"iptables rule {line}")

    # veths (never the bridge, never taps: libvirt owns those)
    for name, kind in project_links().items():
        if kind == "veth" and not leases.owner_alive(name) and delete_link(name):
            removed.append(f"link {name}")

    # this root's allocations and port records
    for owner, addr in ipam.allocations(paths).items():
        if not leases.owner_alive(owner):
            ipam.release_address(owner, paths)
            removed.append(f"address {addr} of {owner}")
    for owner in portmap.recorded_owners(paths):
        if not leases.owner_alive(owner):
            with contextlib.suppress(FileNotFoundError):
                portmap.record_path(owner, paths).unlink()
            removed.append(f"port record of {owner}")

    # host-wide claims whose owner is dead (their root may be gone)
    for addr in ipam.drop_orphan_claims(leases.owner_alive):
        removed.append(f"address claim {addr}")
    for key in portmap.drop_orphan_port_claims(leases.owner_alive):
        removed.append(f"port claim {key}")
    return removed


def live_users(paths: HostPaths) -> list[str]:
    """Owners with a live lease that use the bridge: allocations (any root, via claims), enslaved links."""
    from core import leases
    from runtime.network import bridge, ipam

    name = bridge.load_config(paths).bridge
    users = {o for o in ipam.all_claims().values() if o and leases.owner_alive(o)}
    users |= {p for p in bridge.bridge_ports(name) if leases.owner_alive(p)}
    # a tap or veth without an isobench lease still means someone else plugged into the bridge
    users |= {p for p in bridge.bridge_ports(name) if not p.startswith("isobench")}
    return sorted(users)


def prune(paths: HostPaths) -> tuple[list[str], list[str]]:
    """``isobench network prune``: gc, then remove the bridge and chains unless a live owner uses them.
    Returns (what was removed, the live users that kept the bridge)."""
    from runtime.network import bridge

    from core.fsutil import file_lock

    removed = gc(paths)
    name = bridge.load_config(paths).bridge
    # under the lock that bridge creation takes: an owner allocating now is either seen as a user
    # here, or re-creates the bridge after us
    with file_lock(bridge.host_lock_path()):
        users = live_users(paths)
        if users:
            return removed, users
        existed = bridge.bridge_exists(name)
        bridge.remove_bridge(paths)
    if existed:
        removed.append(f"bridge {name} and chains ISOBENCH-*")
    return removed, []
