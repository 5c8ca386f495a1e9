"""footprint: what an idle instance costs the host, counted the same way in every environment.

Per value, idle busybox instances (``sleep``) are started one after another up to N (the largest of
the profile's counts) and each waited for. The accounting is the same everywhere:

- the PSS (shared pages split fairly) of every host process that belongs to the instance: native its
  processes; container its processes (the in-process runtime's monitor is the harness, counted below);
  runc its processes plus the ``runc run`` parent; VM the QEMU process, guest RAM included;
- the kernel memory charged to the instance's own cgroup (v1 ``memory.kmem.usage_in_bytes``, v2
  ``memory.stat`` kernel): page tables, slab, sockets (native has no cgroup of its own: nothing);
- the growth of the shared helpers per instance: libvirtd and virtlogd (the VM's per-domain share) and
  the harness itself (every environment's output reader; the container's monitor): their PSS with N up
  minus before, / N.

Metrics: ``accounted_mib_per_instance_n<N>`` (the sum above / N, for every N of the profile) and its
parts at the largest N (``pss_mib_per_instance``, ``kernel_mib_per_instance``,
``shared_mib_per_instance``); ``density_mib_per_instance``: minus the slope of host MemAvailable over
the number of running instances (least squares: everything an instance costs, page cache and kernel
objects included), with ``density_noise_mib``: twice the slope's standard error. MemAvailable is read
going up (0, 1, .., N instances) and back down (stopping them one by one): a host whose free memory
drifts linearly meanwhile (other tenants, page cache) shifts both legs alike, and the symmetric
design cancels that drift from the slope instead of charging it to the instances. A slope inside its noise is
no measurable cost, and the report says "< noise" rather than printing a negative size.
``instances_per_s``: N / the summed create-to-ready times; ``size_on_disk_mib``: native the flat
rootfs, container/runc the unpacked image layers, VM the base disk + kernel + initrd.
Each value comes from its own set of instances.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.environments.base import READY_MARKER, Environment, Instance, Job, pss_bytes
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
    if env == "vm-container":
        from bench.environments.vm_container import guest_disk_bytes

        return guest_disk_bytes(ctx.paths)
    if env in ("container", "runc"):
        return sum(du_bytes(d) for d in store.layer_dirs(rec)), "unpacked image layers of the busybox image"
    from vmharness import artifacts

    arts = artifacts.ensure_artifacts(ctx.paths.vm_artifacts, rec.manifest_digest, lambda: store.flat_rootfs(rec))
    files = (arts.disk, arts.kernel, arts.initrd)
    return (sum(os.stat(f).st_blocks * 512 for f in files),
            f"VM base disk ({arts.disk.name}) + kernel + initrd, allocated bytes")


SHARED_HELPERS = ("libvirtd", "virtlogd")   # host daemons a VM's domain grows; the harness is added by pid
SETTLE_S = 0.5


def pids_named(names: tuple[str, ...]) -> list[int]:
    """Host pids whose comm is one of ``names`` (the shared daemons; only read, never signalled)."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() in names:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def memory_cgroup_of(pid: int, proc: Path = Path("/proc"), root: Path = Path("/sys/fs/cgroup")) -> Path | None:
    """The memory cgroup directory of ``pid`` (v1 ``memory`` controller, else the v2 unified path)."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return root / "memory" / path.lstrip("/")
        if controllers == "":
            v2 = path
    return root / v2.lstrip("/") if v2 is not None and (root / "cgroup.controllers").exists() else None


def kernel_memory_bytes(cgroup: Path) -> int:
    """Kernel memory charged to a cgroup: v1 ``memory.kmem.usage_in_bytes``; v2 ``memory.stat`` kernel
    (or its parts on kernels before 5.18)."""
    try:
        return int((cgroup / "memory.kmem.usage_in_bytes").read_text())
    except (OSError, ValueError):
        pass
    try:
        stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    if "kernel" in stat:
        return int(stat["kernel"])
    return sum(int(stat.get(k, 0)) for k in ("kernel_stack", "pagetables", "percpu", "sock", "slab"))


def instance_kernel_bytes(inst: Instance) -> int:
    """Kernel memory of the instance's own cgroup; 0 when it runs in the harness's (native)."""
    pid = inst.accounting_pid()
    if pid is None:
        return 0
    cg, own = memory_cgroup_of(pid), memory_cgroup_of(os.getpid())
    if cg is None or cg == own or cg.parent == cg:
        return 0
    return kernel_memory_bytes(cg)


def slope_fit(ys: list[float], xs: list[float] | None = None) -> tuple[float, float]:
    """Least-squares slope of ``ys`` over ``xs`` (default 0..len-1) and its standard error (inf with
    fewer than 3 points)."""
    n = len(ys)
    xs = list(range(n)) if xs is None else list(xs)
    if n < 2 or len(xs) != n:
        raise BenchError("a slope needs at least two readings, one per x")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    if n < 3:
        return slope, float("inf")
    resid = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
    return slope, (resid / (n - 2) / sxx) ** 0.5


def up_down_counts(n_max: int) -> list[int]:
    """Running instances at each MemAvailable reading: 0, 1, .., N, N-1, .., 0."""
    return list(range(n_max + 1)) + list(range(n_max - 1, -1, -1))


class Footprint(Workload):
    name = "footprint"
    images = ("busybox",)
    environments = ("native", "container", "runc", "vm", "vm-container")
    metrics = {
        "accounted_mib_per_instance": Metric("MiB", "lower", "host processes' PSS + cgroup kernel memory + "
                                                             "shared helpers' growth, per idle instance"),
        "pss_mib_per_instance": Metric("MiB", "lower", "PSS of the instance's host processes"),
        "kernel_mib_per_instance": Metric("MiB", "lower", "kernel memory of the instance's cgroup"),
        "shared_mib_per_instance": Metric("MiB", "lower", "libvirtd/virtlogd/harness growth / N"),
        "density_mib_per_instance": Metric("MiB", "lower", "-slope of host MemAvailable over 0..N instances"),
        "density_noise_mib": Metric("MiB", "lower", "2 x standard error of that slope"),
        "instances_per_s": Metric("instances/s", "higher", "N started in a row / summed create-to-ready"),
        "size_on_disk_mib": Metric("MiB", "lower", "image (or VM disk+kernel+initrd) on disk"),
    }
    noise_metrics = {"density_mib_per_instance": "density_noise_mib"}

    def iterations(self, profile) -> tuple[int, int]:
        return 0, profile.footprint_values

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        out = self._instances(env, ctx, max(ctx.profile.footprint_n))
        if ("size", env.name) not in ctx.cache:
            ctx.cache[("size", env.name)] = size_on_disk(env.name, ctx)
            b, what = ctx.cache[("size", env.name)]
            ctx.facts.setdefault("sizes", {})[env.name] = {"bytes": int(b), "what": what}
        out.append(Measurement("size_on_disk_mib", ctx.cache[("size", env.name)][0] / MIB))
        return out

    def _instances(self, env: Environment, ctx: Context, n_max: int) -> list[Measurement]:
        job = Job(image=ctx.image("busybox"), argv=("/bin/sh", "-c", f"echo {READY_MARKER}; exec sleep 100000"),
                  ready_marker=READY_MARKER, memory_mib=128, timeout_s=600)
        insts: list[Instance] = []
        out: list[Measurement] = []
        helpers = pids_named(SHARED_HELPERS) + [os.getpid()]
        try:
            time.sleep(SETTLE_S)
            available = [mem_available_bytes()]
            helpers_before = pss_bytes(helpers)
            start_s = 0.0
            for n in range(1, n_max + 1):
                t0 = time.perf_counter_ns()
                inst = env.start(job)
                insts.append(inst)
                inst.wait_ready(120)
                start_s += (time.perf_counter_ns() - t0) / 1e9
                time.sleep(SETTLE_S)  # let page cache and allocators settle before reading
                available.append(mem_available_bytes())
                if n in ctx.profile.footprint_n:
                    pss = sum(i.usage().pss_bytes for i in insts)
                    kernel = sum(instance_kernel_bytes(i) for i in insts)
                    shared = pss_bytes(helpers) - helpers_before
                    out.append(Measurement(f"accounted_mib_per_instance_n{n}", (pss + kernel + shared) / n / MIB))
                    if n == n_max:
                        out += [Measurement("pss_mib_per_instance", pss / n / MIB),
                                Measurement("kernel_mib_per_instance", kernel / n / MIB),
                                Measurement("shared_mib_per_instance", shared / n / MIB)]
            while insts:  # the way down: one by one, each followed by a reading
                insts.pop().stop()
                time.sleep(SETTLE_S)
                available.append(mem_available_bytes())
        finally:
            for inst in insts:
                inst.stop()
        counts = up_down_counts(n_max)
        slope, se = slope_fit([float(a) for a in available], counts)
        ctx.facts.setdefault("density", {}).setdefault(env.name, []).append(
            {"instances": counts, "mem_available_mib": [round(a / MIB, 2) for a in available]})
        return out + [Measurement("density_mib_per_instance", -slope / MIB),
                      Measurement("density_noise_mib", 2 * se / MIB),
                      Measurement("instances_per_s", n_max / start_s)]


WORKLOAD = Footprint()
