"""Container networking: the ``isobench0`` bridge, veth pairs, IPAM and published ports.

Importing this package is cheap (no pyroute2, no subprocess): the CLI parser and the ``--network none``
start path import it, and netlink/iptables work is imported lazily by the functions that need it.

Container lifecycle: :func:`prepare` (validate, resolve ports, ensure the bridge, allocate the address)
-> :func:`attach` (veth, address, route, DNAT) -> :func:`detach` (idempotent teardown). The VM harness
uses the lower-level pieces (:func:`ensure_bridge`, :func:`allocate_address`, :func:`publish_ports`)
for a libvirt tap on the same bridge.
"""

from __future__ import annotations

from runtime.network.bridge import BridgeInfo, ensure_bridge, set_subnet
from runtime.network.container import (NetworkAttachment, NetworkPlan, attach, detach, hosts_file,
                                       prepare, resolv_conf)
from runtime.network.ipam import allocate_address, release_address
from runtime.network.portmap import list_mappings, publish_ports, unpublish_ports
from runtime.network.portspec import format_mapping, parse_port_spec, short_mapping
from runtime.network.veth import bring_up_loopback, veth_name

__all__ = [
    "BridgeInfo", "NetworkAttachment", "NetworkPlan",
    "parse_port_spec", "prepare", "attach", "detach",
    "ensure_bridge", "set_subnet", "allocate_address", "release_address",
    "publish_ports", "unpublish_ports", "list_mappings",
    "bring_up_loopback", "veth_name", "hosts_file", "resolv_conf", "format_mapping", "short_mapping",
]
