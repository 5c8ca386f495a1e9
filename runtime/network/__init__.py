"""Container networking: the ``isobench0`` bridge, veth pairs, IPAM and published ports.

Importing this package is cheap (no pyroute2, no subprocess): the CLI parser and the ``--network none``
start path import it, and netlink/iptables work is imported lazily by the functions that need it.

Container lifecycle: :func:`prepare` (validate, resolve ports, ensure the bridge, allocate the address)
-> :func:`attach` (veth, address, route, DNAT) -> :func:`detach` (idempotent teardown). The VM harness
uses the lower-level pieces (:func:`ensure_bridge`, :func:`allocate_address`, :func:`publish_ports`)
for a libvirt tap on the same bridge.
"""

from __future__ import annotations

import importlib

# name -> submodule; resolved on first attribute access (PEP 562), so `import runtime.network` costs
# nothing on the `--network none` start path and in the CLI parser.
_EXPORTS = {
    "BridgeInfo": "bridge", "ensure_bridge": "bridge", "set_subnet": "bridge",
    "NetworkAttachment": "container", "NetworkPlan": "container", "attach": "container",
    "detach": "container", "hosts_file": "container", "prepare": "container", "resolv_conf": "container",
    "allocate_address": "ipam", "release_address": "ipam",
    "list_mappings": "portmap", "publish_ports": "portmap", "unpublish_ports": "portmap",
    "format_mapping": "portspec", "parse_port_spec": "portspec", "short_mapping": "portspec",
    "bring_up_loopback": "veth", "veth_name": "veth",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime.network' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"runtime.network.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BridgeInfo", "NetworkAttachment", "NetworkPlan",
    "parse_port_spec", "prepare", "attach", "detach",
    "ensure_bridge", "set_subnet", "allocate_address", "release_address",
    "publish_ports", "unpublish_ports", "list_mappings",
    "bring_up_loopback", "veth_name", "hosts_file", "resolv_conf", "format_mapping", "short_mapping",
]
