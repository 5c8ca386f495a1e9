"""cgroup v1 driver rules: which files of which hierarchy get which value, and how usage is read.

On v1 every controller is its own hierarchy (``/sys/fs/cgroup/<controller>/isobench-<id>``), so a
setting is ``(controller, file, value)``. One small function per controller turns
:class:`~runtime.spec.Resources` into its writes, in the order the kernel needs (period before quota,
memory before memory+swap, cpuset mems/cpus before any process joins). Usage parsers are pure too.
"""

from __future__ import annotations

from runtime.cgroups import rules
from runtime.cgroups.rules import HostFacts
from core.errors import CgroupError

TYPE_CHECKING = False  # typing and runtime.spec: annotations only (each `isobench-runtime` verb is a process)
if TYPE_CHECKING:
    from typing import Callable

    from runtime.spec import Resources

Setting = tuple[str, str]  # (file, value) within one controller's directory

# created always so usage can be read; blkio too when the host has it (I/O bytes for `stats`)
ALWAYS = ("cpu", "cpuacct", "memory", "pids")
USAGE_OPTIONAL = ("blkio",)

THROTTLE_FILE = {"read": "blkio.throttle.read_bps_device", "write": "blkio.throttle.write_bps_device"}
MEMSW_FILE = "memory.memsw.limit_in_bytes"


def cpu(r: Resources, facts: HostFacts) -> list[Setting]:
    out: list[Setting] = []
    if r.cpu_quota_us is not None:
        out += [("cpu.cfs_period_us", str(r.cpu_period_us)), ("cpu.cfs_quota_us", str(r.cpu_quota_us))]
    if r.cpu_shares is not None:
        out.append(("cpu.shares", str(r.cpu_shares)))
    return out


def memory(r: Resources, facts: HostFacts) -> list[Setting]:
    if r.memory_bytes is None:
        return []
    out = [("memory.limit_in_bytes", str(r.memory_bytes))]
    if r.memory_swap_bytes is not None:
        if not facts.memsw_available:
            raise CgroupError(f"--memory-swap needs swap accounting, but {MEMSW_FILE} is missing on this host "
                              "(boot the kernel with swapaccount=1)")
        out.append((MEMSW_FILE, str(r.memory_swap_bytes)))  # -1 is the kernel's "unlimited" too
    return out


def pids(r: Resources, facts: HostFacts) -> list[Setting]:
    return [] if r.pids_max is None else [("pids.max", str(r.pids_max))]


def cpuset(r: Resources, facts: HostFacts) -> list[Setting]:
    if r.cpuset_cpus is None:
        return []
    # a v1 cpuset child starts with empty cpus and mems and refuses tasks until both are set
    return [("cpuset.cpus", rules.format_cpu_list(rules.parse_cpu_list(r.cpuset_cpus))),
            ("cpuset.mems", facts.parent_mems)]


def blkio(r: Resources, facts: HostFacts) -> list[Setting]:
    return [(THROTTLE_FILE[direction], f"{maj}:{mnr} {bps}")
            for (maj, mnr), by_dir in rules.device_rates(r, facts).items()
            for direction, bps in by_dir.items()]


SETTINGS: dict[str, Callable[[Resources, HostFacts], list[Setting]]] = {
    "cpu": cpu, "memory": memory, "pids": pids, "cpuset": cpuset, "blkio": blkio,
}


def needed_controllers(r: Resources) -> tuple[str, ...]:
    extra = (("cpuset",) if rules.wants_cpuset(r) else ()) + (("blkio",) if rules.wants_io(r) else ())
    return ALWAYS + extra


# -- usage parsers ----------------------------------------------------------------------------------

def parse_flat_keyed(text: str) -> dict[str, int]:
    """``"key value"`` lines (memory.oom_control, memory.stat, cpu.stat) -> dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def parse_io_service_bytes(text: str) -> tuple[int, int]:
    """blkio.throttle.io_service_bytes (``"254:0 Read 4096"`` lines) -> (read, write) over all devices."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write += int(parts[2])
    return read, write


def parse_int(text: str) -> int:
    text = text.strip()
    return 0 if text in ("", "max") else int(text)
