"""cgroup enforcement through the runtime's library API (``runtime.api``): the same measurements as
test_enforcement_cgroups.py, but the workloads are busybox containers started by isobench's runtime with
``Resources`` limits, as the harness and ``isobench run --memory/--cpus/--pids-limit/--cpu-shares/
--cpuset-cpus/--device-write-bps`` start them."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from runtime.cgroups import devices, open_cgroup
from runtime.cgroups.rules import MAX_SHARES
from core.errors import CgroupError, IsobenchError
from runtime.spec import ContainerConfig, MountSpec, NetworkSpec, Resources, ThrottleDevice
from tests.imagefixtures import ensure_busybox

api = pytest.importorskip("runtime.api")
pytestmark = pytest.mark.requires("root", "cgroup_v1", "busybox")
MIB = 1 << 20
WINDOWS = 5  # 2 s CPU windows tried before the lower bound fails (shared, noisy host)
BUSY = ("sh", "-c", "while :; do :; done")


@pytest.fixture
def containers(leak_check, paths):
    """Factory: create+start busybox containers; always killed and deleted (leak_check runs after)."""
    ensure_busybox(paths)
    made = []

    def start(command: tuple[str, ...], resources: Resources, **extra):
        cfg = ContainerConfig(image="busybox", command=command, resources=resources,
                              network=NetworkSpec(mode="none"), **extra)
        c = api.create(cfg, paths)
        made.append(c)
        api.start(c)
        return c

    yield start
    for c in made:
        with contextlib.suppress(IsobenchError):
            api.delete(c, force=True)
    left = [c.host_name for c in made if _cgroup_exists(c.host_name)]
    assert not left, f"container cgroups left behind: {left}"


def _cgroup_exists(name: str) -> bool:
    try:
        open_cgroup(name)
    except CgroupError:
        return False
    return True


# The measurements below are shared with test_cgroups_v2.py (the same containers on a unified
# hierarchy); each test keeps its own bounds, windows and time-outs.

def _cpu_fraction(c, seconds: float) -> float:
    u0, t0 = api.usage(c).cpu_usage_ns, time.monotonic()
    time.sleep(seconds)
    u1, t1 = api.usage(c).cpu_usage_ns, time.monotonic()
    return (u1 - u0) / ((t1 - t0) * 1e9)


def check_memory_hog_is_oom_killed(containers, label: str, timeout_s: float) -> None:
    """dd allocates and fills a 64 MiB block under --memory 32m (no swap): twice the limit, so the
    OOM killer ends it (137, OOMKilled) with its peak at the limit."""
    limit = 32 * MIB
    c = containers(("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"),
                   Resources(memory_bytes=limit, memory_swap_bytes=limit))
    code = api.wait(c, timeout_s=timeout_s)
    u = c.final_usage
    print(f"\n{label} --memory 32m: exit {code}, OOMKilled {c.oom_killed}, oom_kill={u.oom_kill_count}, "
          f"peak {u.memory_peak_bytes / MIB:.2f} MiB")
    assert code == 137 and c.oom_killed
    assert u.oom_kill_count >= 1 and u.memory_peak_bytes <= limit + 256 * 1024


def cpu_fractions(c, windows: int, low: float, high: float) -> list[float]:
    """CPU used by ``c`` per 2 s window, until a window lands in [low, high] or ``windows`` are taken:
    on a shared, noisy host the ceiling must hold in every window, the share only when the host is free."""
    fractions: list[float] = []
    for _ in range(windows):
        fractions.append(_cpu_fraction(c, 2.0))
        if low <= fractions[-1] <= high:
            break
    return fractions


def pids_peak(c, seconds: float, every_s: float) -> int:
    """The highest pids.current of ``c`` sampled every ``every_s`` for ``seconds``."""
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, api.usage(c).pids_current)
        time.sleep(every_s)
    return peak


def shares_ratio_on_one_cpu(containers, settle_s: float, window_s: float) -> tuple[str, float]:
    """Two busy loops with --cpu-shares 1024 and 512 pinned to one CPU: (the CPU, heavy:light CPU time
    over ``window_s`` after ``settle_s``)."""
    cpu = str(max(os.sched_getaffinity(0)))
    heavy = containers(BUSY, Resources(cpu_shares=1024, cpuset_cpus=cpu))
    light = containers(BUSY, Resources(cpu_shares=512, cpuset_cpus=cpu))
    time.sleep(settle_s)
    h0, l0 = api.usage(heavy).cpu_usage_ns, api.usage(light).cpu_usage_ns
    time.sleep(window_s)
    h1, l1 = api.usage(heavy).cpu_usage_ns, api.usage(light).cpu_usage_ns
    return cpu, (h1 - h0) / max(l1 - l0, 1)


DIRECT_WRITE_MIB = 12


def start_direct_writer(containers, tmp_path, limit: int):
    """A container writing 12 MiB with O_DIRECT to ``tmp_path``'s disk under --device-write-bps
    DISK:limit; (the container, the disk)."""
    disk = devices.device_node(*devices.device_of_path(str(tmp_path)))
    c = containers(("dd", "if=/dev/zero", "of=/data/direct.bin", "bs=1M", f"count={DIRECT_WRITE_MIB}",
                    "oflag=direct"),
                   Resources(device_write_bps=(ThrottleDevice(disk, limit),)),
                   mounts=(MountSpec(destination="/data", source=str(tmp_path)),))
    return c, disk


def timed_write(c, timeout_s: float) -> tuple[int, float, float]:
    """Wait for the direct writer: (exit code, seconds from now to its exit, bytes per second)."""
    t0 = time.monotonic()
    code = api.wait(c, timeout_s=timeout_s)
    elapsed = time.monotonic() - t0
    return code, elapsed, DIRECT_WRITE_MIB * MIB / elapsed


def test_container_memory_hog_is_oom_killed(containers):
    check_memory_hog_is_oom_killed(containers, "container", timeout_s=60)


def test_container_under_half_a_cpu(containers):
    # top CPU weight: neighbours on this shared host must not push it below the quota under test
    c = containers(BUSY, Resources(cpu_quota_us=Resources.quota_for_cpus(0.5), cpu_shares=MAX_SHARES))
    time.sleep(0.3)
    fractions = cpu_fractions(c, WINDOWS, 0.45, 0.55)  # see test_enforcement_cgroups
    print(f"\ncontainer --cpus 0.5: {', '.join(f'{f:.3f}' for f in fractions)} CPU per 2 s window")
    assert max(fractions) <= 0.55
    assert 0.45 <= fractions[-1] <= 0.55, "never got its half CPU: is the host saturated by other work?"


def test_container_pids_limit_contains_a_fork_bomb(containers):
    c = containers(("sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 30"), Resources(pids_max=20))
    peak = pids_peak(c, 1.5, every_s=0.02)
    host_ok = os.system("/bin/true") == 0
    api.kill(c, signal.SIGKILL)  # PID 1 dies: the kernel kills the rest of its pid namespace
    code = api.wait(c, timeout_s=30)
    print(f"\ncontainer --pids-limit 20: highest pids.current {peak}, exit {code}, host fork ok {host_ok}")
    assert 1 < peak <= 20 and host_ok and code == 137


def test_container_shares_split_one_cpu(containers):
    cpu, ratio = shares_ratio_on_one_cpu(containers, settle_s=0.3, window_s=3.0)
    print(f"\ncontainers --cpu-shares 1024:512 --cpuset-cpus {cpu}: ratio {ratio:.2f}")
    assert 1.6 <= ratio <= 2.5


def test_container_write_bps_throttle(containers, tmp_path):
    limit = 4 * MIB
    c, disk = start_direct_writer(containers, tmp_path, limit)
    code, elapsed, rate = timed_write(c, timeout_s=60)
    written = c.final_usage.io_write_bytes
    print(f"\ncontainer --device-write-bps {disk}:4m: 12 MiB O_DIRECT in {elapsed:.2f} s = {rate / MIB:.2f} MiB/s, "
          f"cgroup counted {written / MIB:.2f} MiB")
    assert code == 0
    assert 0.7 * limit <= rate <= 1.3 * limit and written >= 12 * MIB


def test_container_joins_its_cgroup_in_every_hierarchy_before_exec(containers):
    """The child moves itself into its cgroup (LaunchPlan.cgroup_join) before it execs: the workload is
    in ``/isobench-<id>`` in every hierarchy the cgroup spans, and the harness is in none of them."""
    c = containers(("sleep", "30"), Resources(pids_max=50))
    member = {}
    for line in open(f"/proc/{c.pid}/cgroup").read().splitlines():
        _, ctls, path = line.split(":", 2)
        for ctl in ctls.split(","):
            member[ctl] = path
    cg = open_cgroup(c.host_name)
    for ctl in cg.paths:
        assert member.get(ctl) == f"/{c.host_name}", (ctl, member.get(ctl))
    assert str(os.getpid()) not in {p for d in set(cg.paths.values())
                                     for p in (d / "cgroup.procs").read_text().split()}
    assert c.timings_ns["cgroup"] <= c.timings_ns["cgroup_joined"] <= c.timings_ns["exec"]
