import os
import subprocess

from core import leases


def test_lease_lifecycle(monkeypatch, tmp_path):
    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path))
    leases.take("abc123def456")
    assert leases.is_live("abc123def456")
    assert leases.owner_alive("isobench-abc123")  # truncated interface-style name
    assert not leases.owner_alive("isobench-ffff")
    leases.release("abc123def456")
    assert not leases.is_live("abc123def456")


def test_dead_owner_is_orphan(monkeypatch, tmp_path):
    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path))
    p = subprocess.Popen(["true"])
    leases.take("dead00", pid=p.pid)
    p.wait()
    assert not leases.is_live("dead00")
    assert "dead00" not in leases.live_ids()
    assert os.getpid() > 0


def test_gc_removes_only_dead_owners_leases_and_temp_files(monkeypatch, tmp_path):
    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path))
    p = subprocess.Popen(["true"])
    p.wait()
    leases.take("live01")
    leases.take("dead01", pid=p.pid)
    d = leases.lease_dir()
    (d / f".dead02.{p.pid}.tmp").write_text("{")
    (d / f".live02.{os.getpid()}.tmp").write_text("{")
    (d / "notes.txt").write_text("not a lease")
    assert sorted(leases.gc()) == [f"stale lease .dead02.{p.pid}.tmp", "stale lease dead01.json"]
    assert sorted(x.name for x in d.iterdir()) == [f".live02.{os.getpid()}.tmp", "live01.json", "notes.txt"]
    leases.release("live01")
