"""memory: sysbench memory bandwidth two ways, and the ratio to native in the same round.

- ``bandwidth_mib_s``: sequential writes in 1 MiB blocks (one thread): streaming, cache- and
  prefetch-friendly; a VM with hardware paging runs it at native speed.
- ``random_read_mib_s``: random 8-byte reads over a working set well above the host's last-level
  cache (4 x LLC, at least 256 MiB, at most the profile's ceiling: 1 GiB full, 512 MiB quick; the
  working set and its multiple of the LLC are in facts.json): almost every access misses the caches and the TLB,
  so it pays the page walk, which in a VM is the two-dimensional walk of nested paging (EPT/NPT). That
  is where the IBM ISPASS'15 study (Felter et al.) saw KVM lose against native and Docker not.

Course-notes claim: no memory overhead for containers; VMs add a second level of address translation
(and, under TCG, emulation: then the figure measures the emulator, and the report says so).
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.environments.base import Environment, Job
from bench.workloads.base import Context, Measurement, Metric, Workload, run_tool
from core.errors import BenchError

_MIBS = re.compile(r"\(([0-9.]+) MiB/sec\)")
MIB = 1 << 20
WORKING_SET_MIN_MIB = 256
WORKING_SET_MAX_MIB = 1024
LLC_FACTOR = 4


def parse(output: str) -> float:
    """MiB/s from ``sysbench memory run`` output."""
    m = _MIBS.search(output)
    if not m:
        raise BenchError(f"sysbench memory: no 'MiB/sec' in output: {output.strip()[-200:]!r}")
    return float(m.group(1))


def parse_all(output: str) -> list[float]:
    return [float(v) for v in _MIBS.findall(output)]


def parse_cache_size(text: str) -> int:
    """``/sys/.../cache/indexN/size`` text (``307200K``, ``32M``) -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text)
    if not m:
        raise BenchError(f"unreadable cache size {text.strip()!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def last_level_cache_bytes(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The largest unified/data cache of CPU 0 (0 when sysfs does not say)."""
    best = 0
    for idx in sysfs.glob("index*"):
        try:
            if (idx / "type").read_text().strip() == "Instruction":
                continue
            best = max(best, parse_cache_size((idx / "size").read_text()))
        except (OSError, BenchError):
            continue
    return best


def working_set_mib(llc_bytes: int, max_mib: int = WORKING_SET_MAX_MIB) -> int:
    """LLC_FACTOR x the last-level cache, clamped to [min, max], rounded up to 64 MiB."""
    want = max(WORKING_SET_MIN_MIB, -(-LLC_FACTOR * llc_bytes // MIB))
    return min(max(max_mib, WORKING_SET_MIN_MIB), -(-want // 64) * 64)


def command(duration_s: float) -> tuple[str, ...]:
    return ("sysbench", "memory", "--threads=1", "--memory-block-size=1M", "--memory-total-size=1000G",
            f"--time={max(1, int(round(duration_s)))}", "run")


def random_command(ws_mib: int, duration_s: float) -> tuple[str, ...]:
    # one sysbench event sweeps the whole block with random reads, so --time ends after >= 1 sweep
    return ("sysbench", "memory", "--threads=1", f"--memory-block-size={ws_mib}M", "--memory-total-size=1000T",
            "--memory-access-mode=rnd", "--memory-oper=read", f"--time={max(1, int(round(duration_s)))}", "run")


def both_command(ws_mib: int, duration_s: float) -> tuple[str, ...]:
    seq, rnd = (" ".join(c) for c in (command(duration_s), random_command(ws_mib, duration_s)))
    return ("/bin/sh", "-c", f"{seq} && {rnd}")


class Memory(Workload):
    name = "memory"
    images = ("tools",)
    environments = ("native", "container", "runc", "vm", "vm-container", "vm-container-runc")
    metrics = {
        "bandwidth_mib_s": Metric("MiB/s", "higher", "sysbench memory write bandwidth, 1 MiB blocks"),
        "random_read_mib_s": Metric("MiB/s", "higher", "sysbench random 8-byte reads over 4x the LLC"),
        "ratio_to_native": Metric("ratio", "higher", "sequential bandwidth relative to native, same round"),
        "random_ratio_to_native": Metric("ratio", "higher", "random-read rate relative to native, same round"),
    }
    ratio_metrics = {"ratio_to_native": "bandwidth_mib_s", "random_ratio_to_native": "random_read_mib_s"}

    def iterations(self, profile) -> tuple[int, int]:
        """Fewer values in the quick profile: one TCG sweep of the working set takes ~50 s."""
        return profile.warmups, profile.memory_values or profile.values

    def setup(self, ctx: Context) -> None:
        llc = last_level_cache_bytes()
        ws = working_set_mib(llc, ctx.profile.random_ws_max_mib)
        ctx.cache["working_set_mib"] = ws
        ctx.facts["memory_working_set"] = {
            "llc_bytes": llc, "working_set_mib": ws,
            "what": f"random reads over {ws} MiB, {ws * MIB / llc:.1f}x the {llc // MIB} MiB last-level cache"
                    if llc else f"random reads over {ws} MiB (last-level cache size unknown)"}

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        ws = ctx.cache["working_set_mib"]
        job = Job(image=ctx.image("tools"), argv=both_command(ws, ctx.profile.tool_duration_s),
                  timeout_s=180 + 2 * ctx.profile.tool_duration_s,
                  memory_mib=max(ctx.profile.vm_memory_mib, ws + 256))
        values = parse_all(run_tool(env, ctx, job, iteration, "memory"))
        if len(values) != 2:
            raise BenchError(f"sysbench memory in {env.name}: expected 2 results (sequential, random), "
                             f"got {len(values)}")
        return [Measurement("bandwidth_mib_s", values[0]), Measurement("random_read_mib_s", values[1])]


WORKLOAD = Memory()
