"""Publishing ports: host port -> owner address, by DNAT, including from 127.0.0.1.

Why DNAT with hairpin (and not a userland proxy like docker-proxy): the headline benchmark measures
what port mapping costs, and a copying proxy process would add two socket hops and a context switch
per request that Docker itself avoids with ``userland-proxy: false``; DNAT keeps the data path in the
kernel. Connections to 127.0.0.1 are covered by DNAT in OUTPUT plus ``route_localnet=1`` on the bridge
and a MASQUERADE of locally-sourced traffic entering the bridge (see :mod:`runtime.network.firewall`).
The price: nothing listens on the host port, so the "port in use" check is done explicitly before a
container starts: a host-wide claim file per port (``/run/isobench/ports/tcp-18080``, created with
``O_EXCL``: another container of any state root owns it) and a bind test on the host address (a host
process owns it). Claims make the check atomic without a lock or a ruleset listing on the start path.

Each owner's published ports are recorded in ``network/ports/<owner>.json`` *before* the rules are
added, so ``isobench port`` and ``ps`` can list them and a crash in between still leaves a record;
rules themselves are removed by their ``isobench-<owner>`` tag.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path
from typing import Iterable, Sequence

from core.errors import NetworkError
from core.fsutil import read_json
from runtime.network.statefile import write_json
from core.paths import HostPaths
from runtime.spec import PortMapping

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


def claims_dir() -> Path:
    from core import leases

    return leases.lease_dir().parent / "ports"


def _claim_file(proto: str, port: int) -> Path:
    return claims_dir() / f"{proto}-{port}"


def port_claim_owner(proto: str, port: int) -> str | None:
    try:
        return json.loads(_claim_file(proto, port).read_text()).get("owner")
    except (OSError, ValueError):
        return None


def claim_port(owner_id: str, proto: str, port: int) -> bool:
    """Take the host-wide claim on ``port/proto`` (O_EXCL file, atomic across processes and state
    roots); True when taken now or already held by ``owner_id``."""
    d = claims_dir()
    d.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(_claim_file(proto, port), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return port_claim_owner(proto, port) == owner_id
    with os.fdopen(fd, "w") as f:
        json.dump({"owner": owner_id}, f)
    return True


def release_port(owner_id: str, proto: str, port: int) -> None:
    if port_claim_owner(proto, port) == owner_id:
        with contextlib.suppress(FileNotFoundError):
            _claim_file(proto, port).unlink()


def all_port_claims() -> dict[str, str]:
    """Host-wide: "proto-port" -> owner id."""
    d = claims_dir()
    if not d.is_dir():
        return {}
    out = {}
    for p in d.iterdir():
        proto, _, port = p.name.partition("-")
        if port.isdigit():
            out[p.name] = port_claim_owner(proto, int(port)) or ""
    return out


def drop_orphan_port_claims(alive) -> list[str]:
    """Remove port claims whose owner is not alive; return their "proto-port" keys."""
    import time

    removed = []
    for key, owner in all_port_claims().items():
        path = claims_dir() / key
        if not owner:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime < 60:
                    continue  # being written right now
        if not owner or not alive(owner):
            _unlink(path)
            removed.append(key)
    return removed


def random_port(owner_id: str, host_ip: str, proto: str) -> int:
    """A free host port from the kernel's ephemeral range (bind to port 0), claimed for the owner."""
    for _ in range(64):
        with socket.socket(socket.AF_INET, _sock_type(proto)) as s:
            s.bind((host_ip or "0.0.0.0", 0))
            port = s.getsockname()[1]
        if claim_port(owner_id, proto, port):
            return port
    raise NetworkError(f"no free {proto} host port found on {host_ip or '0.0.0.0'}")


def resolve(owner_id: str, ports: Sequence[PortMapping]) -> tuple[PortMapping, ...]:
    """Claim every host port for ``owner_id``, checking it is free, and give random ones (host_port 0)
    a free port. Raises ``NetworkError("host port 18080/tcp is already in use")`` before anything is
    created; on failure the claims taken here are given back."""
    out: list[PortMapping] = []
    with contextlib.ExitStack() as undo:
        for m in ports:
            if m.host_port == 0:
                m = PortMapping(random_port(owner_id, m.host_ip, m.protocol), m.container_port,
                                m.protocol, m.host_ip)
                undo.callback(release_port, owner_id, m.protocol, m.host_port)
            else:
                if any(o.protocol == m.protocol and o.host_port == m.host_port for o in out):
                    raise NetworkError(f"host port {m.host_port}/{m.protocol} is published twice")
                fresh = port_claim_owner(m.protocol, m.host_port) != owner_id
                if not claim_port(owner_id, m.protocol, m.host_port):
                    holder = port_claim_owner(m.protocol, m.host_port) or "another owner"
                    raise NetworkError(f"host port {m.host_port}/{m.protocol} is already in use by "
                                       f"{firewall_tag(holder)}")
                if fresh:
                    undo.callback(release_port, owner_id, m.protocol, m.host_port)
                if not bind_free(m.host_ip, m.host_port, m.protocol):
                    raise NetworkError(f"host port {m.host_port}/{m.protocol} is already in use")
            out.append(m)
        undo.pop_all()
    return tuple(out)


def firewall_tag(owner_id: str) -> str:
    from runtime.network.firewall import owner_tag

    return owner_tag(owner_id)


def publish_ports(owner_id: str, target_ip: str, ports: tuple[PortMapping, ...],
                  paths: HostPaths) -> tuple[PortMapping, ...]:
    """DNAT each host port to ``target_ip``; returns the mappings with host ports resolved. Ports
    already claimed by :func:`resolve` for this owner (``prepare``) are not checked twice."""
    if not ports:
        return ()
    from runtime.network import firewall

    tag = firewall.owner_tag(owner_id)
    with contextlib.ExitStack() as undo:
        resolved = resolve(owner_id, ports)
        undo.callback(release_ports, owner_id, resolved)
        write_json(record_path(owner_id, paths),
                          {"owner": owner_id, "target_ip": target_ip, "ports": [_to_json(m) for m in resolved]})
        undo.callback(_unlink, record_path(owner_id, paths))
        # an interrupt can land after the kernel committed the rules but before apply() returns
        undo.callback(firewall.remove_tagged, {tag}, firewall.DNAT_CHAIN)
        firewall.apply(firewall.publish_script(tag, resolved, target_ip), f"ports of {tag}")
        undo.pop_all()
    return resolved


def release_ports(owner_id: str, ports: Iterable[PortMapping]) -> None:
    for m in ports:
        release_port(owner_id, m.protocol, m.host_port)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def unpublish_ports(owner_id: str, paths: HostPaths) -> None:
    """Remove the owner's rules (by tag), port claims and record; idempotent, free when nothing was
    published."""
    rec = record_path(owner_id, paths)
    if not rec.exists():
        return
    from runtime.network import firewall

    firewall.remove_tagged({firewall.owner_tag(owner_id)}, firewall.DNAT_CHAIN)
    release_claims_of(owner_id)
    _unlink(rec)


def release_claims_of(owner_id: str) -> None:
    """Drop every port claim ``owner_id`` holds: also those of a plan that never got published (an
    interrupt between prepare and attach), which have no record to find them by."""
    for key, holder in all_port_claims().items():
        if holder == owner_id:
            _unlink(claims_dir() / key)


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
