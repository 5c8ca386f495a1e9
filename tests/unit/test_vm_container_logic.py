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
