"""cgroup enforcement, measured on this host's real kernel with plain processes the tests fork:
memory OOM kill at the limit, CPU quota, pids limit against a fork bomb, CPU shares split on one CPU,
block-I/O write throttle. Each test prints what it measured (run with ``-s`` to see the figures)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from runtime.cgroups import devices
from runtime.cgroups.rules import MAX_SHARES
from runtime.spec import Resources, ThrottleDevice
from tests.integration.test_cgroups_support import BUSY_LOOP, cpu_fraction, made  # noqa: F401 (fixture)

pytestmark = pytest.mark.requires("root", "cgroup_v1")
MIB = 1 << 20
WINDOWS = 5  # 2 s CPU windows tried before the lower bound fails (shared, noisy host)

MEMORY_HOG = [sys.executable, "-c",
              "chunks = []\nwhile True:\n    chunks.append(b'x' * (1 << 20))  # bytes(*) writes every page"]


def test_memory_hog_is_oom_killed_at_the_limit(leak_check, made):
    limit = 32 * MIB
    cg = made.cgroup(Resources(memory_bytes=limit, memory_swap_bytes=limit))  # no swap escape either
    proc = made.spawn(cg, MEMORY_HOG)
    rc = proc.wait(timeout=60)
    usage = cg.usage()
    print(f"\nOOM: exit {rc}, oom_kill={usage.oom_kill_count}, peak={usage.memory_peak_bytes / MIB:.2f} MiB "
          f"(limit 32 MiB)")
    assert rc == -signal.SIGKILL
    assert usage.oom_kill_count >= 1
    assert 0.8 * limit <= usage.memory_peak_bytes <= limit + 256 * 1024


def test_busy_loop_under_half_a_cpu_uses_half_a_cpu(leak_check, made):
    # the quota is the ceiling under test; the top CPU weight keeps other work on this shared host from
    # pushing the loop *below* it, so the measured fraction is the quota's doing, not the neighbours'
    cg = made.cgroup(Resources(cpu_quota_us=Resources.quota_for_cpus(0.5), cpu_shares=MAX_SHARES))
    made.spawn(cg, BUSY_LOOP)
    time.sleep(0.3)  # past interpreter start-up
    # the ceiling must hold in every window; the lower bound may need a second window when the host is busy
    fractions = []
    for _ in range(WINDOWS):
        fractions.append(cpu_fraction(cg, 2.0))
        if 0.45 <= fractions[-1] <= 0.55:
            break
    throttled = dict(line.split() for line in (cg.paths["cpu"] / "cpu.stat").read_text().splitlines())
    print(f"\n--cpus 0.5: used {', '.join(f'{f:.3f}' for f in fractions)} CPU per 2 s window, "
          f"throttled {throttled.get('nr_throttled')} periods")
    assert max(fractions) <= 0.55
    assert 0.45 <= fractions[-1] <= 0.55, "never got its half CPU: is the host saturated by other work?"
    assert int(throttled["nr_throttled"]) > 0


def test_pids_limit_contains_a_fork_bomb(leak_check, made):
    cg = made.cgroup(Resources(pids_max=20))
    bomb = made.spawn(cg, ["/bin/busybox", "sh", "-c", "bomb() { bomb | bomb & }; bomb; wait"])
    peak_seen = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        peak_seen = max(peak_seen, cg.usage().pids_current)
        time.sleep(0.02)
    events = (cg.paths["pids"] / "pids.events").read_text().split()
    refused = int(events[events.index("max") + 1])
    host_ok = subprocess.run(["/bin/true"], timeout=10).returncode == 0  # the host can still fork
    cg.kill_all()
    left = cg.pids()
    bomb.wait(timeout=10)
    print(f"\npids.max 20: highest pids.current seen {peak_seen}, forks refused {refused}, host fork ok {host_ok}, "
          f"left after kill_all {len(left)}")
    assert peak_seen <= 20
    assert refused > 0  # the bomb really hit the limit
    assert host_ok and left == []


def test_shares_split_one_cpu_two_to_one(leak_check, made):
    cpu = max(os.sched_getaffinity(0))
    heavy = made.cgroup(Resources(cpu_shares=1024, cpuset_cpus=str(cpu)))
    light = made.cgroup(Resources(cpu_shares=512, cpuset_cpus=str(cpu)))
    made.spawn(heavy, BUSY_LOOP)
    made.spawn(light, BUSY_LOOP)
    time.sleep(0.3)
    h0, l0 = heavy.usage().cpu_usage_ns, light.usage().cpu_usage_ns
    time.sleep(3.0)
    h1, l1 = heavy.usage().cpu_usage_ns, light.usage().cpu_usage_ns
    ratio = (h1 - h0) / max(l1 - l0, 1)
    pinned = {p.pid: os.sched_getaffinity(p.pid) for p in made.procs}
    print(f"\nshares 1024:512 on CPU {cpu}: {(h1 - h0) / 1e9:.2f} s vs {(l1 - l0) / 1e9:.2f} s, ratio {ratio:.2f}")
    assert all(mask == {cpu} for mask in pinned.values())  # cpuset applied
    assert 1.6 <= ratio <= 2.5


DIRECT_READER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)  # O_DIRECT: from the disk, not the page cache
block = mmap.mmap(-1, 1 << 20)
t0 = time.monotonic()
done = 0
while (n := os.readv(fd, [block])) > 0:
    done += n
print(done, time.monotonic() - t0)
"""

