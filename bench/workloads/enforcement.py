"""enforcement: asked vs measured for each limit the course notes say cgroups enforce, and the VM
counterparts where the VM harness has one.

containers (container, runc):
- ``cpus`` 0.5: sysbench with 2 threads under the quota, events/s divided by the same environment's
  unlimited 1-thread events/s = CPUs actually obtained;
- ``cpu_shares`` 1024:512: two instances pinned to CPU 0 run sysbench at once; events ratio;
- ``memory`` 64 MiB: a shell grows a 128 MiB string; cgroup memory peak and the OOM kill (exit 137);
- ``pids`` 32: a shell starts 100 background sleeps; processes counted from the host;
- ``blkio_write`` 10 MiB/s: fio direct sequential writes on the writable layer.
vm: ``cpus`` 0.5 as the domain's CPU quota (same measurement), ``memory`` as guest RAM (MemTotal seen by
the guest), ``vcpus`` (CPUs the guest sees). Native has no limits and is not asked.
"""

from __future__ import annotations

import re
import time

from bench.environments.base import READY_MARKER, Environment, Job, Limits
from bench.workloads import cpu as cpuwl
from bench.workloads import disk as diskwl
from bench.workloads.base import Context, Measurement, Metric, Workload, check_exit
from runtime.errors import BenchError

MIB = 1 << 20
ASK = {"cpus": 0.5, "cpu_shares": 2.0, "memory_mib": 64, "pids": 32, "blkio_write_mib_s": 10.0}
TOLERANCE = 0.15   # measured may exceed asked by this fraction and still count as held


def _fact(ctx: Context, env: str, limit: str, asked: float, measured: float, unit: str, held: bool, ev: str) -> None:
    rows = [r for r in ctx.facts.setdefault("enforcement", []) if not (r["environment"] == env and r["limit"] == limit)]
    rows.append({"environment": env, "limit": limit, "asked": float(asked), "measured": round(float(measured), 4),
                 "unit": unit, "held": bool(held), "evidence": ev})
    ctx.facts["enforcement"] = rows


def sysbench_total_time_s(output: str) -> float | None:
    m = re.search(r"total time:\s*([0-9.]+)s", output)
    return float(m.group(1)) if m else None


def meminfo_total_mib(output: str) -> float:
    m = re.search(r"MemTotal:\s*(\d+)\s*kB", output)
    if not m:
        raise BenchError(f"no MemTotal in guest output: {output.strip()[-200:]!r}")
    return int(m.group(1)) / 1024


