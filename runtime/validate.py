"""Small named checks on a :class:`ContainerConfig`, run before anything is created.

Each check raises one :class:`UsageError` whose sentence names the option and the value, so bad
input ends with one line and nothing half-made (the start path runs these first). Checks that need
the host (does a bind source exist, how many CPUs) read it directly; they touch nothing.
"""

from __future__ import annotations

import os
import re
from typing import Callable

from core.errors import UsageError
from runtime.spec import ContainerConfig
from core.units import host_cpu_count

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$")


def check_name(c: ContainerConfig) -> None:
    if c.name is not None and not NAME_RE.match(c.name):
        raise UsageError(f"--name {c.name!r} is invalid (letters, digits, '_', '.', '-'; first a letter or digit)")


def check_hostname(c: ContainerConfig) -> None:
    if c.hostname is not None and not HOSTNAME_RE.match(c.hostname):
        raise UsageError(f"--hostname {c.hostname!r} is not a valid host name (at most 63 letters, digits, '.', '-')")


def check_mount_destinations(c: ContainerConfig) -> None:
    seen: set[str] = set()
    for m in c.mounts:
        if not m.destination.startswith("/"):
            raise UsageError(f"volume destination {m.destination!r} must be an absolute container path")
        norm = os.path.normpath(m.destination)
        if norm == "/":
            raise UsageError(f"volume destination {m.destination!r} cannot be the container's root")
        if norm in seen:
            raise UsageError(f"volume destination {m.destination!r} is mounted twice")
        seen.add(norm)


def check_mount_sources(c: ContainerConfig) -> None:
    for m in c.mounts:
        if m.type == "bind":
            if not m.source.startswith("/"):
                raise UsageError(f"volume source {m.source!r} must be an absolute host path or a volume name")
            if not os.path.exists(m.source):
                raise UsageError(f"volume source {m.source} does not exist on the host")
        elif m.type == "volume" and not VOLUME_NAME_RE.match(m.source):
            raise UsageError(f"volume name {m.source!r} is invalid (letters, digits, '_', '.', '-')")


def check_workdir(c: ContainerConfig) -> None:
    if c.workdir is not None and not c.workdir.startswith("/"):
        raise UsageError(f"--workdir {c.workdir!r} must be an absolute container path")


def check_cpus(c: ContainerConfig) -> None:
    r = c.resources
    if r.cpu_quota_us is None:
        return
    if r.cpu_quota_us <= 0 or r.cpu_period_us <= 0:
        raise UsageError(f"--cpus {r.cpu_quota_us / max(r.cpu_period_us, 1):g} must be greater than 0")
    cpus = r.cpu_quota_us / r.cpu_period_us
    if cpus > host_cpu_count():
        raise UsageError(f"--cpus {cpus:g} exceeds the {host_cpu_count()} CPUs of this host")


def check_cpu_shares(c: ContainerConfig) -> None:
    s = c.resources.cpu_shares
    if s is not None and not 2 <= s <= 262144:
        raise UsageError(f"--cpu-shares {s} is out of range (2..262144)")


def check_cpuset(c: ContainerConfig) -> None:
    spec = c.resources.cpuset_cpus
    if spec is None:
        return
    n = host_cpu_count()
    try:
        cpus: set[int] = set()
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise UsageError(f"--cpuset-cpus {spec!r} is not a CPU list (examples: 0, 0-1, 0,2)") from None
    bad = sorted(x for x in cpus if x >= n or x < 0)
    if bad or not cpus:
        raise UsageError(f"--cpuset-cpus {spec!r} names CPU {bad[0] if bad else '?'} but this host has CPUs 0-{n - 1}")


def check_memory(c: ContainerConfig) -> None:
    r = c.resources
    if r.memory_bytes is not None and r.memory_bytes < 6 * 1024 * 1024:
        raise UsageError(f"--memory {r.memory_bytes} bytes is below the 6 MiB minimum")
    if r.memory_swap_bytes is not None and r.memory_swap_bytes != -1:
        if r.memory_bytes is None:
            raise UsageError("--memory-swap needs --memory")
        if r.memory_swap_bytes < r.memory_bytes:
            raise UsageError(f"--memory-swap {r.memory_swap_bytes} must be at least --memory {r.memory_bytes}")


def check_pids(c: ContainerConfig) -> None:
    p = c.resources.pids_max
    if p is not None and p <= 0:
        raise UsageError(f"--pids-limit {p} must be greater than 0")


def check_modes(c: ContainerConfig) -> None:
    if c.network.mode not in ("bridge", "none", "host"):
        raise UsageError(f"--network {c.network.mode!r} is not one of bridge, none, host")
    if c.userns not in ("host", "remap"):
        raise UsageError(f"--userns {c.userns!r} is not one of host, remap")
    if (c.network.ports or c.network.publish_all) and c.network.mode != "bridge":
        flag = "-p" if c.network.ports else "-P"
        raise UsageError(f"{flag} needs --network bridge (got {c.network.mode})")


def check_read_only_volumes(c: ContainerConfig) -> None:
    for m in c.mounts:
        if m.type == "tmpfs" and m.source:
            raise UsageError(f"--tmpfs {m.destination}: tmpfs mounts take no source")


CHECKS: tuple[Callable[[ContainerConfig], None], ...] = (
    check_name, check_hostname, check_modes, check_mount_destinations, check_mount_sources,
    check_read_only_volumes, check_workdir, check_cpus, check_cpu_shares, check_cpuset, check_memory,
    check_pids,
)


def validate(config: ContainerConfig) -> None:
    """Run every check; the first failure raises."""
    for check in CHECKS:
        check(config)
