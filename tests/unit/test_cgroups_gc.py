"""gc over a fake cgroupfs: finds isobench-* cgroups in every hierarchy (also nested, as runc makes them),
removes only those whose lease owner is dead, never anything else."""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.cgroups import fs
from runtime.cgroups import gc as gcmod
from core.paths import HostPaths


def _tree(root: Path) -> None:
    for rel in ("cpu/isobench-dead", "cpu/isobench-live", "cpu/machine/qemu-1-isobench-vm.libvirt-qemu",
                "cpu/other", "memory/process_api/abc/isobench-dead/ctr", "memory/isobench-live",
                "pids/isobench-dead", "pids/unrelated"):
        (root / rel).mkdir(parents=True)
        (root / rel / "cgroup.procs").write_text("")


def test_gc_removes_dead_owner_cgroups_only(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.setattr(fs, "remove_dir", lambda p: shutil.rmtree(p))
    monkeypatch.setattr(gcmod.leases, "owner_alive", lambda name: name == "isobench-live")
    removed = gcmod.gc(HostPaths(root=tmp_path / "state", cgroup_root=tmp_path))
    assert removed == ["cgroup isobench-dead"]
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir())
    assert "cpu/isobench-dead" not in left and "pids/isobench-dead" not in left
    assert "memory/process_api/abc/isobench-dead" not in left  # nested twin (runc) found and removed
    for kept in ("cpu/isobench-live", "memory/isobench-live", "cpu/machine/qemu-1-isobench-vm.libvirt-qemu",
                 "cpu/other", "pids/unrelated", "memory/process_api/abc"):
        assert kept in left


def test_gc_name_filter(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.setattr(fs, "remove_dir", lambda p: shutil.rmtree(p))
    monkeypatch.setattr(gcmod.leases, "owner_alive", lambda name: False)
    assert gcmod.gc(HostPaths(root=tmp_path / "s", cgroup_root=tmp_path), names={"isobench-live"}) == \
        ["cgroup isobench-live"]
    assert (tmp_path / "cpu" / "isobench-dead").is_dir()
