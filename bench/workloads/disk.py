"""disk: fio random 4 KiB and sequential 1 MiB reads and writes (direct I/O, psync), one fio run with
two stonewalled mixed jobs per location (``randrw`` and ``rw``, 50/50: each reports its read and its
write bandwidth, so four numbers cost two job runtimes):

- ``layer_*``: the instance's own root filesystem: the container's and runc's overlay writable layer,
  the VM's virtual disk;
- ``volume_*``: a host directory bind-mounted into the container; natively that is simply the host's
  filesystem, the baseline.

Metrics ``<location>_<job>_mib_s`` (MiB/s, higher is better). Course-notes claim: a container's writable
layer costs something (copy-on-write), a volume is native speed, a VM disk pays for virtio/emulation.

Like with like: every job uses direct I/O, and the VM's disk is attached with ``cache='none'``
(``io='native'``), so no environment reads from the host page cache; the VM's qcow2 overlay, the
container's writable layer and native's directory lie on the same host filesystem (facts.json
``disk_storage`` records device and type of each), so native is the baseline on the same storage.
This is the IBM ISPASS'15 setup in which Docker matched native and KVM lost on I/O.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from bench.environments.base import Environment, Job, Volume
from bench.workloads.base import Context, Measurement, Metric, Workload, run_tool
from core.errors import BenchError

JOBS = (("rand", "randrw", "4k"), ("seq", "rw", "1m"))
METRIC_NAMES = ("randread", "randwrite", "seqread", "seqwrite")
# runc's volume would repeat the container's bind mount: its writable layer is the comparison that matters
LOCATIONS: dict[str, tuple[str, ...]] = {"native": ("volume",), "container": ("layer", "volume"),
                                         "runc": ("layer",), "vm": ("layer",)}


def command(filename: str, size_mib: int, duration_s: float) -> tuple[str, ...]:
    argv = ["fio", "--output-format=json", "--ioengine=psync", "--direct=1", f"--size={size_mib}m",
            f"--runtime={max(1, int(round(duration_s)))}", "--time_based", f"--filename={filename}"]
    for i, (name, rw, bs) in enumerate(JOBS):
        argv += [f"--name={name}"] + (["--stonewall"] if i else []) + [f"--rw={rw}", f"--bs={bs}"]
    return tuple(argv)


def parse(output: str) -> dict[str, float]:
    """``<job><direction>`` (e.g. ``randread``) -> MiB/s from ``fio --output-format=json``, for every
    direction a job moved bytes in (a job named after its direction, like ``seqwrite``, keeps its name).
    Text before the JSON (warnings) is skipped."""
    start = output.find("{")
    if start < 0:
        raise BenchError(f"fio: no JSON in output: {output.strip()[-200:]!r}")
    try:
        data, _ = json.JSONDecoder().raw_decode(output[start:])
    except json.JSONDecodeError as exc:
        raise BenchError(f"fio: unparsable JSON output ({exc})") from exc
    out = {}
    for job in data.get("jobs", []):
        name = job["jobname"]
        for direction in ("read", "write"):
            st = job[direction]
            if st.get("io_bytes", 0) > 0 or st.get("bw", 0) > 0:
                key = name if name.endswith(direction) else name + direction
                out[key] = st["bw"] / 1024.0  # KiB/s -> MiB/s
    if not out:
        raise BenchError("fio: JSON output has no jobs")
    return out


def storage_of(path: Path) -> dict:
    """Device, filesystem type and mount point of the filesystem holding ``path`` (from /proc/self/mountinfo)."""
    path.mkdir(parents=True, exist_ok=True)
    dev = os.stat(path).st_dev
    best: dict = {"path": str(path), "device": f"{os.major(dev)}:{os.minor(dev)}", "fstype": "unknown"}
    longest = -1
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        mount = fields[4]
        if fields[2] == best["device"] and len(mount) > longest and str(path).startswith(mount):
            longest = len(mount)
            best.update(mount=mount, fstype=right.split()[0], source=right.split()[1])
    return best


class Disk(Workload):
    name = "disk"
    images = ("tools",)
    metrics = {f"{loc}_{name}_mib_s": Metric("MiB/s", "higher", f"fio {name} on the {loc}")
               for loc in ("layer", "volume") for name in METRIC_NAMES}

    def setup(self, ctx: Context) -> None:
        where = {"native (volume baseline)": ctx.work_dir or ctx.paths.tmp,
                 "container/runc (writable layer)": ctx.paths.containers,
                 "vm (qcow2 overlay, cache=none, io=native)": ctx.paths.vms}
        ctx.facts["disk_storage"] = {k: storage_of(Path(v)) for k, v in where.items()}

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        out = []
        p = ctx.profile
        for loc in LOCATIONS.get(env.name, ()):
            vol = None
            if loc == "volume":
                # a fresh directory per run: nothing of an earlier instance's (lazily unmounted) volume is reused
                vol = Volume(host_dir=(ctx.work_dir or ctx.paths.tmp) / f"disk-{env.name}-{iteration}-{time.monotonic_ns()}",
                             destination="/data")
                target = "/data/fio.dat"
            else:
                target = "/fio.dat"
            job = Job(image=ctx.image("tools"), argv=command(target, p.fio_size_mib, p.tool_duration_s), volume=vol,
                      timeout_s=120 + 4 * p.tool_duration_s, memory_mib=p.vm_memory_mib)
            try:
                res = parse(run_tool(env, ctx, job, iteration, f"disk-{loc}"))
            finally:
                if vol is not None:
                    shutil.rmtree(vol.host_dir, ignore_errors=True)
            missing = [n for n in METRIC_NAMES if n not in res]
            if missing:
                raise BenchError(f"fio on the {loc} in {env.name}: no {', '.join(missing)} result")
            out += [Measurement(f"{loc}_{name}_mib_s", res[name]) for name in METRIC_NAMES]
        return out


WORKLOAD = Disk()
