"""Benchmark profiles: how many values, how long each tool runs, how many instances for density.

quick is what ``make bench`` runs (all four environments on a 2-core host with TCG VMs, images
already built: 17.5 min measured with 5 memory values on a loaded host, so memory now takes 3; every
startup, footprint and enforcement value has its own instance or VM boot, which is what costs);
full trades time for tighter statistics and a VM boot per value (<= 60 minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.errors import UsageError


@dataclass(frozen=True)
class Profile:
    name: str
    values: int                  # measured values per metric (after warm-ups)
    warmups: int                 # excluded values per metric
    tool_duration_s: float       # sysbench/wrk/iperf3/fio run time per value
    footprint_n: tuple[int, ...]  # instance counts for footprint vs N (the largest is the headline)
    footprint_values: int        # repetitions of the footprint measurement
    enforcement_duration_s: float  # seconds per enforcement value (a sampling window, or one fio run)
    vm_memory_mib: int = 256
    fio_size_mib: int = 64
    # throughput tools in the VM: one boot per value (independent values) or all values in one boot
    # (a TCG boot costs seconds; the values then count as one independent value)
    vm_boot_per_value: bool = False
    idle_gap_s: float = 0.0      # idle seconds before each step (lets the host settle; 0 = none)
    # ceiling of the random-read working set (4 x LLC): one sweep of 512 MiB takes ~50 s under TCG
    random_ws_max_mib: int = 1024
    memory_values: int | None = None   # values of the memory workload (None: ``values``), for TCG's sake

    def with_gap(self, gap_s: float | None) -> "Profile":
        if gap_s is None:
            return self
        if not 0 <= gap_s <= 600:
            raise UsageError(f"--gap {gap_s:g}: expected 0 to 600 seconds")
        return replace(self, idle_gap_s=gap_s)

    def with_values(self, n: int | None) -> "Profile":
        if n is None:
            return self
        if n < 1:
            raise UsageError(f"--values {n} must be at least 1")
        return replace(self, values=n, footprint_values=min(self.footprint_values, n),
                       memory_values=min(self.memory_values, n) if self.memory_values else None)


PROFILES: dict[str, Profile] = {
    "quick": Profile(name="quick", values=5, warmups=1, tool_duration_s=1.0, footprint_n=(1, 2, 4),
                     footprint_values=3, enforcement_duration_s=1.0, fio_size_mib=32, random_ws_max_mib=512,
                     memory_values=3),
    # estimated ~45 min on the 2-core TCG host (per-workload estimate from the quick run's step times)
    "full": Profile(name="full", values=15, warmups=2, tool_duration_s=3.0, footprint_n=(1, 4, 8),
                    footprint_values=5, enforcement_duration_s=3.0, vm_boot_per_value=True, idle_gap_s=0.5),
}


def get(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"--profile {name!r}: expected one of {', '.join(PROFILES)}") from None
