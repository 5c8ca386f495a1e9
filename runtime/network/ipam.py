"""IP address management for the bridge subnet.

Allocations persist in the state root (``network/ipam.json``, written atomically under an flock) so
they survive the CLI process that made them and are released on ``rm``/``detach`` or by ``gc`` when
their owner's lease is dead. Because the bridge is host-wide while state roots are not (tests, other
users), every allocation also takes a host-wide claim: a file named after the address under
``/run/isobench/ipam/`` created with ``O_EXCL``, so two roots can never hand out the same address on
the one bridge. Addresses are handed out round-robin after the last one given, like Docker, so a just
released address (still in some peer's ARP cache) is not reused at once.

The choice of address is a pure function (:func:`pick`) unit tested without a host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from core.errors import NetworkError
from core.fsutil import file_lock, read_json
from runtime.network.statefile import write_json
from core.paths import HostPaths


@dataclass
class IpamState:
    """The persisted allocations of one state root: owner id -> "address/prefixlen"."""

    subnet: str
    last: str | None = None
    allocations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"subnet": self.subnet, "last": self.last, "allocations": dict(sorted(self.allocations.items()))}

    @classmethod
    def from_json(cls, raw: dict, subnet: str) -> "IpamState":
        return cls(subnet=raw.get("subnet", subnet), last=raw.get("last"),
                   allocations=dict(raw.get("allocations", {})))


def usable(subnet: ipaddress.IPv4Network) -> tuple[int, int]:
    """First and last assignable address as integers: skip network, gateway (.1) and broadcast."""
    first = int(subnet.network_address) + 2
    last = int(subnet.broadcast_address) - 1
    return first, last


def candidates(subnet: ipaddress.IPv4Network, after: str | None) -> Iterator[ipaddress.IPv4Address]:
    """Every assignable address once, starting after ``after`` and wrapping around."""
    first, last = usable(subnet)
    start = first
    if after is not None:
        a = int(ipaddress.IPv4Address(after))
        if first <= a < last:
            start = a + 1
    for n in range(start, last + 1):
        yield ipaddress.IPv4Address(n)
    for n in range(first, start):
        yield ipaddress.IPv4Address(n)


def pick(subnet: ipaddress.IPv4Network, taken: Iterable[ipaddress.IPv4Address],
         after: str | None) -> ipaddress.IPv4Address | None:
    """The next free address after ``after`` (round-robin), or None when the subnet is full."""
    used = set(taken)
    for addr in candidates(subnet, after):
        if addr not in used:
            return addr
    return None


# --- persistence ---------------------------------------------------------------------------------

def state_path(paths: HostPaths) -> Path:
    return paths.network / "ipam.json"


def lock_path(paths: HostPaths) -> Path:
    return paths.network / "ipam.lock"


def claims_dir() -> Path:
    from core import leases

    return leases.lease_dir().parent / "ipam"


def load(paths: HostPaths, subnet: str) -> IpamState:
    try:
        return IpamState.from_json(read_json(state_path(paths)), subnet)
    except FileNotFoundError:
        return IpamState(subnet=subnet)
    except (OSError, ValueError) as exc:
        raise NetworkError(f"{state_path(paths)}: unreadable IPAM state ({exc})") from exc


def _save(paths: HostPaths, state: IpamState) -> None:
    write_json(state_path(paths), state.to_json())


def _claim(addr: ipaddress.IPv4Address, owner_id: str, paths: HostPaths) -> bool:
    """Take the host-wide claim on ``addr``; False when another owner holds it."""
    d = claims_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / str(addr)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return claim_owner(addr) == owner_id
    with os.fdopen(fd, "w") as f:
        json.dump({"owner": owner_id, "root": str(paths.root)}, f)
    return True


def claim_owner(addr: ipaddress.IPv4Address | str) -> str | None:
    try:
        return json.loads((claims_dir() / str(addr)).read_text()).get("owner")
    except (OSError, ValueError):
        return None


def _unclaim(addr: str, owner_id: str) -> None:
    if claim_owner(addr) == owner_id:
        with contextlib.suppress(FileNotFoundError):
            (claims_dir() / addr).unlink()


def all_claims() -> dict[str, str]:
    """Host-wide: address -> owner id of every claim (any state root)."""
    d = claims_dir()
    if not d.is_dir():
        return {}
    return {p.name: (claim_owner(p.name) or "") for p in d.iterdir() if not p.name.startswith(".")}


def allocate_address(owner_id: str, paths: HostPaths) -> ipaddress.IPv4Interface:
    """An address of the configured subnet for ``owner_id`` (the same one again if it has one)."""
    from runtime.network.bridge import load_config

    cfg = load_config(paths)
    net = cfg.network
    with file_lock(lock_path(paths)):
        state = load(paths, cfg.subnet)
        if owner_id in state.allocations:
            return ipaddress.IPv4Interface(state.allocations[owner_id])
        taken = {ipaddress.IPv4Interface(v).ip for v in state.allocations.values()}
        taken |= {ipaddress.IPv4Address(a) for a in all_claims()}
        after = state.last
        while True:
            addr = pick(net, taken, after)
            if addr is None:
                raise NetworkError(f"subnet {net} has no free address left for {owner_id} "
                                   f"({len(state.allocations)} allocated in {paths.root})")
            if _claim(addr, owner_id, paths):
                break
            taken.add(addr)  # claimed by another state root meanwhile
        iface = ipaddress.IPv4Interface(f"{addr}/{net.prefixlen}")
        state.allocations[owner_id] = str(iface)
        state.last = str(addr)
        try:
            _save(paths, state)
        except OSError as exc:
            _unclaim(str(addr), owner_id)
            raise NetworkError(f"cannot record address {addr} in {state_path(paths)}: {exc}") from exc
    return iface


def release_address(owner_id: str, paths: HostPaths) -> None:
    """Give the owner's address back (idempotent)."""
    path = state_path(paths)
    if not path.exists():
        return
    with file_lock(lock_path(paths)):
        state = load(paths, "")
        value = state.allocations.pop(owner_id, None)
        if value is None:
            return
        _save(paths, state)
        _unclaim(str(ipaddress.IPv4Interface(value).ip), owner_id)


def allocations(paths: HostPaths) -> dict[str, str]:
    """owner id -> "address/prefixlen" of this state root."""
    if not state_path(paths).exists():
        return {}
    return dict(load(paths, "").allocations)


def address_of(owner_id: str, paths: HostPaths) -> ipaddress.IPv4Interface | None:
    value = allocations(paths).get(owner_id)
    return ipaddress.IPv4Interface(value) if value else None


def drop_orphan_claims(alive) -> list[str]:
    """Remove host-wide claims whose owner is not alive (``alive(owner) -> bool``); return addresses."""
    import time

    removed = []
    for addr, owner in all_claims().items():
        if not owner:
            # a claim being written right now has no owner yet for a moment: only old ones are junk
            with contextlib.suppress(FileNotFoundError):
                if time.time() - (claims_dir() / addr).stat().st_mtime < 60:
                    continue
        if not owner or not alive(owner):
            with contextlib.suppress(FileNotFoundError):
                (claims_dir() / addr).unlink()
            removed.append(addr)
    return removed
