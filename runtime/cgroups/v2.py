"""cgroup v2 driver rules: the unified hierarchy's file values and usage parsers.

On v2 one directory holds every controller, so a setting is ``(file, value)``; controllers must first be
enabled in the parent's ``cgroup.subtree_control``. One small function per controller maps
:class:`~runtime.spec.Resources` to its writes (``--cpus 0.5`` -> ``cpu.max = "50000 100000"``, shares ->
``cpu.weight``, docker's memory+swap -> ``memory.swap.max`` = swap alone, throttles -> one ``io.max`` line
per disk). Tested against a fake cgroupfs tree; used for real on pure-v2 hosts.
"""

from __future__ import annotations

from runtime.cgroups import rules
from runtime.cgroups.rules import HostFacts

TYPE_CHECKING = False  # typing and runtime.spec: annotations only (each `isobench-runtime` verb is a process)
if TYPE_CHECKING:
    from typing import Callable

    from runtime.spec import Resources

Setting = tuple[str, str]

ALWAYS = ("cpu", "memory", "pids")
USAGE_OPTIONAL = ("io",)
IO_KEY = {"read": "rbps", "write": "wbps"}


def cpu(r: Resources, facts: HostFacts) -> list[Setting]:
    out: list[Setting] = []
    if r.cpu_quota_us is not None:
        out.append(("cpu.max", f"{r.cpu_quota_us} {r.cpu_period_us}"))
    if r.cpu_shares is not None:
        out.append(("cpu.weight", str(rules.shares_to_weight(r.cpu_shares))))
    return out


def memory(r: Resources, facts: HostFacts) -> list[Setting]:
    if r.memory_bytes is None:
        return []
    out = [("memory.max", str(r.memory_bytes))]
    if r.memory_swap_bytes is not None:
        swap = rules.swap_only_bytes(r.memory_bytes, r.memory_swap_bytes)
        out.append(("memory.swap.max", "max" if swap is None else str(swap)))
    return out


def pids(r: Resources, facts: HostFacts) -> list[Setting]:
    return [] if r.pids_max is None else [("pids.max", str(r.pids_max))]


def cpuset(r: Resources, facts: HostFacts) -> list[Setting]:
    if r.cpuset_cpus is None:
        return []
    return [("cpuset.cpus", rules.format_cpu_list(rules.parse_cpu_list(r.cpuset_cpus)))]


def io(r: Resources, facts: HostFacts) -> list[Setting]:
    return [("io.max", f"{maj}:{mnr} " + " ".join(f"{IO_KEY[d]}={bps}" for d, bps in sorted(by_dir.items())))
            for (maj, mnr), by_dir in rules.device_rates(r, facts).items()]


SETTINGS: dict[str, Callable[[Resources, HostFacts], list[Setting]]] = {
    "cpu": cpu, "memory": memory, "pids": pids, "cpuset": cpuset, "io": io,
}


def needed_controllers(r: Resources) -> tuple[str, ...]:
    extra = (("cpuset",) if rules.wants_cpuset(r) else ()) + (("io",) if rules.wants_io(r) else ())
    return ALWAYS + extra


def subtree_control_write(wanted: tuple[str, ...], enabled: set[str]) -> str | None:
    """What to write to the parent's cgroup.subtree_control so ``wanted`` are on ("+cpu +memory"), or None."""
    missing = [c for c in wanted if c not in enabled]
    return " ".join(f"+{c}" for c in missing) or None


# -- usage parsers ----------------------------------------------------------------------------------

def parse_flat_keyed(text: str) -> dict[str, int]:
    """cpu.stat / memory.events: ``"key value"`` lines."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def parse_io_stat(text: str) -> tuple[int, int]:
    """io.stat (``"254:0 rbytes=1 wbytes=2 rios=..."``) -> (read, write) bytes over all devices."""
    read = write = 0
    for line in text.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        read += int(fields.get("rbytes", 0))
        write += int(fields.get("wbytes", 0))
    return read, write


def parse_int(text: str) -> int:
    text = text.strip()
    return 0 if text in ("", "max") else int(text)
