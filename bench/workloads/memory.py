"""memory: sysbench memory bandwidth (1 MiB blocks, sequential writes, one thread) and the ratio to
native in the same iteration. Course-notes claim: no memory overhead for containers; VMs add a
second level of address translation (and, under TCG, emulation).
"""

from __future__ import annotations

import re

from bench.environments.base import Environment, Job
from bench.stats import ratio
from bench.workloads.base import Context, Measurement, Metric, Workload, run_tool
from core.errors import BenchError

_MIBS = re.compile(r"\(([0-9.]+) MiB/sec\)")


def parse(output: str) -> float:
    """MiB/s from ``sysbench memory run`` output."""
    m = _MIBS.search(output)
    if not m:
        raise BenchError(f"sysbench memory: no 'MiB/sec' in output: {output.strip()[-200:]!r}")
    return float(m.group(1))


def command(duration_s: float) -> tuple[str, ...]:
    return ("sysbench", "memory", "--threads=1", "--memory-block-size=1M", "--memory-total-size=1000G",
            f"--time={max(1, int(round(duration_s)))}", "run")


class Memory(Workload):
    name = "memory"
    images = ("tools",)
    metrics = {
        "bandwidth_mib_s": Metric("MiB/s", "higher", "sysbench memory write bandwidth, 1 MiB blocks"),
        "ratio_to_native": Metric("ratio", "higher", "bandwidth relative to native, same iteration"),
    }

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        job = Job(image=ctx.image("tools"), argv=command(ctx.profile.tool_duration_s),
                  timeout_s=60 + ctx.profile.tool_duration_s, memory_mib=ctx.profile.vm_memory_mib)
        value = parse(run_tool(env, ctx, job, iteration, "memory"))
        out = [Measurement("bandwidth_mib_s", value)]
        if env.name == "native":
            ctx.cache[("native", iteration)] = value
        elif ("native", iteration) in ctx.cache:
            out.append(Measurement("ratio_to_native", ratio(value, ctx.cache[("native", iteration)])))
        return out


WORKLOAD = Memory()
