"""footprint: what an idle instance costs the host, and how fast instances start in a row.

For each N of the profile, N idle busybox instances (``sleep``) are started one after another and each
waited for; then, with all N up:

- ``pss_per_instance_mib_n<N>``: PSS (shared pages split fairly) of every host process the instances
  consist of (container: its processes; runc: its processes plus the ``runc run`` parent; VM: the QEMU
  process, guest RAM included), divided by N; ``pss_per_instance_mib`` is the largest N's;
- ``mem_delta_mib_n<N>``: host MemAvailable before minus with all N up (everything: page cache, kernel
  objects, QEMU), and ``mem_delta_per_instance_mib_n<N>`` = that / N;
- ``instances_per_s``: N / time from the first create to the last ready, largest N;
- ``size_on_disk_mib``: native the flat rootfs, container/runc the unpacked image layers, VM the base
  disk + kernel + initrd (facts.json ``sizes`` says which).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.environments.base import READY_MARKER, Environment, Instance, Job
from bench.workloads.base import Context, Measurement, Metric, Workload
from core.errors import BenchError

MIB = 1 << 20


def mem_available_bytes(meminfo: str | None = None) -> int:
    text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise BenchError("/proc/meminfo has no MemAvailable")


def du_bytes(path: Path) -> int:
    """Allocated bytes under ``path`` (hard links counted once, like du)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def size_on_disk(env: str, ctx: Context) -> tuple[int, str]:
    from runtime.image.store import ImageStore

    store = ImageStore(ctx.paths)
    rec = ctx.images["busybox"]
    if env == "native":
        return du_bytes(store.flat_rootfs(rec)), "flat rootfs of the busybox image"
    if env in ("container", "runc"):
        return sum(du_bytes(d) for d in store.layer_dirs(rec)), "unpacked image layers of the busybox image"
    from vmharness import artifacts

    arts = artifacts.ensure_artifacts(ctx.paths.vm_artifacts, rec.manifest_digest, lambda: store.flat_rootfs(rec))
    files = (arts.disk, arts.kernel, arts.initrd)
    return (sum(os.stat(f).st_blocks * 512 for f in files),
            f"VM base disk ({arts.disk.name}) + kernel + initrd, allocated bytes")


class Footprint(Workload):
    name = "footprint"
    images = ("busybox",)
    metrics = {
        "pss_per_instance_mib": Metric("MiB", "lower", "PSS of an idle instance's host processes"),
        "mem_delta_per_instance_mib": Metric("MiB", "lower", "host MemAvailable drop / N"),
        "mem_delta_mib": Metric("MiB", "lower", "host MemAvailable drop with N idle instances"),
        "instances_per_s": Metric("instances/s", "higher", "N started in a row / time to all ready"),
        "size_on_disk_mib": Metric("MiB", "lower", "image (or VM disk+kernel+initrd) on disk"),
    }

    def iterations(self, profile) -> tuple[int, int]:
        return 0, profile.footprint_values

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        out: list[Measurement] = []
        ns = ctx.profile.footprint_n
        for n in ns:
            pss, delta, rate = self._instances(env, ctx, n)
            out += [Measurement(f"pss_per_instance_mib_n{n}", pss / n / MIB),
                    Measurement(f"mem_delta_mib_n{n}", delta / MIB),
                    Measurement(f"mem_delta_per_instance_mib_n{n}", delta / n / MIB)]
            if n == max(ns):
                out += [Measurement("pss_per_instance_mib", pss / n / MIB), Measurement("instances_per_s", rate)]
        if ("size", env.name) not in ctx.cache:
            ctx.cache[("size", env.name)] = size_on_disk(env.name, ctx)
            b, what = ctx.cache[("size", env.name)]
            ctx.facts.setdefault("sizes", {})[env.name] = {"bytes": int(b), "what": what}
        out.append(Measurement("size_on_disk_mib", ctx.cache[("size", env.name)][0] / MIB))
        return out

    def _instances(self, env: Environment, ctx: Context, n: int) -> tuple[int, int, float]:
        job = Job(image=ctx.image("busybox"), argv=("/bin/sh", "-c", f"echo {READY_MARKER}; exec sleep 100000"),
                  ready_marker=READY_MARKER, memory_mib=128, timeout_s=600)
        insts: list[Instance] = []
        try:
            before = mem_available_bytes()
            t0 = time.perf_counter_ns()
            for _ in range(n):
                inst = env.start(job)
                insts.append(inst)
                inst.wait_ready(120)
            rate = n / ((time.perf_counter_ns() - t0) / 1e9)
            time.sleep(0.5)  # let page-cache and allocator settle before reading
            pss = sum(i.usage().pss_bytes for i in insts)
            delta = before - mem_available_bytes()
        finally:
            for inst in insts:
                inst.stop()
        return pss, delta, rate


WORKLOAD = Footprint()
