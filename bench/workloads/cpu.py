"""cpu: sysbench cpu events/s with 1 thread and with all vCPUs, and the ratio to native in the same
round (computed by the runner once the round is complete). Course-notes claim: containers run at native
speed (same kernel), VMs pay for virtualisation (under TCG: for emulation, loudly).
"""

from __future__ import annotations

import re

from bench.environments.base import Environment, Job
from bench.workloads.base import Context, Measurement, Metric, Workload, run_tool
from core.errors import BenchError
from core.units import host_cpu_count

_EVENTS = re.compile(r"events per second:\s*([0-9.]+)")


def parse(output: str) -> float:
    """events per second from ``sysbench cpu run`` output."""
    m = _EVENTS.search(output)
    if not m:
        raise BenchError(f"sysbench cpu: no 'events per second' in output: {output.strip()[-200:]!r}")
    return float(m.group(1))


def parse_all(output: str) -> list[float]:
    """Every 'events per second' value, in order (one per sysbench run in the output)."""
    return [float(v) for v in _EVENTS.findall(output)]


def command(threads: int, duration_s: float) -> tuple[str, ...]:
    return ("sysbench", "cpu", f"--threads={threads}", f"--time={max(1, int(round(duration_s)))}", "run")


def both_command(n: int, duration_s: float) -> tuple[str, ...]:
    """1 thread then ``n`` threads in one instance (one VM boot serves both)."""
    one, alln = (" ".join(command(t, duration_s)) for t in (1, n))
    return ("/bin/sh", "-c", f"{one} && {alln}")


class Cpu(Workload):
    name = "cpu"
    images = ("tools",)
    environments = ("native", "container", "runc", "vm", "vm-container", "vm-container-runc")
    metrics = {
        "events_per_s_1t": Metric("events/s", "higher", "sysbench cpu, 1 thread"),
        "events_per_s_all": Metric("events/s", "higher", "sysbench cpu, one thread per CPU"),
        "ratio_to_native_1t": Metric("ratio", "higher", "events/s relative to native, same iteration"),
        "ratio_to_native_all": Metric("ratio", "higher", "events/s relative to native, same iteration"),
    }
    ratio_metrics = {"ratio_to_native_1t": "events_per_s_1t", "ratio_to_native_all": "events_per_s_all"}

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        n = host_cpu_count()
        job = Job(image=ctx.image("tools"), argv=both_command(n, ctx.profile.tool_duration_s), vcpus=n,
                  timeout_s=60 + 2 * ctx.profile.tool_duration_s, memory_mib=ctx.profile.vm_memory_mib)
        values = parse_all(run_tool(env, ctx, job, iteration, "cpu"))
        if len(values) != 2:
            raise BenchError(f"sysbench cpu in {env.name}: expected 2 results (1 and {n} threads), got {len(values)}")
        return [Measurement(f"events_per_s_{key}", value) for key, value in zip(("1t", "all"), values)]


WORKLOAD = Cpu()
