"""Publishing ports: host port -> owner address, by DNAT, including from 127.0.0.1.

Why DNAT with hairpin (and not a userland proxy like docker-proxy): the headline benchmark measures
what port mapping costs, and a copying proxy process would add two socket hops and a context switch
per request that Docker itself avoids with ``userland-proxy: false``; DNAT keeps the data path in the
kernel. Connections to 127.0.0.1 are covered by DNAT in OUTPUT plus ``route_localnet=1`` on the bridge
and a MASQUERADE of locally-sourced traffic entering the bridge (see :mod:`runtime.network.firewall`).
The price: nothing listens on the host port, so the "port in use" check is done explicitly before a
container starts — a bind test on the host address (a host process owns the port) and a look at the
project's DNAT rules (another container, any state root, owns it).

Each owner's published ports are recorded in ``network/ports/<owner>.json`` *before* the rules are
added, so ``isobench port`` and ``ps`` can list them and a crash in between still leaves a record;
rules themselves are removed by their ``isobench-<owner>`` tag.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from pathlib import Path
from typing import Iterable, Sequence

from runtime.errors import NetworkError
from runtime.fsutil import atomic_write_json, file_lock, read_json
from runtime.paths import HostPaths
from runtime.spec import PortMapping

EPHEMERAL_RANGE = (32768, 60999)


def record_path(owner_id: str, paths: HostPaths) -> Path:
    return paths.network / "ports" / f"{owner_id}.json"


def _to_json(m: PortMapping) -> dict:
    return {"host_ip": m.host_ip, "host_port": m.host_port, "container_port": m.container_port,
            "protocol": m.protocol}


def _from_json(d: dict) -> PortMapping:
    return PortMapping(host_port=int(d["host_port"]), container_port=int(d["container_port"]),
                       protocol=d.get("protocol", "tcp"), host_ip=d.get("host_ip", ""))


def _sock_type(proto: str) -> int:
    return socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM


def bind_free(host_ip: str, port: int, proto: str) -> bool:
    """True when a host process could bind ``host_ip:port`` now (i.e. no host process owns it).
    SO_REUSEADDR so a TIME_WAIT leftover does not count as "in use"."""
    with socket.socket(socket.AF_INET, _sock_type(proto)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            if exc.errno == errno.EADDRNOTAVAIL:
                raise NetworkError(f"host address {host_ip} is not an address of this host") from exc
            raise NetworkError(f"cannot test host port {port}/{proto} on {host_ip or '0.0.0.0'}: "
                               f"{exc.strerror}") from exc
    return True


def _overlaps(ip_a: str, ip_b: str) -> bool:
    return not ip_a or not ip_b or ip_a == ip_b


def conflict(m: PortMapping, used: Iterable[tuple[str, int, str, str]]) -> str | None:
    """The tag of a DNAT rule already publishing ``m``'s host port (same protocol, overlapping ip)."""
    for proto, port, ip, tag in used:
        if proto == m.protocol and port == m.host_port and _overlaps(ip, m.host_ip):
            return tag
    return None


def random_port(host_ip: str, proto: str, avoid: set[tuple[str, int]]) -> int:
    """A free host port from the kernel's ephemeral range (bind to port 0), not in ``avoid``."""
    for _ in range(64):
        with socket.socket(socket.AF_INET, _sock_type(proto)) as s:
            s.bind((host_ip or "0.0.0.0", 0))
            port = s.getsockname()[1]
        if (proto, port) not in avoid:
            return port
    raise NetworkError(f"no free {proto} host port found on {host_ip or '0.0.0.0'}")


def resolve(ports: Sequence[PortMapping], saved: str | None = None) -> tuple[PortMapping, ...]:
    """Check every fixed host port is free and give random ones (host_port 0) a free port.
    Raises ``NetworkError("host port 18080/tcp is already in use")`` before anything is created."""
    if not ports:
        return ()
    from runtime.network import firewall

    text = firewall.save("nat") if saved is None else saved
    used = firewall.dnat_ports(text)
    avoid = {(p, port) for p, port, _, _ in used}
    seen: dict[tuple[str, int], PortMapping] = {}
    out: list[PortMapping] = []
    for m in ports:
        if m.host_port == 0:
            m = PortMapping(random_port(m.host_ip, m.protocol, avoid | set(seen)), m.container_port,
                            m.protocol, m.host_ip)
        else:
            key = (m.protocol, m.host_port)
            if key in seen and _overlaps(seen[key].host_ip, m.host_ip):
                raise NetworkError(f"host port {m.host_port}/{m.protocol} is published twice")
            owner = conflict(m, used)
            if owner is not None:
                raise NetworkError(f"host port {m.host_port}/{m.protocol} is already in use by {owner}")
            if not bind_free(m.host_ip, m.host_port, m.protocol):
                raise NetworkError(f"host port {m.host_port}/{m.protocol} is already in use")
        seen[(m.protocol, m.host_port)] = m
        out.append(m)
    return tuple(out)


def publish_ports(owner_id: str, target_ip: str, ports: tuple[PortMapping, ...],
                  paths: HostPaths) -> tuple[PortMapping, ...]:
    """DNAT each host port to ``target_ip``; returns the mappings with host ports resolved."""
    if not ports:
        return ()
    from runtime.network import bridge, firewall

    tag = firewall.owner_tag(owner_id)
    # the host lock makes "check then add" atomic against other owners publishing the same port
    with file_lock(bridge.host_lock_path()):
        resolved = resolve(ports)
        atomic_write_json(record_path(owner_id, paths),
                          {"owner": owner_id, "target_ip": target_ip, "ports": [_to_json(m) for m in resolved]})
        try:
            firewall.apply(firewall.restore_text(firewall.port_rules(tag, resolved, target_ip)),
                           f"ports of {tag}")
        except NetworkError:
            with contextlib.suppress(FileNotFoundError):
                record_path(owner_id, paths).unlink()
            raise
    return resolved


def unpublish_ports(owner_id: str, paths: HostPaths) -> None:
    """Remove the owner's rules (by tag) and its record; idempotent and free when nothing was published."""
    rec = record_path(owner_id, paths)
    if not rec.exists():
        return
    from runtime.network import firewall

    firewall.remove_tagged({firewall.owner_tag(owner_id)})
    with contextlib.suppress(FileNotFoundError):
        rec.unlink()


def list_mappings(owner_id: str, paths: HostPaths) -> tuple[PortMapping, ...]:
    try:
        raw = read_json(record_path(owner_id, paths))
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as exc:
        raise NetworkError(f"{record_path(owner_id, paths)}: unreadable port record ({exc})") from exc
    return tuple(_from_json(d) for d in raw.get("ports", ()))


def recorded_owners(paths: HostPaths) -> list[str]:
    d = paths.network / "ports"
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []
