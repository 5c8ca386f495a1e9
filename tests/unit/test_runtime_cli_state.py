"""Pure pieces of the container CLI and its state: the monitor's report protocol, name reservation,
lookup by name / id prefix, and the inspect document."""

from __future__ import annotations

import os

import pytest

from app.commands.container import inspect_doc, status_text
from core.errors import ContainerError, IsobenchError, UsageError
from runtime.lifecycle import state as S
from runtime.monitor import Launch
from core.paths import HostPaths


def _launch(text: bytes) -> Launch:
    r, w = os.pipe()
    os.write(w, text)
    os.close(w)
    return Launch(r)


def test_monitor_protocol_started_then_exit():
    h = _launch(b"S abc123 4242 4343\nX 3\n")
    assert h.started() == ("abc123", 4242) and h.monitor_pid == 4343
    assert h.exit_code() == 3


def test_monitor_protocol_error_keeps_exit_code():
    h = _launch(b"E 2 --memory '1x' is not a size\n")
    with pytest.raises(IsobenchError, match="--memory") as exc:
        h.started()
    assert exc.value.exit_code == 2


def test_monitor_gone_is_an_error():
    with pytest.raises(IsobenchError, match="monitor exited"):
        _launch(b"").started()


def test_names_are_unique_and_freed(tmp_path):
    paths = HostPaths(root=tmp_path)
    S.container_dir(paths, "aaa111").mkdir(parents=True)
    S.reserve_name(paths, "web", "aaa111")
    with pytest.raises(UsageError, match="already in use"):
        S.reserve_name(paths, "web", "bbb222")
    S.release_name(paths, "web", "aaa111")
    S.reserve_name(paths, "web", "bbb222")  # free again
    # a name whose container dir is gone is taken over
    S.reserve_name(paths, "old", "ccc333")
    S.reserve_name(paths, "old", "ddd444")


def test_lookup_by_name_id_and_prefix(tmp_path):
    paths = HostPaths(root=tmp_path)
    for cid, name in (("abc111", "one"), ("abd222", None)):
        d = S.container_dir(paths, cid)
        d.mkdir(parents=True)
        S.write_state(d, {"id": cid, "name": name, "status": "exited", "exit_code": 0})
        if name:
            S.reserve_name(paths, name, cid)
    assert S.lookup(paths, "one")["id"] == "abc111"
    assert S.lookup(paths, "abd222")["id"] == "abd222"
    assert S.lookup(paths, "abd")["id"] == "abd222"
    with pytest.raises(UsageError, match="ambiguous"):
        S.lookup(paths, "ab")
    with pytest.raises(ContainerError, match="no such container"):
        S.lookup(paths, "zzz")


def test_inspect_doc_and_status_of_exited_container():
    st = {"id": "abc", "name": "n", "status": "exited", "exit_code": 137, "oom_killed": True,
          "argv": ["sh", "-c", "x"], "finished_at": "2000-01-01T00:00:00.000000Z"}
    doc = inspect_doc(st)
    assert doc["State"]["ExitCode"] == 137 and doc["State"]["OOMKilled"] is True
    assert doc["Path"] == "sh" and doc["Args"] == ["-c", "x"] and not doc["State"]["Running"]
    assert status_text(st).startswith("Exited (137)")


def test_dead_process_is_not_alive():
    assert not S.alive(None, None)
    assert not S.alive(os.getpid(), 0)
    assert S.alive(os.getpid(), S.proc_start_time(os.getpid()))


def test_ps_shows_published_ports(tmp_path, monkeypatch, capsys):
    """Issue 4: ``ps`` shows a container's port mappings in a docker-style PORTS column."""
    from app import cli
    from app.commands.container import ports_text

    paths = HostPaths(root=tmp_path)
    d = S.container_dir(paths, "abc123def456")
    d.mkdir(parents=True)
    S.write_state(d, {"id": "abc123def456", "name": "web", "image": "busybox", "argv": ["httpd", "-f"],
                      "status": "running", "pid": os.getpid(), "pid_start": S.proc_start_time(os.getpid()),
                      "ports": [["", 18080, 80, "tcp"], ["127.0.0.1", 5353, 53, "udp"]]})
    monkeypatch.setenv("ISOBENCH_ROOT", str(tmp_path))
    assert cli.main(["ps"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert "PORTS" in header.split("   ") or " PORTS " in header
    assert "0.0.0.0:18080->80/tcp, 127.0.0.1:5353->53/udp" in row
    assert row.rstrip().endswith("web")
    assert ports_text({}) == "" and ports_text({"ports": [["x"], None]}) == ""


def test_gc_removes_state_temp_files_of_dead_writers_only(tmp_path):
    """A ``kill -9`` between write and rename in write_state leaves ``.state.json.<pid>``; gc removes
    it once that writer is dead, keeps a live writer's, and keeps the (exited, not --rm) container."""
    import subprocess
    import sys

    from runtime.lifecycle import gc as lgc

    paths = HostPaths(root=tmp_path)
    d = S.container_dir(paths, "abc123")
    d.mkdir(parents=True)
    S.write_state(d, {"id": "abc123", "status": "exited", "exit_code": 0})
    assert sorted(os.listdir(d)) == ["state.json"]  # the fast path leaves no temp behind
    # a writer killed mid-write: the child writes its temp the way write_state does, then dies
    code = ("import os,sys; open(os.path.join(sys.argv[1], f'.state.json.{os.getpid()}'), 'w').write('{\"id\"');"
            "os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(d)], check=False)
    mine = d / f".state.json.{os.getpid()}"  # a live writer's temp (this process): not touched
    mine.write_text("{}")
    dead = [p for p in d.iterdir() if S.TEMP_STATE.match(p.name) and p != mine]
    assert len(dead) == 1
    removed = lgc.gc(paths)
    assert removed == [f"partial state file {dead[0]}"]
    assert sorted(os.listdir(d)) == sorted(["state.json", mine.name])
    assert S.read_state(d)["status"] == "exited"


def test_write_state_failure_leaves_no_temp(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    with pytest.raises(TypeError):
        S.write_state(d, {"x": object()})  # json fails before the temp exists
    (d / S.STATE_FILE).mkdir()  # rename onto a directory fails after the temp was written
    with pytest.raises(OSError):
        S.write_state(d, {"x": 1})
    assert sorted(os.listdir(d)) == [S.STATE_FILE]