DIRECT_WRITER = """
import mmap, os, sys, time
path, total = sys.argv[1], int(sys.argv[2])
block = mmap.mmap(-1, 1 << 20)  # page-aligned buffer, as O_DIRECT requires
block.write(b"z" * (1 << 20))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
t0 = time.monotonic()
done = 0
while done < total:
    done += os.write(fd, block)
os.fsync(fd)
print(done, time.monotonic() - t0)
"""


def test_write_bps_throttle_on_the_root_disk(leak_check, made, tmp_path):
    limit = 4 * MIB
    maj, mnr = devices.device_of_path(str(tmp_path))  # st_dev of the file's file system -> whole disk
    disk = devices.device_node(maj, mnr)
    cg = made.cgroup(Resources(device_write_bps=(ThrottleDevice(disk, limit),)))
    assert f"{maj}:{mnr} {limit}" in (cg.paths["blkio"] / "blkio.throttle.write_bps_device").read_text()
    total = 12 * MIB
    proc = made.spawn(cg, [sys.executable, "-c", DIRECT_WRITER, str(tmp_path / "direct.bin"), str(total)],
                      stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=60)
    written, elapsed = out.split()
    rate = int(written) / float(elapsed)
    counted = cg.usage().io_write_bytes
    print(f"\nwrite bps {disk} ({maj}:{mnr}) limit {limit / MIB:.0f} MiB/s: O_DIRECT {int(written) / MIB:.0f} MiB "
          f"in {float(elapsed):.2f} s = {rate / MIB:.2f} MiB/s; cgroup counted {counted / MIB:.2f} MiB written")
    assert proc.returncode == 0
    assert 0.7 * limit <= rate <= 1.3 * limit
    assert counted >= total


def test_read_bps_throttle_on_the_root_disk(leak_check, made, tmp_path):
    limit, total = 4 * MIB, 8 * MIB
    disk = devices.device_node(*devices.device_of_path(str(tmp_path)))
    data = tmp_path / "direct.bin"
    writer = made.cgroup(Resources())  # unthrottled: just lays the file down
    made.spawn(writer, [sys.executable, "-c", DIRECT_WRITER, str(data), str(total)]).wait(timeout=60)
    cg = made.cgroup(Resources(device_read_bps=(ThrottleDevice(disk, limit),)))
    proc = made.spawn(cg, [sys.executable, "-c", DIRECT_READER, str(data)], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=60)
    nread, elapsed = out.split()
    rate = int(nread) / float(elapsed)
    counted = cg.usage().io_read_bytes
    print(f"\nread bps {disk} limit {limit / MIB:.0f} MiB/s: O_DIRECT {int(nread) / MIB:.0f} MiB in {float(elapsed):.2f} s "
          f"= {rate / MIB:.2f} MiB/s; cgroup counted {counted / MIB:.2f} MiB read")
    assert int(nread) == total
    assert 0.7 * limit <= rate <= 1.3 * limit
    assert counted >= total
