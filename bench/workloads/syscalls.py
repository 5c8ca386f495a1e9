"""syscalls: a system-call-bound loop (stress-ng's ``null`` stressor: write(2) to /dev/null in a tight
loop, one worker; the kernel does no work beyond the call itself), calls per second and the ratio to
native. Not stress-ng's ``get`` stressor: it resolves the host name, which in a chroot without the
host's /etc/hosts means a DNS query off the host (and a 5 s resolver timeout per loop).

Why: every system call crosses into the kernel. A container's calls go to the host kernel directly
(plus its seccomp filter, which is evaluated on every call); a VM's go to the guest kernel, which is
cheap under KVM (no exit for a plain syscall) but emulated under TCG.
"""

from __future__ import annotations

import re

from bench.environments.base import Environment, Job
from bench.workloads.base import Context, Measurement, Metric, Workload, run_tool
from core.errors import BenchError

STRESSOR = "null"
# stress-ng --metrics-brief: "... null  336624  2.00  0.35  1.43  168305.42  188843.12"
_LINE = re.compile(r"\]\s+" + STRESSOR + r"\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)")


def parse(output: str) -> float:
    """bogo ops/s (real time) of the stressor from ``stress-ng --metrics-brief`` output."""
    m = _LINE.search(output)
    if not m:
        raise BenchError(f"stress-ng {STRESSOR}: no metrics line in output: {output.strip()[-200:]!r}")
    return float(m.group(5))


def command(duration_s: float) -> tuple[str, ...]:
    return ("stress-ng", f"--{STRESSOR}", "1", "--timeout", f"{max(1, int(round(duration_s)))}s",
            "--metrics-brief")


class Syscalls(Workload):
    name = "syscalls"
    images = ("tools",)
    metrics = {
        "write_calls_per_s": Metric("calls/s", "higher", "stress-ng null: write(2) calls to /dev/null per second"),
        "ratio_to_native": Metric("ratio", "higher", "calls/s relative to native, same round"),
    }
    ratio_metrics = {"ratio_to_native": "write_calls_per_s"}

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        job = Job(image=ctx.image("tools"), argv=command(ctx.profile.tool_duration_s),
                  timeout_s=60 + ctx.profile.tool_duration_s, memory_mib=ctx.profile.vm_memory_mib)
        return [Measurement("write_calls_per_s", parse(run_tool(env, ctx, job, iteration, "syscalls")))]


WORKLOAD = Syscalls()
