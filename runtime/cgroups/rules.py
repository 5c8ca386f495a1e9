"""Pure value rules shared by the v1 and v2 drivers: validation checks and unit conversions.

Everything here is a function of its arguments only (no cgroupfs, no /proc), so the rules users hit —
``--cpus 0.5`` is a 50000/100000 quota, shares 1024 is weight 39, ``--cpuset-cpus 3`` does not exist on
a 2-CPU host — are unit tested without root. Checks run *before* anything is created, so bad input
leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import CgroupError

TYPE_CHECKING = False  # typing and runtime.spec: annotations only (each `isobench-runtime` verb is a process)
if TYPE_CHECKING:
    from typing import Callable

    from runtime.spec import Resources

# kernel bounds (kernel/sched/core.c, mm/memcontrol.c)
MIN_CFS_US = 1_000
MAX_CFS_PERIOD_US = 1_000_000
MIN_SHARES = 2
MAX_SHARES = 262_144
UNLIMITED_SWAP = -1


@dataclass(frozen=True)
class HostFacts:
    """What the value rules need to know about the host, gathered by the driver (cheaply, on demand)."""

    host_cpus: frozenset[int] = frozenset()
    parent_mems: str = "0"
    memsw_available: bool = True
    resolve_device: Callable[[str], tuple[int, int]] = field(default=lambda path: (0, 0))


def shares_to_weight(shares: int) -> int:
    """v1 cpu.shares [2, 262144] -> v2 cpu.weight [1, 10000], the formula runc and crun use."""
    return 1 + ((shares - 2) * 9999) // 262142


def parse_cpu_list(text: str) -> frozenset[int]:
    """``"0-2,5"`` -> {0, 1, 2, 5} (the kernel's cpulist format). Raises CgroupError when malformed."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise CgroupError(f"--cpuset-cpus {text!r} is not a CPU list (examples: 0, 0-1, 0,2)") from None
        if first < 0 or last < first:
            raise CgroupError(f"--cpuset-cpus {text!r} has an invalid range {part.strip()!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int]) -> str:
    """{0, 1, 2, 5} -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def swap_only_bytes(memory_bytes: int, memory_swap_bytes: int) -> int | None:
    """docker's --memory-swap is memory+swap; v2 wants the swap part alone. None = unlimited."""
    if memory_swap_bytes == UNLIMITED_SWAP:
        return None
    return memory_swap_bytes - memory_bytes


# -- validation: small named checks, each one sentence naming the value ------------------------------

def check_cpu_quota(r: Resources, facts: HostFacts) -> None:
    if not MIN_CFS_US <= r.cpu_period_us <= MAX_CFS_PERIOD_US:
        raise CgroupError(f"CPU period {r.cpu_period_us} us is outside {MIN_CFS_US}..{MAX_CFS_PERIOD_US} us")
    if r.cpu_quota_us is not None and r.cpu_quota_us < MIN_CFS_US:
        raise CgroupError(f"CPU quota {r.cpu_quota_us} us is below the kernel minimum of {MIN_CFS_US} us "
                          f"(--cpus {r.cpu_quota_us / r.cpu_period_us:g} is too small)")
    if r.cpu_quota_us is not None and facts.host_cpus and r.cpu_quota_us > len(facts.host_cpus) * r.cpu_period_us:
        raise CgroupError(f"--cpus {r.cpu_quota_us / r.cpu_period_us:g} exceeds the {len(facts.host_cpus)} CPUs "
                          "of this host")


def check_cpu_shares(r: Resources, facts: HostFacts) -> None:
    if r.cpu_shares is not None and not MIN_SHARES <= r.cpu_shares <= MAX_SHARES:
        raise CgroupError(f"--cpu-shares {r.cpu_shares} is outside {MIN_SHARES}..{MAX_SHARES}")


def check_memory(r: Resources, facts: HostFacts) -> None:
    if r.memory_bytes is not None and r.memory_bytes <= 0:
        raise CgroupError(f"--memory {r.memory_bytes} must be greater than zero")


def check_memory_swap(r: Resources, facts: HostFacts) -> None:
    swap = r.memory_swap_bytes
    if swap is None:
        return
    if r.memory_bytes is None:
        raise CgroupError(f"--memory-swap {swap} needs --memory too (it is memory plus swap)")
    if swap != UNLIMITED_SWAP and swap < r.memory_bytes:
        raise CgroupError(f"--memory-swap {swap} is smaller than --memory {r.memory_bytes} "
                          "(it is the memory+swap total)")


def check_pids(r: Resources, facts: HostFacts) -> None:
    if r.pids_max is not None and r.pids_max <= 0:
        raise CgroupError(f"--pids-limit {r.pids_max} must be greater than zero")


def check_cpuset(r: Resources, facts: HostFacts) -> None:
    if r.cpuset_cpus is None:
        return
    cpus = parse_cpu_list(r.cpuset_cpus)
    if facts.host_cpus and not cpus <= facts.host_cpus:
        missing = format_cpu_list(cpus - facts.host_cpus)
        raise CgroupError(f"--cpuset-cpus {r.cpuset_cpus}: CPU {missing} is not among the host's CPUs "
                          f"{format_cpu_list(facts.host_cpus)}")


def check_device_rates(r: Resources, facts: HostFacts) -> None:
    for option, devs in (("--device-read-bps", r.device_read_bps), ("--device-write-bps", r.device_write_bps)):
        for dev in devs:
            if dev.rate_bytes_per_s <= 0:
                raise CgroupError(f"{option} {dev.path}:{dev.rate_bytes_per_s} must be greater than zero")


CHECKS = (check_cpu_quota, check_cpu_shares, check_memory, check_memory_swap, check_pids, check_cpuset,
          check_device_rates)


def validate(r: Resources, facts: HostFacts) -> None:
    for check in CHECKS:
        check(r, facts)


def wants_cpuset(r: Resources) -> bool:
    return r.cpuset_cpus is not None


def wants_io(r: Resources) -> bool:
    return bool(r.device_read_bps or r.device_write_bps)


def device_rates(r: Resources, facts: HostFacts) -> dict[tuple[int, int], dict[str, int]]:
    """{(maj, min): {"read": bps, "write": bps}} with device paths resolved to their whole disks."""
    rates: dict[tuple[int, int], dict[str, int]] = {}
    for direction, devs in (("read", r.device_read_bps), ("write", r.device_write_bps)):
        for dev in devs:
            rates.setdefault(facts.resolve_device(dev.path), {})[direction] = dev.rate_bytes_per_s
    return rates
