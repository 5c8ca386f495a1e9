"""Resource readings of a VM as the host sees it: the QEMU process.

The harness compares a VM's footprint with a container's, so it needs the same kind of numbers: PSS
(proportional set size, fair for shared pages) and CPU time of the QEMU process, plus the guest RAM
size and the hypervisor's own overhead — PSS *outside* the guest-RAM mapping, as Firecracker's memory
overhead test computes it from /proc/PID/smaps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import VMError

_MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s")


@dataclass(frozen=True)
class Usage:
    pid: int
    pss_bytes: int
    rss_bytes: int
    cpu_user_s: float
    cpu_system_s: float
    guest_ram_bytes: int
    guest_ram_pss_bytes: int
    overhead_pss_bytes: int    # PSS of QEMU outside the guest-RAM mapping


def smaps_split(smaps_text: str, guest_ram_bytes: int) -> tuple[int, int]:
    """(PSS inside guest-RAM mappings, PSS elsewhere) from /proc/PID/smaps text. Guest RAM is the
    anonymous mapping(s) at least as large as the configured RAM (QEMU may round it up)."""
    inside = outside = 0
    in_ram = False
    for line in smaps_text.splitlines():
        m = _MAP_RE.match(line)
        if m:
            size = int(m.group(2), 16) - int(m.group(1), 16)
            in_ram = size >= guest_ram_bytes and len(line.split()) <= 5  # no path: anonymous
            continue
        if line.startswith("Pss:"):
            kib = int(line.split()[1])
            if in_ram:
                inside += kib * 1024
            else:
                outside += kib * 1024
    return inside, outside


def read_usage(pid: int, memory_mib: int) -> Usage:
    import psutil

    try:
        proc = psutil.Process(pid)
        cpu = proc.cpu_times()
        mem = proc.memory_full_info()
        smaps = Path(f"/proc/{pid}/smaps").read_text()
    except (psutil.Error, OSError) as exc:
        raise VMError(f"QEMU process {pid} is gone or unreadable: {exc}") from exc
    ram = memory_mib * 2**20
    inside, outside = smaps_split(smaps, ram)
    return Usage(pid=pid, pss_bytes=mem.pss, rss_bytes=mem.rss, cpu_user_s=cpu.user, cpu_system_s=cpu.system,
                 guest_ram_bytes=ram, guest_ram_pss_bytes=inside, overhead_pss_bytes=outside)