class Enforcement(Workload):
    name = "enforcement"
    images = ("tools",)
    environments = ("container", "runc", "vm")
    metrics = {
        "cpus_measured": Metric("CPUs", "lower", "CPUs obtained under --cpus 0.5"),
        "cpu_shares_ratio": Metric("ratio", "higher", "events ratio of shares 1024:512 on one CPU"),
        "memory_peak_mib": Metric("MiB", "lower", "cgroup memory peak under a 64 MiB limit"),
        "pids_reached": Metric("processes", "lower", "processes reached under pids.max 32"),
        "blkio_write_mib_s": Metric("MiB/s", "lower", "direct writes under a 10 MiB/s throttle"),
        "guest_memory_mib": Metric("MiB", "lower", "MemTotal seen by the guest"),
        "vcpus_seen": Metric("CPUs", "lower", "CPUs seen by the guest"),
    }

    def iterations(self, profile) -> tuple[int, int]:
        return 0, 1

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        steps = (self._cpus, self._vm_memory) if env.name == "vm" else (
            self._cpus, self._shares, self._memory, self._pids, self._blkio)
        out: list[Measurement] = []
        for step in steps:  # one limit failing does not hide the others
            try:
                out += step(env, ctx)
            except BenchError as exc:
                ctx.partial_failure(self.name, env.name, f"{step.__name__.strip('_')}: {exc}")
        if not out:
            raise BenchError(f"every enforcement step failed in {env.name} (see failures.json)")
        return out

    def _job(self, ctx: Context, argv: tuple[str, ...], **kw) -> Job:
        return Job(image=ctx.image("tools"), argv=argv, timeout_s=120 + ctx.profile.enforcement_duration_s, **kw)

    def _cpus(self, env: Environment, ctx: Context) -> list[Measurement]:
        d = ctx.profile.enforcement_duration_s
        if env.name == "vm":
            return self._vm_cpus(env, ctx, d)
        limited = check_exit(env.run(self._job(ctx, cpuwl.command(2, d), vcpus=2, limits=Limits(cpus=ASK["cpus"]))),
                             "sysbench under --cpus", env.name)
        lim = cpuwl.parse(limited.output)
        wall = sysbench_total_time_s(limited.output)
        if "cpu_usage_s" in limited.extra and wall:
            # cgroup CPU accounting: CPU seconds used / seconds of the run = CPUs obtained
            measured = limited.extra["cpu_usage_s"] / wall
            ev = (f"sysbench 2 threads for {wall:.2f}s used {limited.extra['cpu_usage_s']:.2f} CPU-seconds "
                  f"(cgroup cpuacct) under cfs quota {ASK['cpus']} CPU; {lim:.0f} events/s")
        else:
            base = cpuwl.parse(check_exit(env.run(self._job(ctx, cpuwl.command(1, d), vcpus=2)),
                                          "sysbench 1 thread", env.name).output)
            measured = lim / base
            ev = (f"sysbench 2 threads under the limit: {lim:.0f} events/s; 1 thread unlimited: {base:.0f} events/s"
                  + (" (VM: domain CPU quota, cputune)" if env.name == "vm" else ""))
        _fact(ctx, env.name, "cpus", ASK["cpus"], measured, "CPUs", measured <= ASK["cpus"] * (1 + TOLERANCE), ev)
        return [Measurement("cpus_measured", measured)]

    def _vm_cpus(self, env: Environment, ctx: Context, d: float) -> list[Measurement]:
        """The domain's CPU quota seen from the host: CPU time of the QEMU process over a window in which
        the guest runs sysbench on both vCPUs (the guest cannot see its own throttling)."""
        run_s = int(round(d)) + 3
        inst = env.start(self._job(ctx, cpuwl.command(2, run_s), vcpus=2, limits=Limits(cpus=ASK["cpus"])))
        try:
            inst.wait_ready(120)
            time.sleep(1.0)  # sysbench starting in the guest
            u1, t1 = inst.usage().cpu_s, time.monotonic()
            time.sleep(max(1.0, d))
            u2, t2 = inst.usage().cpu_s, time.monotonic()
        finally:
            inst.stop()
        measured = (u2 - u1) / (t2 - t1)
        _fact(ctx, env.name, "cpus", ASK["cpus"], measured, "CPUs", measured <= ASK["cpus"] * (1 + TOLERANCE),
              f"guest runs sysbench on 2 vCPUs under a domain CPU quota of {ASK['cpus']} CPU (cputune): the QEMU "
              f"process used {u2 - u1:.2f} CPU-seconds in {t2 - t1:.2f}s, seen from the host")
        return [Measurement("cpus_measured", measured)]

    def _shares(self, env: Environment, ctx: Context) -> list[Measurement]:
        d = ctx.profile.enforcement_duration_s + 1
        argv = cpuwl.command(1, d)
        insts = []
        try:
            for shares in (1024, 512):
                insts.append(env.start(self._job(ctx, argv, limits=Limits(cpu_shares=shares, cpuset_cpus="0"))))
            outs = [check_exit(i.wait(60 + d), "sysbench with cpu-shares", env.name).output for i in insts]
        finally:
            for i in insts:
                i.stop()
        hi, lo = (cpuwl.parse(o) for o in outs)
        measured = hi / lo if lo else float("inf")
        held = abs(measured - ASK["cpu_shares"]) <= ASK["cpu_shares"] * 0.25
        _fact(ctx, env.name, "cpu_shares", ASK["cpu_shares"], measured, "ratio", held,
              f"two sysbench instances pinned to CPU 0 at once, shares 1024 vs 512: {hi:.0f} vs {lo:.0f} events/s "
              "(the second starts a few ms later)")
        return [Measurement("cpu_shares_ratio", measured)]

    def _memory(self, env: Environment, ctx: Context) -> list[Measurement]:
        limit = ASK["memory_mib"] * MIB
        script = "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo survived ${#x}"
        o = env.run(self._job(ctx, ("/bin/sh", "-c", script), limits=Limits(memory_bytes=limit)))
        peak = o.extra.get("memory_peak_bytes")
        if peak is None:
            raise BenchError(f"{env.name}: no memory peak reading after the memory-limit run")
        oom = o.exit_code == 137 or bool(o.extra.get("oom_kills")) or bool(o.extra.get("oom_killed"))
        held = peak <= limit * 1.01 and "survived" not in o.output
        _fact(ctx, env.name, "memory", ASK["memory_mib"], peak / MIB, "MiB", held,
              f"a shell growing a 128 MiB string under a {ASK['memory_mib']} MiB limit: exit {o.exit_code}, "
              f"OOM kill {'observed' if oom else 'not observed'}, cgroup peak {peak / MIB:.1f} MiB")
        return [Measurement("memory_peak_mib", peak / MIB)]

    def _pids(self, env: Environment, ctx: Context) -> list[Measurement]:
        # the bomb runs in a subshell: a shell whose fork fails may exit, the sleeps it made stay
        script = (f"(i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done) >/dev/null 2>&1; "
                  f"echo {READY_MARKER}; exec sleep 30")
        inst = env.start(self._job(ctx, ("/bin/sh", "-c", script), limits=Limits(pids_max=ASK["pids"]),
                                   ready_marker=READY_MARKER))
        try:
            inst.wait_ready(60)
            reached = len(inst.workload_pids())
        finally:
            inst.stop()
        held = 0 < reached <= ASK["pids"]
        _fact(ctx, env.name, "pids", ASK["pids"], reached, "processes", held,
              f"a shell starting 100 background sleeps under pids.max {ASK['pids']}: {reached} processes "
              "counted from the host")
        return [Measurement("pids_reached", float(reached))]

    def _blkio(self, env: Environment, ctx: Context) -> list[Measurement]:
        d = max(2, int(round(ctx.profile.enforcement_duration_s)))
        argv = ("fio", "--output-format=json", "--ioengine=psync", "--direct=1", "--size=32m", f"--runtime={d}",
                "--time_based", "--filename=/blkio.dat", "--name=seqwrite", "--rw=write", "--bs=1m")
        rate = int(ASK["blkio_write_mib_s"] * MIB)
        o = check_exit(env.run(self._job(ctx, argv, limits=Limits(write_bps=rate))), "fio under a write throttle",
                       env.name)
        measured = diskwl.parse(o.output)["seqwrite"]
        held = measured <= ASK["blkio_write_mib_s"] * (1 + TOLERANCE)
        _fact(ctx, env.name, "blkio_write", ASK["blkio_write_mib_s"], measured, "MiB/s", held,
              f"fio direct 1 MiB sequential writes on the writable layer for {d}s: {measured:.1f} MiB/s")
        return [Measurement("blkio_write_mib_s", measured)]

    def _vm_memory(self, env: Environment, ctx: Context) -> list[Measurement]:
        asked_mib = 256
        o = check_exit(env.run(self._job(ctx, ("/bin/sh", "-c", "cat /proc/meminfo; echo CPUS $(nproc)"),
                                         vcpus=2, memory_mib=asked_mib)), "meminfo", env.name)
        total = meminfo_total_mib(o.output)
        m = re.search(r"CPUS (\d+)", o.output)
        cpus = int(m.group(1)) if m else 0
        _fact(ctx, env.name, "memory", asked_mib, total, "MiB", total <= asked_mib,
              f"guest RAM {asked_mib} MiB: the guest's MemTotal is {total:.0f} MiB (the kernel keeps the rest)")
        _fact(ctx, env.name, "vcpus", 2, cpus, "CPUs", cpus == 2, f"domain with 2 vCPUs: the guest sees {cpus}")
        return [Measurement("guest_memory_mib", total), Measurement("vcpus_seen", float(cpus))]


WORKLOAD = Enforcement()
