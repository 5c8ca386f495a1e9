"""CLI verbs of the network area: ``network ls``, ``network prune``, ``network subnet``, ``port NAME``.

Parser construction imports nothing heavy (``isobench run`` start-up is measured); handlers import
the network modules when they run.
"""

from __future__ import annotations

from app.commands.common import host_paths, verb, verb_group


def register(sub) -> None:
    """Add this area's subcommands to the `isobench` parser."""
    verbs = verb_group(sub, "network", "the isobench0 bridge: list, prune, set the subnet", dest="network_command")
    verb(verbs, "ls", _ls, help="show the bridge, its subnet and the allocated addresses and ports")
    verb(verbs, "prune", _prune, help="remove orphans, then the bridge and its chains if unused")
    p = verb(verbs, "subnet", _subnet, help="show or set the bridge subnet of this state root")
    p.add_argument("cidr", nargs="?", help="e.g. 10.89.0.0/16 (default 10.88.0.0/16)")

    p = verb(sub, "port", _port, help="list a container's published ports")
    p.add_argument("name", metavar="NAME", help="container name or id (or id prefix)")


def _ls(args) -> int:
    from core import leases
    from runtime.network import bridge, ipam
    from runtime.network.portmap import list_mappings
    from runtime.network.portspec import short_mapping

    paths = host_paths()
    cfg = bridge.load_config(paths)
    state = "up" if bridge.bridge_exists(cfg.bridge) else "absent (created on first bridged run)"
    print("NETWORK  BRIDGE     SUBNET           GATEWAY         STATE")
    print(f"bridge   {cfg.bridge:<10} {cfg.subnet:<16} {str(cfg.gateway.ip):<15} {state}")
    print("host     -          -                -               the host's own network stack")
    print("none     -          -                -               loopback only")
    allocs = ipam.allocations(paths)
    if allocs:
        print()
        print(f"{'OWNER':<26} {'ADDRESS':<18} {'LIVE':<5} PORTS")
        for owner, addr in sorted(allocs.items()):
            ports = ", ".join(short_mapping(m) for m in list_mappings(owner, paths))
            live = "yes" if leases.owner_alive(owner) else "no"
            print(f"{owner:<26} {addr:<18} {live:<5} {ports}")
    return 0


def _prune(args) -> int:
    from runtime.network.gc import prune

    removed, users = prune(host_paths())
    for item in removed:
        print(f"removed {item}")
    if users:
        print(f"network prune: bridge kept, in use by {len(users)} live owner(s): {', '.join(users[:5])}")
    else:
        print(f"network prune: {len(removed)} object(s) removed")
    return 0


def _subnet(args) -> int:
    from runtime.network import bridge

    paths = host_paths()
    cfg = bridge.set_subnet(paths, args.cidr) if args.cidr else bridge.load_config(paths)
    print(f"{cfg.bridge} {cfg.subnet} gateway {cfg.gateway.ip}")
    return 0


def _port(args) -> int:
    from runtime.network.portmap import list_mappings
    from runtime.network.portspec import format_mapping

    paths = host_paths()
    owner = resolve_owner(args.name, paths)
    for m in list_mappings(owner, paths):
        print(format_mapping(m))
    return 0


def resolve_owner(name: str, paths) -> str:
    """A container name, id or unique id prefix -> the owner id the network records are keyed by.
    Containers are looked up in the runtime's state; owners the runtime does not know (a VM harness
    tap, a test's fake container) by their network records."""
    from core.errors import ContainerError, UsageError
    from runtime.lifecycle import state
    from runtime.network import ipam, portmap

    try:
        return str(state.lookup(paths, name)["id"])
    except ContainerError:
        pass
    owners = set(portmap.recorded_owners(paths)) | set(ipam.allocations(paths))
    if name in owners:
        return name
    hits = sorted(o for o in owners if o.startswith(name))
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise UsageError(f"port {name}: no such container")
    raise UsageError(f"port {name}: ambiguous, matches {', '.join(hits[:5])}")
