"""Leased scratch dirs and pid-tagged temp files: created, removed on exit, and collected by gc only
when their owner is dead (leases live in a private ISOBENCH_RUN_DIR here: no host effects)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from core import leases
from core import scratch
from core.paths import HostPaths


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path / "run"))
    return HostPaths(root=tmp_path / "root")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_scratch_dir_is_leased_and_removed_on_exit(paths):
    with scratch.scratch_dir(paths, "build") as d:
        assert d.parent == paths.tmp and d.name.startswith(f"isobench-build-{os.getpid()}-")
        obj_id = d.name.removeprefix("isobench-")
        assert leases.is_live(obj_id)
        assert json.loads((leases.lease_dir() / f"{obj_id}.json").read_text())["kind"] == "scratch"
        (d / "sub").mkdir()
        assert scratch.gc(paths) == []  # a live owner's dir is kept
    assert not d.exists() and not leases.is_live(obj_id)


def test_scratch_dir_is_removed_on_exception(paths):
    with pytest.raises(RuntimeError):
        with scratch.scratch_dir(paths, "run") as d:
            raise RuntimeError("boom")
    assert not d.exists()
    assert not (leases.lease_dir() / f"{d.name.removeprefix('isobench-')}.json").exists()


def test_bad_kind_is_rejected(paths):
    with pytest.raises(ValueError, match="scratch kind"):
        scratch.make_scratch(paths, "../x")


def test_gc_removes_dirs_of_dead_owners_only(paths):
    dead = _dead_pid()
    orphan = paths.tmp / f"isobench-build-{dead}-abc123"
    orphan.mkdir(parents=True)
    (orphan / "upper").mkdir()
    leases.take(orphan.name.removeprefix("isobench-"), pid=dead, kind="scratch")
    live = scratch.make_scratch(paths, "run")
    other = paths.tmp / "bench-work"  # not a scratch name: another area's
    other.mkdir()
    removed = scratch.gc(paths)
    assert removed == [f"scratch dir {orphan}"]
    assert not orphan.exists() and live.exists() and other.exists()
    assert not (leases.lease_dir() / f"build-{dead}-abc123.json").exists()
    scratch.remove_scratch(live)


def test_gc_unleased_dirs_by_dead_pid_or_age(paths):
    paths.tmp.mkdir(parents=True)
    dead_named = paths.tmp / f"isobench-run-{_dead_pid()}-0f0f"
    live_named = paths.tmp / f"isobench-run-{os.getpid()}-0f0f"
    legacy_new = paths.tmp / "isobench-build-k2j_3x"
    legacy_old = paths.tmp / "isobench-load-zz9_q1"
    for d in (dead_named, live_named, legacy_new, legacy_old):
        d.mkdir()
    old = time.time() - scratch.UNLEASED_MAX_AGE_S - 60
    os.utime(legacy_old, (old, old))
    scratch.gc(paths)
    assert not dead_named.exists() and not legacy_old.exists()
    assert live_named.exists() and legacy_new.exists()


def test_gc_removes_pid_tagged_temp_files_of_dead_writers(paths):
    blobs = paths.root / "images" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    dead = blobs / f".tmp-layer-pid{_dead_pid()}-abcd1234"
    mine = blobs / f"{scratch.temp_prefix('layer')}x"
    untagged = blobs / ".tmp-12345678"  # fsutil's names carry no pid: left alone
    content = paths.root / "flat" / "f1" / f".tmp-w-pid{_dead_pid()}-x"  # inside content trees: never walked
    content.parent.mkdir(parents=True)
    user_data = paths.volumes / "v1" / f".tmp-pid{_dead_pid()}-x"  # a volume's files are the user's
    user_data.parent.mkdir(parents=True)
    for f in (dead, mine, untagged, content, user_data):
        f.write_bytes(b"x")
    assert scratch.gc(paths) == [f"partial file {dead}"]
    assert mine.exists() and untagged.exists() and content.exists() and user_data.exists()


def test_atomic_write_owned_leaves_only_the_file(paths):
    target = paths.root / "images" / "index.json"
    scratch.atomic_write_owned(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert [p.name for p in target.parent.iterdir()] == ["index.json"]


def test_mountinfo_octal_escapes_are_decoded(monkeypatch, paths):
    d = paths.tmp / "isobench-run-1-a b"
    line = f"99 1 0:5 / {str(d).replace(' ', chr(92) + '040')}/merged rw - overlay overlay rw"
    real = scratch.Path.read_text
    monkeypatch.setattr(scratch.Path, "read_text",
                        lambda self, *a, **k: line if str(self) == "/proc/self/mountinfo" else real(self, *a, **k))
    assert scratch._below(d) == [f"{d}/merged"]
