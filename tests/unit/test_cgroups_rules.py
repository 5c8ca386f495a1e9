"""Pure cgroup value rules: conversions, validation, per-controller settings, parsers, layout detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cgroups import devices, layout, rules, v1, v2
from runtime.cgroups.rules import HostFacts
from core.errors import CgroupError
from runtime.spec import Resources, ThrottleDevice

FACTS = HostFacts(host_cpus=frozenset({0, 1}), parent_mems="0",
                  resolve_device=lambda path: {"/dev/vda": (254, 0), "/dev/vda1": (254, 0),
                                               "/dev/sdb": (8, 16)}[path])


@pytest.mark.parametrize("shares,weight", [(2, 1), (512, 20), (1024, 39), (262144, 10000)])
def test_shares_to_weight_matches_runc(shares, weight):
    assert rules.shares_to_weight(shares) == weight


@pytest.mark.parametrize("text,cpus,canonical", [("0", {0}, "0"), ("0-2,5", {0, 1, 2, 5}, "0-2,5"),
                                                 ("1,0", {0, 1}, "0-1"), (" 3 , 4-6 ", {3, 4, 5, 6}, "3-6")])
def test_cpu_list_round_trip(text, cpus, canonical):
    assert rules.parse_cpu_list(text) == cpus
    assert rules.format_cpu_list(frozenset(cpus)) == canonical


@pytest.mark.parametrize("bad", ["a", "1-", "3-1", "-1", ""])
def test_cpu_list_rejects_garbage(bad):
    with pytest.raises(CgroupError, match="cpuset-cpus"):
        rules.parse_cpu_list(bad)


def test_cpus_half_is_quota_50000_of_100000():
    r = Resources(cpu_quota_us=Resources.quota_for_cpus(0.5))
    assert v1.cpu(r, FACTS) == [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000")]
    assert v2.cpu(r, FACTS) == [("cpu.max", "50000 100000")]


def test_shares_v1_and_weight_v2():
    r = Resources(cpu_shares=512)
    assert v1.cpu(r, FACTS) == [("cpu.shares", "512")]
    assert v2.cpu(r, FACTS) == [("cpu.weight", "20")]


def test_unset_resources_write_nothing():
    r = Resources()
    for rule in list(v1.SETTINGS.values()) + list(v2.SETTINGS.values()):
        assert rule(r, FACTS) == []


def test_memory_and_swap():
    mib = 1 << 20
    r = Resources(memory_bytes=32 * mib, memory_swap_bytes=64 * mib)
    assert v1.memory(r, FACTS) == [("memory.limit_in_bytes", str(32 * mib)),
                                   ("memory.memsw.limit_in_bytes", str(64 * mib))]
    assert v2.memory(r, FACTS) == [("memory.max", str(32 * mib)), ("memory.swap.max", str(32 * mib))]
    unlimited = Resources(memory_bytes=32 * mib, memory_swap_bytes=-1)
    assert v2.memory(unlimited, FACTS)[1] == ("memory.swap.max", "max")
    assert v1.memory(unlimited, FACTS)[1] == ("memory.memsw.limit_in_bytes", "-1")


def test_swap_without_memsw_accounting_explains():
    r = Resources(memory_bytes=1 << 25, memory_swap_bytes=1 << 26)
    with pytest.raises(CgroupError, match=r"memory\.memsw\.limit_in_bytes is missing.*swapaccount=1"):
        v1.memory(r, HostFacts(memsw_available=False))


def test_pids_and_cpuset():
    r = Resources(pids_max=20, cpuset_cpus="1,0")
    assert v1.pids(r, FACTS) == v2.pids(r, FACTS) == [("pids.max", "20")]
    assert v1.cpuset(r, FACTS) == [("cpuset.cpus", "0-1"), ("cpuset.mems", "0")]
    assert v2.cpuset(r, FACTS) == [("cpuset.cpus", "0-1")]


def test_blkio_v1_lines_and_v2_io_max_combined_per_disk():
    r = Resources(device_read_bps=(ThrottleDevice("/dev/vda1", 1 << 20),),
                  device_write_bps=(ThrottleDevice("/dev/vda", 2 << 20), ThrottleDevice("/dev/sdb", 4096)))
    assert v1.blkio(r, FACTS) == [("blkio.throttle.read_bps_device", "254:0 1048576"),
                                  ("blkio.throttle.write_bps_device", "254:0 2097152"),
                                  ("blkio.throttle.write_bps_device", "8:16 4096")]
    assert v2.io(r, FACTS) == [("io.max", "254:0 rbps=1048576 wbps=2097152"), ("io.max", "8:16 wbps=4096")]


def test_needed_controllers():
    assert v1.needed_controllers(Resources()) == ("cpu", "cpuacct", "memory", "pids")
    r = Resources(cpuset_cpus="0", device_write_bps=(ThrottleDevice("/dev/vda", 1),))
    assert v1.needed_controllers(r)[-2:] == ("cpuset", "blkio")
    assert v2.needed_controllers(r) == ("cpu", "memory", "pids", "cpuset", "io")


def test_subtree_control_write_only_missing():
    assert v2.subtree_control_write(("cpu", "memory", "pids"), {"cpu"}) == "+memory +pids"
    assert v2.subtree_control_write(("cpu",), {"cpu", "io"}) is None


@pytest.mark.parametrize("resources,message", [
    (Resources(cpu_quota_us=500), "below the kernel minimum"),
    (Resources(cpu_quota_us=300_000), "--cpus 3 exceeds the 2 CPUs"),
    (Resources(cpu_quota_us=50_000, cpu_period_us=10), "CPU period 10 us"),
    (Resources(cpu_shares=1), "--cpu-shares 1 is outside"),
    (Resources(memory_bytes=0), "--memory 0"),
    (Resources(memory_swap_bytes=1 << 30), "needs --memory"),
    (Resources(memory_bytes=1 << 30, memory_swap_bytes=1 << 20), "smaller than --memory"),
    (Resources(pids_max=0), "--pids-limit 0"),
    (Resources(cpuset_cpus="0-3"), "CPU 2-3 is not among the host's CPUs 0-1"),
    (Resources(device_write_bps=(ThrottleDevice("/dev/vda", 0),)), "--device-write-bps /dev/vda:0"),
])
def test_validation_names_the_value(resources, message):
    with pytest.raises(CgroupError, match=message):
        rules.validate(resources, FACTS)


def test_validation_accepts_sane_limits():
    rules.validate(Resources(cpu_quota_us=50_000, cpu_shares=1024, memory_bytes=1 << 25, memory_swap_bytes=-1,
                             pids_max=20, cpuset_cpus="1"), FACTS)


def test_partition_resolves_to_whole_disk(tmp_path):
    sysfs = tmp_path / "sys"
    disk = sysfs / "devices" / "virtual" / "block" / "vda"
    (disk / "vda1").mkdir(parents=True)
    (disk / "dev").write_text("254:0\n")
    (disk / "vda1" / "dev").write_text("254:1\n")
    (disk / "vda1" / "partition").write_text("1\n")
    links = sysfs / "dev" / "block"
    links.mkdir(parents=True)
    (links / "254:0").symlink_to(disk)
    (links / "254:1").symlink_to(disk / "vda1")
    assert devices.whole_disk(254, 1, sysfs) == (254, 0)
    assert devices.whole_disk(254, 0, sysfs) == (254, 0)


def test_non_block_device_is_rejected(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(CgroupError, match="is not a block device"):
        devices.block_device_number(str(f))
    with pytest.raises(CgroupError, match="No such file"):
        devices.block_device_number(str(tmp_path / "missing"))


def test_usage_parsers():
    assert v1.parse_io_service_bytes("254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 1\n254:0 Total 12288\n"
                                     "8:0 Read 1\nTotal 12289\n") == (4097, 8192)
    assert v1.parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")["oom_kill"] == 3
    assert v2.parse_io_stat("254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2\n") \
        == (11, 22)
    assert v2.parse_flat_keyed("usage_usec 1500\nuser_usec 1000\n")["usage_usec"] == 1500
    assert v2.parse_int("max\n") == 0 and v1.parse_int("42\n") == 42


HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 0:40 / /mnt/other rw,relatime - cgroup cgroup rw,blkio
"""


