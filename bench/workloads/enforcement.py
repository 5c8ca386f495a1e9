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

Every metric gets ``profile.values`` values, each from its own instance (its own VM boot): values read
from one instance would share its placement and warm-up and could not count as independent. cpus and
cpu_shares start the tool, let it settle, and read the CPU time from the host over one
``enforcement_duration_s`` window; memory, pids and blkio run once per value; the VM's MemTotal and CPU
count are read in a fresh boot per value. The fact of each limit is the median of its values.
"""

from __future__ import annotations

import re
import statistics
import time

from bench.environments.base import READY_MARKER, Environment, Job, Limits
from bench.workloads import cpu as cpuwl
from bench.workloads import disk as diskwl
from bench.workloads.base import Context, Measurement, Metric, Workload, check_exit
from core.errors import BenchError

MIB = 1 << 20
ASK = {"cpus": 0.5, "cpu_shares": 2.0, "memory_mib": 64, "pids": 32, "blkio_write_mib_s": 10.0}
TOLERANCE = 0.15   # measured may exceed asked by this fraction and still count as held
# the file that holds each limit, per cgroup driver: the report shows v1 (this host) beside v2 (the guest)
CGROUP_FILES = {
    "v1": {"cpus": "cpu.cfs_quota_us", "cpu_shares": "cpu.shares", "memory": "memory.limit_in_bytes",
           "pids": "pids.max", "blkio_write": "blkio.throttle.write_bps_device"},
    "v2": {"cpus": "cpu.max", "cpu_shares": "cpu.weight", "memory": "memory.max", "pids": "pids.max",
           "blkio_write": "io.max"},
}


IN_GUEST = ("vm-container", "vm-container-runc")   # containers in the vm-container guest (pure cgroup v2)


def held_by(env: str, limit: str, host_driver: str) -> str:
    """Which cgroup file held ``limit`` in ``env`` ("" where no cgroup does: the VM's domain settings)."""
    driver, where = ("v2", " in the guest") if env in IN_GUEST else (host_driver, "")
    name = CGROUP_FILES.get(driver, {}).get(limit) if env != "vm" else None
    return f"cgroup {driver}{where}: {name}" if name else ""


def _fact(ctx: Context, env: str, limit: str, asked: float, measured: float, unit: str, held, ev: str) -> None:
    """Record one value of ``limit`` in ``env``; the fact holds the median of the values so far.
    ``held(median) -> bool`` judges the median (a plain bool is taken as is)."""
    values = ctx.cache.setdefault(("enforcement-values", env, limit), [])
    values.append(float(measured))
    verdicts = ctx.cache.setdefault(("enforcement-held", env, limit), [])
    med = statistics.median(values)
    if not callable(held):
        verdicts.append(bool(held))
    ok = held(med) if callable(held) else all(verdicts)  # a per-run verdict holds only if every run held
    if len(values) > 1:
        ev += f"; median of {len(values)} values {med:.4g} (range {min(values):.4g}-{max(values):.4g})"
    rows = [r for r in ctx.facts.setdefault("enforcement", []) if not (r["environment"] == env and r["limit"] == limit)]
    from runtime.cgroups import detect

    rows.append({"environment": env, "limit": limit, "asked": float(asked), "measured": round(float(med), 4),
                 "unit": unit, "held": bool(ok), "values": len(values), "evidence": ev,
                 "cgroup": held_by(env, limit, detect().driver)})
    ctx.facts["enforcement"] = rows


def window_deltas(readings: list[tuple[float, float]]) -> list[float]:
    """(time_s, cpu_s) readings -> CPU-seconds per second of each window between consecutive readings."""
    return [(c2 - c1) / (t2 - t1) for (t1, c1), (t2, c2) in zip(readings, readings[1:]) if t2 > t1]


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
    environments = ("container", "runc", "vm", "vm-container", "vm-container-runc")
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
        return 0, profile.values

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

    def _window(self, insts, ctx: Context, settle_s: float) -> list[float]:
        """Per instance, CPU-seconds/second over one ``enforcement_duration_s`` window read from the host."""
        w = ctx.profile.enforcement_duration_s
        for i in insts:
            i.wait_ready(120)
        time.sleep(settle_s)  # the tool starting up (in the guest: sysbench after boot)
        readings: list[list[tuple[float, float]]] = [[] for _ in insts]
        for n in range(2):
            if n:
                time.sleep(w)
            for r, i in zip(readings, insts):
                r.append((time.monotonic(), i.usage().cpu_s))
        for i in insts:  # a tool that ended early would make its window short of CPU, not a measurement
            if i.env_name != "vm" and not i.workload_pids():  # (vm-container: pids counted in the guest)
                out = i.wait(10)
                raise BenchError(f"sysbench exited {out.exit_code} before the {w:g}s window ended: "
                                 f"{out.output.strip()[-200:]!r}")
        return [window_deltas(r)[0] for r in readings]

    def _cpus(self, env: Environment, ctx: Context) -> list[Measurement]:
        w = ctx.profile.enforcement_duration_s
        settle_s = 1.0 if env.name in ("vm", *IN_GUEST) else 0.5
        run_s = int(w + settle_s + 3)
        inst = env.start(self._job(ctx, cpuwl.command(2, run_s), vcpus=2, limits=Limits(cpus=ASK["cpus"])))
        try:
            measured = self._window([inst], ctx, settle_s)[0]
        finally:
            inst.stop()
        how = {"vm": "the QEMU process's CPU time (domain CPU quota, cputune; the guest cannot see its own throttling)",
               "vm-container": "the container's cgroup v2 CPU time in the guest (cpu.max; cpu.stat usage_usec)",
               "vm-container-runc": "the container's cgroup v2 CPU time in the guest (runc's cpu.max; cpu.stat "
                                    "usage_usec)"}.get(env.name, "the cgroup's CPU time (cpuacct)")
        _fact(ctx, env.name, "cpus", ASK["cpus"], measured, "CPUs", lambda m: m <= ASK["cpus"] * (1 + TOLERANCE),
              f"sysbench on 2 threads{' / 2 vCPUs' if env.name == 'vm' else ''} under a quota of {ASK['cpus']} CPU: "
              f"{how} read from the host over {w:g}s, one instance per value")
        return [Measurement("cpus_measured", measured)]

    def _shares(self, env: Environment, ctx: Context) -> list[Measurement]:
        w = ctx.profile.enforcement_duration_s
        run_s = int(w + 3)
        insts = []
        try:
            for shares in (1024, 512):
                insts.append(env.start(self._job(ctx, cpuwl.command(1, run_s),
                                                 limits=Limits(cpu_shares=shares, cpuset_cpus="0"))))
            hi, lo = self._window(insts, ctx, 0.5)
        finally:
            for i in insts:
                i.stop()
        measured = hi / lo if lo else float("inf")
        _fact(ctx, env.name, "cpu_shares", ASK["cpu_shares"], measured, "ratio",
              lambda m: abs(m - ASK["cpu_shares"]) <= ASK["cpu_shares"] * 0.25,
              f"two sysbench instances pinned to CPU 0 at once, cpu.shares 1024 vs 512: ratio of their cgroup CPU "
              f"time over {w:g}s, a fresh pair per value")
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
              f"counted from {'the guest' if env.name in IN_GUEST else 'the host'}")
        return [Measurement("pids_reached", float(reached))]

    def _blkio(self, env: Environment, ctx: Context) -> list[Measurement]:
        d = max(1, int(round(ctx.profile.enforcement_duration_s)))
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
        # a fresh boot per value (what a boot sets up is the measurement)
        text = check_exit(env.run(self._job(ctx, ("/bin/sh", "-c", "cat /proc/meminfo; echo CPUS $(nproc)"),
                                            vcpus=2, memory_mib=asked_mib)), "meminfo", env.name).output
        total = meminfo_total_mib(text)
        m = re.search(r"CPUS (\d+)", text)
        cpus = int(m.group(1)) if m else 0
        _fact(ctx, env.name, "memory", asked_mib, total, "MiB", total <= asked_mib,
              f"guest RAM {asked_mib} MiB: the guest's MemTotal is {total:.0f} MiB (the kernel keeps the rest)")
        _fact(ctx, env.name, "vcpus", 2, cpus, "CPUs", cpus == 2, f"domain with 2 vCPUs: the guest sees {cpus}")
        return [Measurement("guest_memory_mib", total), Measurement("vcpus_seen", float(cpus))]


WORKLOAD = Enforcement()
