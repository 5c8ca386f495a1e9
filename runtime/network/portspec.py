"""Parsing of ``-p``/``--publish`` specs and image ``EXPOSE`` entries into :class:`PortMapping`.

Pure functions, no host effects: the CLI, the benchmark harness and the VM harness all turn user text
into the same typed value, and each bad spec becomes one :class:`UsageError` line that quotes the spec
and names the wrong part (``-p 99999:80: host port 99999 is outside 1-65535``).
"""

from __future__ import annotations

import ipaddress

from core.errors import UsageError
from runtime.spec import PortMapping

PROTOCOLS = ("tcp", "udp")
PORT_MIN, PORT_MAX = 1, 65535


def _port(spec: str, text: str, what: str, allow_zero: bool = False) -> int:
    if not text.isdigit():
        raise UsageError(f"-p {spec}: {what} {text!r} is not a number")
    value = int(text)
    if allow_zero and value == 0:
        return 0
    if not PORT_MIN <= value <= PORT_MAX:
        raise UsageError(f"-p {spec}: {what} {value} is outside {PORT_MIN}-{PORT_MAX}")
    return value


def _host_ip(spec: str, text: str) -> str:
    bare = text.strip("[]")
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError as exc:
        raise UsageError(f"-p {spec}: host address {text!r} is not an IP address") from exc
    if addr.version != 4:
        raise UsageError(f"-p {spec}: host address {text} is IPv6; only IPv4 is supported")
    return "" if addr.is_unspecified else str(addr)


def parse_port_spec(text: str) -> PortMapping:
    """``[HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]`` or ``CTRPORT[/proto]`` (a random free host port, shown as
    host_port 0 until :func:`runtime.network.prepare` resolves it). ``HOSTIP::CTRPORT`` also means random."""
    spec = text.strip()
    if not spec:
        raise UsageError("-p: empty port spec (expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp])")
    body, _, proto = spec.partition("/")
    proto = proto.lower() if proto else "tcp"
    if proto not in PROTOCOLS:
        raise UsageError(f"-p {spec}: protocol {proto!r} is not tcp or udp")
    parts = body.split(":")
    if len(parts) == 1:
        host_ip, host_port, ctr_port = "", "0", parts[0]
    elif len(parts) == 2:
        host_ip, (host_port, ctr_port) = "", parts
    elif len(parts) == 3:
        host_ip, host_port, ctr_port = parts
        host_port = host_port or "0"
    else:
        raise UsageError(f"-p {spec}: expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]")
    return PortMapping(
        host_port=_port(spec, host_port, "host port", allow_zero=True),
        container_port=_port(spec, ctr_port, "container port"),
        protocol=proto,  # type: ignore[arg-type]
        host_ip=_host_ip(spec, host_ip) if host_ip else "",
    )


def parse_exposed(text: str) -> PortMapping:
    """An image's ``EXPOSE`` entry (``"80/tcp"``, ``"53/udp"``, ``"8080"``) as a mapping to a random host
    port, for ``-P``."""
    port, _, proto = text.strip().partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS or not port.isdigit() or not PORT_MIN <= int(port) <= PORT_MAX:
        raise UsageError(f"-P: image exposes {text!r}, which is not PORT[/tcp|udp]")
    return PortMapping(host_port=0, container_port=int(port), protocol=proto)  # type: ignore[arg-type]


def format_mapping(m: PortMapping) -> str:
    """Docker's ``port`` line: ``80/tcp -> 0.0.0.0:18080``."""
    return f"{m.container_port}/{m.protocol} -> {m.host_ip or '0.0.0.0'}:{m.host_port}"


def short_mapping(m: PortMapping) -> str:
    """Compact form for ``ps``: ``0.0.0.0:18080->80/tcp``."""
    return f"{m.host_ip or '0.0.0.0'}:{m.host_port}->{m.container_port}/{m.protocol}"