def test_detect_hybrid_from_mountinfo():
    lay = layout.detect_uncached(Path("/sys/fs/cgroup"), HYBRID_MOUNTINFO)
    assert lay.version == "hybrid" and lay.driver == "v1"
    assert lay.v1["cpu"] == lay.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert "blkio" not in lay.v1 and "systemd" not in lay.v1  # outside the root / not a controller
    assert lay.unified == Path("/sys/fs/cgroup/unified")


def test_detect_pure_v1_and_pure_v2(tmp_path):
    v1_only = "\n".join(ln for ln in HYBRID_MOUNTINFO.splitlines() if "cgroup2" not in ln)
    assert layout.detect_uncached(Path("/sys/fs/cgroup"), v1_only).version == "v1"
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    lay = layout.detect_uncached(tmp_path, f"30 23 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    assert lay.version == "v2" and lay.unified == tmp_path and lay.has("io") and not lay.has("blkio")


def test_detect_nothing_mounted_is_an_error(tmp_path):
    with pytest.raises(CgroupError, match="no cgroup hierarchy found"):
        layout.detect_uncached(tmp_path, "")


def test_cgroup_namespace_only_on_pure_v2(tmp_path):
    from runtime.cgroups import cgroup_namespace_supported

    assert not cgroup_namespace_supported(layout.detect_uncached(Path("/sys/fs/cgroup"), HYBRID_MOUNTINFO))
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert cgroup_namespace_supported(layout.detect_uncached(tmp_path, ""))
