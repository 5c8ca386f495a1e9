"""Pure parts of the vm-container environment: the agent's wire format, the guest bridge subnet, the
guest root's module selection and key, the enforcement table's "held by" column, and the parser of the
guest pytest summary."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bench.environments.base import Job, Limits, Outcome, Usage, Volume
from bench.environments import vm_container_guest as wire
from bench.workloads.enforcement import held_by
from core.errors import BenchError
from tests.integration.test_cgroups_v2_guest import summary_counts
from vmharness import guestroot
from vmharness.artifacts import GuestKernel


def test_job_round_trips_through_the_wire():
    job = Job(image="sha256:abc", argv=("sh", "-c", "echo {port}"), env=("A=1",), port=80, timeout_s=12.5,
              limits=Limits(cpus=0.5, cpu_shares=512, memory_bytes=64 << 20, pids_max=32, write_bps=1 << 20),
              ready_marker="READY", cap_drop=("NET_RAW",))
    assert wire.job_from_wire(wire.job_to_wire(job)) == job


def test_a_volume_does_not_cross_into_the_guest():
    with pytest.raises(BenchError, match="volumes are not supported"):
        wire.job_to_wire(Job(image="x", argv=("true",), volume=Volume(Path("/tmp/v"))))


def test_outcome_and_usage_round_trip():
    out = Outcome(exit_code=137, output="x\n", wall_s=0.25, phases={"created": 0.01, "exited": 0.2},
                  extra={"memory_peak_bytes": 1024, "oom_killed": True, "obj": object()})
    back = wire.outcome_from_wire(wire.outcome_to_wire(out))
    assert (back.exit_code, back.output, back.wall_s, back.phases) == (137, "x\n", 0.25, out.phases)
    assert back.extra == {"memory_peak_bytes": 1024, "oom_killed": True}   # only JSON scalars cross
    u = Usage(pss_bytes=5, cpu_s=1.5, memory_peak_bytes=None, detail="d")
    assert wire.usage_from_wire(wire.usage_to_wire(u)) == u


def test_guest_subnet_avoids_the_vms_own_network():
    nets = [ipaddress.IPv4Network("10.88.0.0/16"), ipaddress.IPv4Network("127.0.0.0/8")]
    assert wire.pick_subnet(nets) == "10.89.0.0/16"
    assert wire.pick_subnet([ipaddress.IPv4Network("10.89.3.0/24")]) == "10.90.0.0/16"
    with pytest.raises(BenchError, match="no guest bridge subnet"):
        wire.pick_subnet([ipaddress.IPv4Network("0.0.0.0/0")])


def test_guest_root_carries_runtime_modules_with_their_dependencies(tmp_path):
    mods = tmp_path / "6.1.0-x"
    mods.mkdir()
    (mods / "modules.dep").write_text(
        "kernel/fs/overlayfs/overlay.ko:\n"
        "kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_tables.ko kernel/lib/libcrc32c.ko\n"
        "kernel/net/netfilter/nf_tables.ko: kernel/lib/libcrc32c.ko\n"
        "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko\n"
        "kernel/drivers/gpu/drm/huge.ko:\n")
    files = guestroot.module_files(GuestKernel("6.1.0-x", tmp_path / "vmlinuz", mods))
    assert "kernel/fs/overlayfs/overlay.ko" in files and "kernel/net/802/stp.ko" in files
    assert "kernel/lib/libcrc32c.ko" in files and "kernel/drivers/gpu/drm/huge.ko" not in files


def test_guest_root_key_changes_with_every_input():
    class Rec:
        def __init__(self, name, digest):
            self.name, self.manifest_digest = name, digest

    k = GuestKernel("6.1", Path("/boot/v"), Path("/lib/modules/6.1"))
    base = guestroot.GuestRootSpec("sha256:a", Path("/r"), (Rec("b", "sha256:1"),), k)
    keys = {base.key,
            guestroot.GuestRootSpec("sha256:b", Path("/r"), (Rec("b", "sha256:1"),), k).key,
            guestroot.GuestRootSpec("sha256:a", Path("/r"), (Rec("b", "sha256:2"),), k).key,
            guestroot.GuestRootSpec("sha256:a", Path("/r"), (), k).key,
            guestroot.GuestRootSpec("sha256:a", Path("/r"), (Rec("b", "sha256:1"),),
                                    GuestKernel("6.2", Path("/boot/v"), Path("/lib/modules/6.2"))).key}
    assert len(keys) == 5 and base.key.startswith("sha256:")


def test_held_by_names_the_cgroup_file_per_driver():
    assert held_by("vm-container", "cpu_shares", "v1") == "cgroup v2 in the guest: cpu.weight"
    assert held_by("container", "cpu_shares", "v1") == "cgroup v1: cpu.shares"
    assert held_by("runc", "blkio_write", "v2") == "cgroup v2: io.max"
    assert held_by("vm", "cpus", "v1") == ""


@pytest.mark.parametrize("line, want", [
    ("1 failed, 7 passed in 25.18s", {"failed": 1, "passed": 7}),
    ("========== 8 passed in 20.01s ==========", {"passed": 8}),
    ("3 passed, 2 skipped, 1 error in 4.00s", {"passed": 3, "skipped": 2, "error": 1}),
    ("no tests ran in 0.01s", {}),
])
def test_guest_pytest_summary_is_parsed(line, want):
    assert summary_counts(f"collected\n....\n{line}\n") == want


def test_only_the_newest_composed_root_is_kept(tmp_path):
    roots = tmp_path / "guest-roots"
    for name in ("old1", "old2", "new", ".tmp-root-x"):
        (roots / name / "etc").mkdir(parents=True)
    removed = guestroot.prune_others(roots / "new")
    assert sorted(p.name for p in removed) == ["old1", "old2"]
    assert sorted(p.name for p in roots.iterdir()) == [".tmp-root-x", "new"]


def test_windows_macos_row_quotes_vm_container_figures_labelled_tcg():
    import pandas as pd

    from bench.report.tables import platform_table, vm_container_figures

    cols = ["benchmark", "metric", "environment", "unit", "median", "ratio_native"]
    summary = pd.DataFrame([["startup", "create_to_exit_s", "vm-container", "s", 0.125, 28.6],
                            ["startup", "cold_create_to_exit_s", "vm-container", "s", 10.6, float("nan")],
                            ["startup", "create_to_exit_s", "native", "s", 0.004, 1.0]], columns=cols)
    text = vm_container_figures(summary, "tcg")
    assert text.startswith("measured here [vm-container, TCG: emulated VM]")
    assert "start-up, VM already up 125 ms (×28.6 native)" in text and "boot included) 10.6 s" in text
    assert vm_container_figures(summary[summary["environment"] == "native"], "tcg").startswith("not measured")
    rows = platform_table({"platform": {"vm_container_execution": "inside a microvm"}}, {"accelerator": "tcg"}, summary)
    row = rows[rows["platform"].str.contains("as run here")].iloc[0]
    assert row["VMs"] == "inside a microvm" and "TCG" in row["containers (course notes)"]


# ------------------------------------------------------------------------ runc in the guest

def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_flat_rootfs_in_the_guest_shares_the_topmost_layers_inodes(tmp_path):
    low = _tree(tmp_path / "l1", {"bin/sh": "old sh", "etc/os": "debian", "only/low": "low"})
    high = _tree(tmp_path / "l2", {"bin/sh": "new sh!", "www/index.html": "ok"})
    flat = _tree(tmp_path / "flat", {"bin/sh": "new sh!", "etc/os": "debian", "only/low": "low",
                                     "www/index.html": "ok", "made/by/flatten": "x"})
    dest = tmp_path / "guest" / "flat" / "abc"
    relinked = guestroot.link_flat_rootfs(flat, [low, high], dest)
    ino = lambda p: p.stat().st_ino  # noqa: E731
    assert ino(dest / "bin/sh") == ino(high / "bin/sh")           # the upper layer's copy, not the lower's
    assert ino(dest / "etc/os") == ino(low / "etc/os") and ino(dest / "only/low") == ino(low / "only/low")
    assert ino(dest / "www/index.html") == ino(high / "www/index.html")
    assert ino(dest / "made/by/flatten") == ino(flat / "made/by/flatten")  # no layer holds it: the flat's inode
    assert relinked == 4
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == \
        {"bin/sh", "etc/os", "only/low", "www/index.html", "made/by/flatten"}


def test_flat_rootfs_keeps_its_own_file_where_the_topmost_layer_differs(tmp_path):
    low = _tree(tmp_path / "l1", {"etc/conf": "same-size", "etc/mode": "m"})
    high = _tree(tmp_path / "l2", {"etc/conf": "different-size-here"})
    (low / "etc/mode").chmod(0o600)
    flat = _tree(tmp_path / "flat", {"etc/conf": "same-size", "etc/mode": "m"})
    (flat / "etc/mode").chmod(0o644)
    dest = tmp_path / "out"
    assert guestroot.link_flat_rootfs(flat, [low, high], dest) == 0
    # the topmost holder (high) disagrees: never a lower layer's file; a mode mismatch keeps the flat's
    assert (dest / "etc/conf").stat().st_ino == (flat / "etc/conf").stat().st_ino
    assert (dest / "etc/mode").stat().st_ino == (flat / "etc/mode").stat().st_ino


def test_flat_rootfs_never_follows_a_layers_symlink_out_of_the_layer(tmp_path):
    outside = _tree(tmp_path / "outside", {"f": "secret"})
    layer = tmp_path / "l1"
    layer.mkdir()
    (layer / "d").symlink_to(outside)
    flat = _tree(tmp_path / "flat", {"d/f": "secret"})
    dest = tmp_path / "out"
    assert guestroot.link_flat_rootfs(flat, [layer], dest) == 0
    assert (dest / "d/f").stat().st_ino == (flat / "d/f").stat().st_ino


def test_held_by_says_v2_in_the_guest_for_runc_too():
    assert held_by("vm-container-runc", "cpus", "v1") == "cgroup v2 in the guest: cpu.max"
    assert held_by("vm-container-runc", "blkio_write", "v1") == "cgroup v2 in the guest: io.max"


def test_running_across_systems_has_a_runc_row_labelled_tcg():
    import pandas as pd

    from bench.report.tables import platform_table, vm_container_figures

    cols = ["benchmark", "metric", "environment", "unit", "median", "ratio_native"]
    summary = pd.DataFrame([["startup", "create_to_exit_s", "vm-container-runc", "s", 0.4, 90.0],
                            ["startup", "create_to_exit_s", "native", "s", 0.004, 1.0]], columns=cols)
    text = vm_container_figures(summary, "tcg", "vm-container-runc")
    assert text.startswith("measured here [vm-container-runc, TCG: emulated VM]") and "400 ms" in text
    facts = {"platform": {"vm_container_runc_execution": "runc inside a microvm"}}
    rows = platform_table(facts, {"accelerator": "tcg",
                                  "execution": {"vm-container-runc": {"execution": "runc inside a microvm"}}}, summary)
    row = rows[rows["platform"] == "Windows/macOS, as run here: runc in a Linux VM"].iloc[0]
    assert row["VMs"] == "runc inside a microvm" and "TCG" in row["containers (course notes)"]
    own = rows[rows["platform"] == "this host: vm-container-runc"].iloc[0]
    assert own["VMs"] == "runc inside a microvm"
    # no runc figures measured: no runc row
    no_runc = platform_table(facts, {"accelerator": "tcg"}, summary[summary["environment"] == "native"])
    assert not no_runc["platform"].str.contains("runc in a Linux VM").any()


class _FakeGuestVM:
    booted: list = []

    def __init__(self, paths, image, *, vcpus, **kw):
        self.vm = self
        self.closed = False
        _FakeGuestVM.booted.append(self)

    def alive(self):
        return not self.closed

    def wait_agent(self):
        return 1.5

    def call(self, req, timeout_s=60.0):
        return {"ok": True, "cgroup": "v2"}

    def close(self):
        self.closed = True
        self.vm = None


def test_both_vm_container_columns_share_one_guest_the_last_release_destroys_it(monkeypatch):
    from bench.environments import vm_container as vmc
    from core.paths import HostPaths

    _FakeGuestVM.booted = []
    monkeypatch.setattr(vmc, "GuestVM", _FakeGuestVM)
    monkeypatch.setattr(vmc, "_SHARED", {})
    paths, image = HostPaths(root=Path("/nonexistent/root")), type("Img", (), {"digest": "sha256:g"})()
    a = vmc.acquire_guest(paths, image, 2)
    b = vmc.acquire_guest(paths, image, 2)
    assert a is b and len(_FakeGuestVM.booted) == 1 and a.refs == 2 and a.info == {"ok": True, "cgroup": "v2"}
    vmc.release_guest(a)
    assert not a.guest.closed
    vmc.release_guest(b)
    assert a.guest.closed and vmc._SHARED == {}
    c = vmc.acquire_guest(paths, image, 2)            # a new run boots a new guest
    assert c is not a and len(_FakeGuestVM.booted) == 2
    c.guest.close()                                   # a guest that died is replaced, not handed out
    d = vmc.acquire_guest(paths, image, 2)
    assert d is not c and len(_FakeGuestVM.booted) == 3


def test_runc_parent_carries_shares_as_v1_shares_or_v2_weight(tmp_path, monkeypatch):
    from bench.environments import runc

    written = {}
    monkeypatch.setattr(runc, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(runc.syscalls, "write_file", lambda path, data: written.__setitem__(path, data))
    (tmp_path / "cpu").mkdir()
    runc.parent_shares("isobench-a", 512)
    assert written == {str(tmp_path / "cpu" / "isobench-a" / "cpu.shares"): "512"}
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")   # a pure v2 hierarchy (the guest)
    runc.parent_shares("isobench-b", 1024)
    assert written[str(tmp_path / "isobench-b" / "cpu.weight")] == "39"


def test_a_runtime_cannot_take_the_name_of_a_vm_container_column():
    from bench.environments.ociruntimes import parse_runtime
    from core.errors import UsageError

    with pytest.raises(UsageError, match="is the name of another environment"):
        parse_runtime("vm-container-runc=/bin/true")
