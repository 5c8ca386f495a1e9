"""Scratch dirs of a killed command with mounts still below them (a RUN step's overlay, a tmpfs):
``core.scratch.gc`` unmounts deepest first and removes the dir; a live owner's dir is untouched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core import leases
from core import scratch
from core import syscalls
from core.paths import HostPaths

pytestmark = pytest.mark.requires("root")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_gc_unmounts_below_an_orphaned_scratch_dir_then_removes_it(tmp_path, leak_check):
    paths = HostPaths(root=tmp_path / "root").ensure()
    dead = _dead_pid()
    orphan = paths.tmp / f"isobench-run-{dead}-beef"
    (orphan / "merged" / "sub").mkdir(parents=True)
    leases.take(orphan.name.removeprefix("isobench-"), pid=dead, kind="scratch", root=str(paths.root))
    live = scratch.make_scratch(paths, "run")
    (live / "m").mkdir()
    mounted = []
    try:
        for target in (orphan / "merged", orphan / "merged" / "sub", live / "m"):
            if target.name == "sub":
                target.mkdir(exist_ok=True)
            syscalls.mount("tmpfs", str(target), "tmpfs", 0, "size=1m")
            mounted.append(target)
        (orphan / "merged" / "sub" / "f").write_text("x")
        removed = scratch.gc(paths)
        assert f"scratch mount {orphan}/merged/sub" in removed and f"scratch dir {orphan}" in removed
        assert removed.index(f"scratch mount {orphan}/merged/sub") < removed.index(f"scratch mount {orphan}/merged")
        assert not orphan.exists()
        assert (live / "m").is_mount()  # a live owner's mount and dir are kept
    finally:
        scratch.remove_scratch(live)
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        leases.release(orphan.name.removeprefix("isobench-"))
    assert not live.exists()
