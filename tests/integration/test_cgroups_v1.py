"""The cgroup driver against this host's real kernel (hybrid layout: v1 controllers): values land in the
kernel's files, usage reads back, bad values roll back, kill/destroy/gc behave, and gc touches only
orphans named isobench-*."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core import leases
from runtime.cgroups import create_cgroup, detect, open_cgroup
from runtime.cgroups.gc import gc
from core.errors import CgroupError
from core.paths import host_name, new_id
from runtime.spec import Resources, ThrottleDevice
from tests.integration.test_cgroups_support import made, wait_for  # noqa: F401

pytestmark = pytest.mark.requires("root", "cgroup_v1")
MIB = 1 << 20


def _ours(name: str) -> list[Path]:
    lay = detect()
    return [m / name for m in set(lay.v1.values()) if (m / name).exists()]


def test_detects_this_hosts_layout():
    lay = detect()
    assert lay.driver == "v1" and lay.version in ("v1", "hybrid")
    assert {"cpu", "cpuacct", "memory", "pids"} <= set(lay.v1)


def test_limits_reach_the_kernel_and_usage_reads_back(leak_check, made):
    cpu = max(os.sched_getaffinity(0))
    cg = made.cgroup(Resources(cpu_quota_us=50_000, cpu_shares=512, memory_bytes=64 * MIB, pids_max=20,
                               cpuset_cpus=str(cpu), device_read_bps=(ThrottleDevice("/dev/vda", 8 * MIB),)))
    read = {
        ("cpu", "cpu.cfs_quota_us"): "50000", ("cpu", "cpu.cfs_period_us"): "100000",
        ("cpu", "cpu.shares"): "512", ("memory", "memory.limit_in_bytes"): str(64 * MIB),
        ("pids", "pids.max"): "20", ("cpuset", "cpuset.cpus"): str(cpu),
        ("blkio", "blkio.throttle.read_bps_device"): f"254:0 {8 * MIB}",
    }
    for (ctl, f), want in read.items():
        assert (cg.paths[ctl] / f).read_text().strip() == want, f
    proc = made.spawn(cg, ["/bin/busybox", "sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30"])
    assert wait_for(lambda: cg.usage().cpu_usage_ns > 10_000_000)
    u = cg.usage()
    assert u.pids_current >= 1 and u.memory_current_bytes > 0 and u.oom_kill_count == 0
    assert open_cgroup(cg.name).paths == cg.paths
    assert proc.pid in cg.pids()


def test_bad_values_leave_nothing_behind(leak_check, tmp_path):
    name = host_name(new_id())
    with pytest.raises(CgroupError, match="not among the host's CPUs"):
        create_cgroup(name, Resources(cpuset_cpus="0-63"))
    with pytest.raises(CgroupError, match="is not a block device"):
        create_cgroup(name, Resources(device_write_bps=(ThrottleDevice("/dev/null", MIB),)))
    # a device number no disk has: passes our checks, the kernel refuses it -> everything made is removed
    fake = tmp_path / "nodisk"
    os.mknod(fake, 0o600 | 0o060000, os.makedev(7, 250))
    with pytest.raises(CgroupError, match=r"'blkio' rejected '7:250 1048576' for blkio.throttle.write_bps_device"):
        create_cgroup(name, Resources(memory_bytes=64 * MIB,
                                      device_write_bps=(ThrottleDevice(str(fake), MIB),)))
    assert _ours(name) == []


def test_name_in_use_is_refused(leak_check, made):
    cg = made.cgroup(Resources())
    with pytest.raises(CgroupError, match="already exists"):
        create_cgroup(cg.name, Resources())
    assert open_cgroup(cg.name).paths == cg.paths  # the first one is untouched


def test_kill_all_with_sigterm_and_destroy_waits_for_exit(leak_check, made):
    cg = made.cgroup(Resources())
    procs = [made.spawn(cg, ["sleep", "60"]) for _ in range(3)]
    assert wait_for(lambda: len(cg.pids()) == 3)
    cg.kill_all(signal.SIGTERM)
    assert [p.wait(timeout=10) for p in procs] == [-signal.SIGTERM] * 3
    cg.destroy()
    cg.destroy()  # idempotent
    assert _ours(cg.name) == []
    with pytest.raises(CgroupError, match="no longer exists"):
        cg.usage()
    with pytest.raises(CgroupError, match="does not exist"):
        open_cgroup(cg.name)


def test_destroy_refuses_while_processes_live(leak_check, made):
    cg = made.cgroup(Resources())
    made.spawn(cg, ["sleep", "60"])
    assert wait_for(lambda: len(cg.pids()) == 1)
    with pytest.raises(CgroupError, match="processes still inside"):
        cg.destroy()


def test_gc_removes_only_orphans(leak_check, paths):
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan_id, live_id = new_id(), new_id()
    orphan, live = host_name(orphan_id), host_name(live_id)
    leases.take(orphan_id, pid=dead.pid)  # its owner is gone
    leases.take(live_id)                  # owned by this test process
    foreign = detect().v1["pids"] / f"gctest-{new_id()}"
    sleeper = None
    try:
        cg_orphan = create_cgroup(orphan, Resources(pids_max=10))
        cg_live = create_cgroup(live, Resources())
        foreign.mkdir()
        sleeper = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: cg_orphan.add_pid(os.getpid()))
        assert wait_for(lambda: cg_orphan.pids() == [sleeper.pid])
        removed = gc(paths, names={orphan, live, foreign.name})
        assert removed == [f"cgroup {orphan}"]
        assert sleeper.wait(timeout=10) == -signal.SIGKILL  # an orphan's process is killed with it
        assert _ours(orphan) == [] and open_cgroup(live).paths == cg_live.paths and foreign.is_dir()
    finally:
        if sleeper and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        for name in (orphan, live):
            if _ours(name):
                open_cgroup(name).kill_all()
                open_cgroup(name).destroy()
        if foreign.exists():
            foreign.rmdir()
        leases.release(orphan_id)
        leases.release(live_id)


def test_create_and_join_are_cheap(leak_check, made):
    """Not a benchmark (bench/ measures), a guard that the start path stays a few file writes: creation
    plus a child joining itself, far below the 10 ms container start budget. Also shows why the child
    should join itself: a parent's add_pid can wait an RCU grace period in the kernel."""
    made.cgroup(Resources())  # warm: layout detection is cached per process
    r, w = os.pipe()
    time.sleep(0.5)  # let the kernel's cgroup rcu_sync go idle, as between container starts
    obj_id = new_id()
    leases.take(obj_id, kind="cgroup-test")  # outside the timing: the runtime's lease is not a cgroup cost
    made.lease_ids.append(obj_id)
    started = time.perf_counter()
    cg = create_cgroup(host_name(obj_id), Resources(cpu_quota_us=50_000, memory_bytes=64 * MIB, pids_max=100))
    created = time.perf_counter()
    made.cgroups.append(cg)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        t0 = time.perf_counter()
        cg.join_self()
        os.write(w, f"{(time.perf_counter() - t0) * 1000:.3f}".encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    join_ms = float(os.read(r, 64))
    os.close(r)
    sleeper = subprocess.Popen(["sleep", "60"])
    made.procs.append(sleeper)
    time.sleep(0.5)
    t0 = time.perf_counter()
    cg.add_pid(sleeper.pid)
    add_ms = (time.perf_counter() - t0) * 1000
    create_ms = (created - started) * 1000
    print(f"\ncreate_cgroup (cpu+memory+pids limits): {create_ms:.2f} ms; child join_self: {join_ms:.2f} ms; "
          f"parent add_pid after idle: {add_ms:.2f} ms")
    assert create_ms + join_ms < 50
    assert cg.pids() == [sleeper.pid]
