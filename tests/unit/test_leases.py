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
