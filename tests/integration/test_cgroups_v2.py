"""The v2 driver, the cgroup namespace and container limits on a real unified hierarchy.

This project's CI host is hybrid (controllers on v1), so on it these tests skip; ``make test`` runs
them inside the vm-container guest, whose init mounts a pure cgroup v2 hierarchy
(tests/integration/test_cgroups_v2_guest.py boots it and fails if any of them fails or skips). Elsewhere
the v2 rules are covered by the fake-tree unit tests (tests/unit/test_cgroups_fake_tree.py)."""

from __future__ import annotations

import time

import pytest

from runtime.cgroups import cgroup_namespace_supported, detect, open_cgroup, rules
from runtime.spec import MountSpec, Resources
from tests.integration.test_cgroups_support import BUSY_LOOP, cpu_fraction, made  # noqa: F401
from tests.integration.test_enforcement_containers import (  # noqa: F401 (containers: a fixture)
    BUSY, check_memory_hog_is_oom_killed, containers, cpu_fractions, pids_peak, shares_ratio_on_one_cpu,
    start_direct_writer, timed_write)

api = pytest.importorskip("runtime.api")
pytestmark = pytest.mark.requires("root", "cgroup_v2", "busybox")
MIB = 1 << 20


@pytest.fixture(autouse=True)
def _pure_v2():
    if detect().driver != "v2":
        pytest.skip(f"host layout is {detect().version}: its v1 controllers are driven by the v1 driver")


def test_v2_limits_reach_the_kernel(leak_check, made):
    cg = made.cgroup(Resources(cpu_quota_us=50_000, cpu_shares=1024, memory_bytes=64 * MIB, pids_max=20))
    d = cg.paths["unified"]
    assert (d / "cpu.max").read_text().split() == ["50000", "100000"]
    assert (d / "cpu.weight").read_text().strip() == "39"
    assert (d / "memory.max").read_text().strip() == str(64 * MIB)
    assert (d / "pids.max").read_text().strip() == "20"
    assert cgroup_namespace_supported()


def test_v2_cpu_quota_and_oom(leak_check, made):
    cg = made.cgroup(Resources(cpu_quota_us=50_000))
    made.spawn(cg, BUSY_LOOP)
    time.sleep(0.3)
    assert 0.4 <= cpu_fraction(cg, 2.0) <= 0.55
    hog = made.cgroup(Resources(memory_bytes=32 * MIB, memory_swap_bytes=32 * MIB))
    proc = made.spawn(hog, ["python3", "-c", "b = []\nwhile True: b.append(b'x' * (1 << 20))"])
    proc.wait(timeout=60)
    assert hog.usage().oom_kill_count >= 1


def _unified(c):
    return open_cgroup(c.host_name).paths["unified"]


def test_v2_container_in_its_own_cgroup_namespace(containers, tmp_path):
    """--memory/--cpus/--pids-limit/--cpu-shares land in memory.max, cpu.max, pids.max and cpu.weight of
    the container's cgroup, and the container sees that cgroup as its root (cgroup namespace)."""
    c = containers(("sh", "-c", "cat /proc/self/cgroup > /data/cgroup; sleep 30"),
                   Resources(memory_bytes=48 * MIB, memory_swap_bytes=48 * MIB, cpu_quota_us=25_000,
                             cpu_shares=512, pids_max=16),
                   mounts=(MountSpec(destination="/data", source=str(tmp_path)),))
    d = _unified(c)
    deadline = time.monotonic() + 30
    while not (tmp_path / "cgroup").exists() or not (tmp_path / "cgroup").read_text().endswith("\n"):
        assert time.monotonic() < deadline, "the container did not write /data/cgroup within 30 s"
        time.sleep(0.05)
    seen = (tmp_path / "cgroup").read_text().strip()
    host_view = open(f"/proc/{c.pid}/cgroup").read().strip()
    print(f"\nv2 container: in the container {seen!r}, from the host {host_view!r}")
    assert seen == "0::/" and host_view == f"0::/{c.host_name}"
    assert (d / "memory.max").read_text().strip() == str(48 * MIB)
    assert (d / "memory.swap.max").read_text().strip() == "0"
    assert (d / "cpu.max").read_text().split() == ["25000", "100000"]
    assert (d / "cpu.weight").read_text().strip() == str(rules.shares_to_weight(512)) == "20"
    assert (d / "pids.max").read_text().strip() == "16"


def test_v2_container_memory_hog_is_oom_killed(containers):
    check_memory_hog_is_oom_killed(containers, "v2 container", timeout_s=120)


def test_v2_container_under_half_a_cpu(containers):
    c = containers(BUSY, Resources(cpu_quota_us=Resources.quota_for_cpus(0.5), cpu_shares=rules.MAX_SHARES))
    time.sleep(0.5)
    fractions = cpu_fractions(c, 3, 0.4, 0.55)
    print(f"\nv2 container --cpus 0.5 (cpu.max): {', '.join(f'{f:.3f}' for f in fractions)} CPU per 2 s window")
    assert max(fractions) <= 0.55 and 0.4 <= fractions[-1]


def test_v2_container_pids_limit_contains_a_fork_bomb(containers):
    c = containers(("sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 30"), Resources(pids_max=20))
    peak = pids_peak(c, 3.0, every_s=0.05)
    events = (_unified(c) / "pids.events").read_text()
    print(f"\nv2 container --pids-limit 20: highest pids.current {peak}, pids.events {events.split()}")
    assert 1 < peak <= 20 and int(events.split()[1]) > 0


def test_v2_container_weights_split_one_cpu(containers):
    """--cpu-shares 1024 vs 512 become cpu.weight 39 vs 20; two busy loops on one CPU split it ~2:1."""
    cpu, ratio = shares_ratio_on_one_cpu(containers, settle_s=0.5, window_s=4.0)
    print(f"\nv2 containers cpu.weight 39:20 on CPU {cpu}: CPU time ratio {ratio:.2f}")
    assert 1.5 <= ratio <= 2.6


def test_v2_container_io_max_throttles_writes(containers, tmp_path):
    limit = 4 * MIB
    c, disk = start_direct_writer(containers, tmp_path, limit)
    io_max = (_unified(c) / "io.max").read_text().strip()
    code, elapsed, rate = timed_write(c, timeout_s=120)
    print(f"\nv2 container --device-write-bps {disk}:4m: io.max {io_max!r}; 12 MiB O_DIRECT in {elapsed:.2f} s "
          f"= {rate / MIB:.2f} MiB/s, io.stat counted {c.final_usage.io_write_bytes / MIB:.2f} MiB")
    assert code == 0 and f"wbps={limit}" in io_max
    assert 0.6 * limit <= rate <= 1.3 * limit and c.final_usage.io_write_bytes >= 12 * MIB
