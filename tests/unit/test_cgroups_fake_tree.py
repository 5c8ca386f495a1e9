"""The v2 (and v1) drivers against a fake cgroupfs in tmp_path: the right files get the right values,
in order; usage is parsed from the files; failures roll back. This host has no v2 controllers, so this
is where the v2 driver is exercised; the v1 driver also runs for real in tests/integration."""

from __future__ import annotations

import errno
import shutil
import signal
from pathlib import Path

import pytest

from runtime.cgroups import cgroup as cgmod
from runtime.cgroups import create_cgroup, fs, layout, open_cgroup, plan_cgroup
from core.errors import CgroupError
from runtime.spec import Resources, ThrottleDevice

V2_FILES = ("cgroup.procs", "cgroup.kill", "cpu.max", "cpu.weight", "cpu.stat", "memory.max", "memory.swap.max",
            "memory.current", "memory.events", "pids.max", "pids.current", "io.max", "io.stat", "cpuset.cpus")
V1_FILES = {
    "cpu": ("cgroup.procs", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"),
    "cpuacct": ("cgroup.procs", "cpuacct.usage"),
    "memory": ("cgroup.procs", "memory.limit_in_bytes", "memory.usage_in_bytes", "memory.max_usage_in_bytes",
               "memory.oom_control"),
    "pids": ("cgroup.procs", "pids.max", "pids.current"),
    "blkio": ("cgroup.procs", "blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
              "blkio.throttle.io_service_bytes"),
}


class FakeFs:
    """Stands in for the kernel: mkdir fills the control files, writes are recorded in order."""

    def __init__(self, files_for):
        self.files_for = files_for
        self.writes: list[tuple[str, str]] = []
        self.root: Path | None = None
        self.reject: tuple[str, int] | None = None  # (file name, errno) the "kernel" refuses

    def make_dir(self, path: Path) -> None:
        path.mkdir()
        for name in self.files_for(path):
            (path / name).write_text("")

    def remove_dir(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        shutil.rmtree(path)

    def write(self, path: Path, value: str) -> None:
        if self.reject and path.name == self.reject[0]:
            raise OSError(self.reject[1], "Invalid argument")
        self.writes.append((str(path.relative_to(self.root)), value))
        path.write_text(value)


@pytest.fixture
def v2_tree(tmp_path, monkeypatch):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    fake = FakeFs(lambda path: V2_FILES)
    fake.root = tmp_path
    for name in ("make_dir", "remove_dir", "write"):
        monkeypatch.setattr(fs, name, getattr(fake, name))
    monkeypatch.setattr(cgmod.devices, "block_device_number", lambda path: (254, 0))
    return layout.detect_uncached(tmp_path, ""), fake


@pytest.fixture
def v1_tree(tmp_path, monkeypatch):
    for ctl in V1_FILES:
        (tmp_path / ctl).mkdir()
    fake = FakeFs(lambda path: V1_FILES[path.parent.name])
    fake.root = tmp_path
    for name in ("make_dir", "remove_dir", "write"):
        monkeypatch.setattr(fs, name, getattr(fake, name))
    monkeypatch.setattr(cgmod.devices, "block_device_number", lambda path: (254, 0))
    return layout.detect_uncached(tmp_path, ""), fake


def test_v2_create_writes_values_and_enables_controllers(v2_tree):
    lay, fake = v2_tree
    assert lay.version == "v2"
    r = Resources(cpu_quota_us=50_000, cpu_shares=1024, memory_bytes=32 << 20, memory_swap_bytes=64 << 20,
                  pids_max=20, cpuset_cpus="0", device_write_bps=(ThrottleDevice("/dev/vda", 1 << 20),))
    cg = create_cgroup("isobench-abc", r, lay)
    assert cg.paths == {"unified": lay.unified / "isobench-abc"}
    assert fake.writes == [
        ("cgroup.subtree_control", "+memory +pids +cpuset +io"),
        ("isobench-abc/cpu.max", "50000 100000"),
        ("isobench-abc/cpu.weight", "39"),
        ("isobench-abc/memory.max", str(32 << 20)),
        ("isobench-abc/memory.swap.max", str(32 << 20)),
        ("isobench-abc/pids.max", "20"),
        ("isobench-abc/cpuset.cpus", "0"),
        ("isobench-abc/io.max", "254:0 wbps=1048576"),
    ]
    cg.add_pid(4242)
    assert fake.writes[-1] == ("isobench-abc/cgroup.procs", "4242")


def test_v2_usage_parsed_and_peak_tracked_without_memory_peak(v2_tree):
    lay, _ = v2_tree
    cg = create_cgroup("isobench-use", Resources(), lay)
    d = cg.paths["unified"]
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (d / "memory.current").write_text("4096\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (d / "pids.current").write_text("3\n")
    (d / "io.stat").write_text("254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n")
    u = cg.usage()
    assert (u.cpu_usage_ns, u.memory_current_bytes, u.pids_current, u.io_read_bytes, u.io_write_bytes,
            u.oom_kill_count) == (1_500_000, 4096, 3, 100, 200, 1)
    (d / "memory.current").write_text("1024\n")
    assert cg.usage().memory_peak_bytes == 4096  # no memory.peak file: the highest reading seen
    (d / "memory.peak").write_text("8192\n")
    assert cg.usage().memory_peak_bytes == 8192


def test_v2_kill_uses_cgroup_kill_and_destroy_is_idempotent(v2_tree):
    lay, fake = v2_tree
    cg = create_cgroup("isobench-k", Resources(), lay)
    cg.kill_all(signal.SIGKILL)
    assert ("isobench-k/cgroup.kill", "1") in fake.writes
    cg.destroy()
    cg.destroy()
    assert not (lay.unified / "isobench-k").exists()


def test_v2_missing_controller_names_it_and_makes_nothing(v2_tree, tmp_path):
    lay, fake = v2_tree
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    lay = layout.detect_uncached(tmp_path, "")
    with pytest.raises(CgroupError, match="cgroup controller 'io' is not available on this host"):
        create_cgroup("isobench-x", Resources(device_read_bps=(ThrottleDevice("/dev/vda", 1),)), lay)
    assert not (tmp_path / "isobench-x").exists() and fake.writes == []


def test_plan_validates_without_making_and_make_applies(v2_tree, tmp_path):
    """create() plans (bad input fails there, nothing made); start() makes it after fork."""
    lay, fake = v2_tree
    plan = plan_cgroup("isobench-p", Resources(memory_bytes=64 << 20), lay)
    assert not (lay.unified / "isobench-p").exists() and fake.writes == []
    cg = plan.make()
    assert (lay.unified / "isobench-p").is_dir()
    assert ("isobench-p/memory.max", str(64 << 20)) in fake.writes
    cg.destroy()
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    bare = layout.detect_uncached(tmp_path, "")
    with pytest.raises(CgroupError, match="cgroup controller 'io' is not available on this host"):
        plan_cgroup("isobench-q", Resources(device_read_bps=(ThrottleDevice("/dev/vda", 1),)), bare)
    assert not (tmp_path / "isobench-q").exists()


def test_rejected_value_rolls_back(v2_tree):
    lay, fake = v2_tree
    fake.reject = ("memory.max", errno.EINVAL)
    with pytest.raises(CgroupError, match=r"'memory' rejected '33554432' for memory.max \(Invalid argument\)"):
        create_cgroup("isobench-r", Resources(memory_bytes=32 << 20), lay)
    assert not (lay.unified / "isobench-r").exists()


def test_open_existing_and_missing(v2_tree):
    lay, _ = v2_tree
    create_cgroup("isobench-o", Resources(), lay)
    assert open_cgroup("isobench-o", lay).paths == {"unified": lay.unified / "isobench-o"}
    with pytest.raises(CgroupError, match="cgroup isobench-none does not exist"):
        open_cgroup("isobench-none", lay)


@pytest.mark.parametrize("bad", ["foo", "isobench-a/b", "isobench-"])
def test_names_must_carry_the_prefix(v2_tree, bad):
    lay, _ = v2_tree
    with pytest.raises(CgroupError, match="must be isobench-<id>"):
        create_cgroup(bad, Resources(), lay)


def test_v1_create_spans_hierarchies_and_reads_usage(v1_tree):
    lay, fake = v1_tree
    assert lay.version == "v1"
    r = Resources(cpu_quota_us=50_000, memory_bytes=32 << 20, pids_max=20,
                  device_read_bps=(ThrottleDevice("/dev/vda", 4096),))
    cg = create_cgroup("isobench-v1", r, lay)
    assert set(cg.paths) == {"cpu", "cpuacct", "memory", "pids", "blkio"}
    assert fake.writes == [
        ("cpu/isobench-v1/cpu.cfs_period_us", "100000"),
        ("cpu/isobench-v1/cpu.cfs_quota_us", "50000"),
        ("memory/isobench-v1/memory.limit_in_bytes", str(32 << 20)),
        ("pids/isobench-v1/pids.max", "20"),
        ("blkio/isobench-v1/blkio.throttle.read_bps_device", "254:0 4096"),
    ]
    cg.paths["cpuacct"].joinpath("cpuacct.usage").write_text("123456\n")
    cg.paths["memory"].joinpath("memory.usage_in_bytes").write_text("2048\n")
    cg.paths["memory"].joinpath("memory.max_usage_in_bytes").write_text("4096\n")
    cg.paths["memory"].joinpath("memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    cg.paths["pids"].joinpath("pids.current").write_text("5\n")
    cg.paths["blkio"].joinpath("blkio.throttle.io_service_bytes").write_text(
        "254:0 Read 10\n254:0 Write 20\n254:0 Total 30\nTotal 30\n")
    assert cg.usage() == cgmod.CgroupUsage(123456, 2048, 4096, 5, 10, 20, 2)
    cg.add_pid(77)
    assert [w for w in fake.writes if w[0].endswith("cgroup.procs")] == [
        (f"{c}/isobench-v1/cgroup.procs", "77") for c in ("cpu", "cpuacct", "memory", "pids", "blkio")]
    cg.destroy()
    assert not any((lay.v1[c] / "isobench-v1").exists() for c in V1_FILES)


def test_v1_missing_cpuset_names_the_controller(v1_tree):
    lay, fake = v1_tree
    with pytest.raises(CgroupError, match="cgroup controller 'cpuset' is not available on this host"):
        create_cgroup("isobench-cs", Resources(cpuset_cpus="0"), lay)
    assert fake.writes == [] and not (lay.v1["cpu"] / "isobench-cs").exists()


def test_v1_existing_name_is_refused_and_rolled_back(v1_tree):
    lay, _ = v1_tree
    (lay.v1["memory"] / "isobench-dup").mkdir()
    with pytest.raises(CgroupError, match="already exists"):
        create_cgroup("isobench-dup", Resources(), lay)
    assert not (lay.v1["cpu"] / "isobench-dup").exists()  # made before memory, then removed
    assert (lay.v1["memory"] / "isobench-dup").exists()   # not ours: left alone


def test_v1_co_mounted_cpu_cpuacct_share_one_dir(tmp_path, monkeypatch):
    """Older v1 hosts mount cpu and cpuacct together: one mkdir, one join, usage from the same dir."""
    for d in ("cpu,cpuacct", "memory", "pids"):
        (tmp_path / d).mkdir()
    fake = FakeFs(lambda path: ("cgroup.procs", "tasks", "cpu.shares", "cpuacct.usage", "pids.current"))
    fake.root = tmp_path
    for name in ("make_dir", "remove_dir", "write"):
        monkeypatch.setattr(fs, name, getattr(fake, name))
    lay = layout.detect_uncached(tmp_path, "")
    cg = create_cgroup("isobench-co", Resources(cpu_shares=512), lay)
    assert cg.paths["cpu"] == cg.paths["cpuacct"] == tmp_path / "cpu,cpuacct" / "isobench-co"
    cg.join_self()
    assert [w for w in fake.writes if w[0].endswith("tasks")] == [
        ("cpu,cpuacct/isobench-co/tasks", "0"), ("memory/isobench-co/tasks", "0"), ("pids/isobench-co/tasks", "0")]
    (cg.paths["cpuacct"] / "cpuacct.usage").write_text("99\n")
    assert cg.usage().cpu_usage_ns == 99


def test_plan_names_the_files_the_child_joins_by(v1_tree):
    """The container's child joins itself after the parent made the cgroup: it is handed the files in
    its launch plan, known at create. v1: ``tasks`` (no global lock for "0"), one per distinct dir."""
    lay1, _ = v1_tree
    plan = plan_cgroup("isobench-j", Resources(), lay1)
    files = plan.self_join_files()
    assert files and all(f.endswith("/isobench-j/tasks") for f in files)
    assert len(files) == len(set(plan.paths.values()))
    assert plan.make().self_join_files() == files


def test_v2_child_joins_by_cgroup_procs(v2_tree):
    lay, _ = v2_tree
    plan = plan_cgroup("isobench-k", Resources(), lay)
    assert plan.self_join_files() == (str(lay.unified / "isobench-k" / "cgroup.procs"),)


@pytest.mark.parametrize("tree", ["v1_tree", "v2_tree"])
def test_limits_written_into_a_cgroup_made_ahead_without_them(tree, request, tmp_path):
    """A spare cgroup (runtime.lifecycle.spares) is made with no limits; a container's plan with
    limits writes exactly its limit files into it, as make() would have after its mkdirs."""
    lay, fake = request.getfixturevalue(tree)
    limits = Resources(memory_bytes=64 << 20, pids_max=17, cpu_quota_us=50_000)
    spare = plan_cgroup("isobench-spare", Resources(), layout=lay).make()
    fake.writes.clear()
    plan = plan_cgroup("isobench-spare", limits, layout=lay)
    assert plan.apply_limits(spare) is spare
    adopted = list(fake.writes)
    fake.writes.clear()
    spare.destroy()
    plan.make()
    made_limits = [w for w in fake.writes if w in adopted]
    assert adopted and made_limits == adopted  # the same files and values, in the same order
