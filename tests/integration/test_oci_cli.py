"""isobench-runtime's runc-compatible command line end to end: the create/start/state/kill/delete
lifecycle on a bundle made by the spec converter, exec, run, list, features, and the spec's lifecycle
errors (one line, exit 1, nothing changed).

Every test runs twice: with no server (the C client execs ``isobench-runtime-py``) and served by a
private ``isobench server`` (the worker does the verb; for ``create`` the client spawns the container's
process; ``run``, ``exec`` and a console socket are handed back to the client's own Python CLI)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(180)]

RUNTIME = str(Path(sys.executable).with_name("isobench-runtime"))
ISOBENCH = str(Path(sys.executable).with_name("isobench"))


@pytest.fixture(params=["no-server", "server"])
def rt(request, paths, tmp_path):
    """``rt(*argv)`` -> CompletedProcess against a private --root; a busybox bundle at ``rt.bundle``;
    ``rt.env`` the runtime's environment (``server``: a private server this fixture starts and stops)."""
    from runtime.oci import bundle
    from runtime.spec import ContainerConfig, NetworkSpec
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    root = tmp_path / "state"
    b = tmp_path / "bundle"
    bundle.from_image(paths, ContainerConfig(image="busybox", command=("sleep", "300"),
                                             network=NetworkSpec(mode="none")), b)
    sock = tmp_path / "server.sock"  # nobody listens there without a server
    env = {**os.environ, "ISOBENCH_ROOT": str(paths.root), "ISOBENCH_SERVER_SOCKET": str(sock),
           "ISOBENCH_SERVER_AUTOSTART": "0"}
    if request.param == "server":
        subprocess.run([ISOBENCH, "server", "start", "--socket", str(sock)], env=env, check=True,
                       capture_output=True, timeout=60)

    def run(*argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
        # files, not pipes: a created container keeps the runtime's stdout/stderr (as with runc), so a
        # pipe would not see EOF until the container exits
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run([RUNTIME, "--root", str(root), *argv], stdout=out, stderr=err, timeout=timeout_s,
                               stdin=subprocess.DEVNULL, env=env)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(), err.read().decode())

    run.bundle, run.root, run.env, run.mode, run.log = b, root, env, request.param, Path(f"{sock}.log")  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        for d in (root / "containers").glob("*"):
            if not d.name.startswith("."):
                run("delete", "--force", d.name)
        if request.param == "server":  # by its pidfile (pid and start time)
            subprocess.run([ISOBENCH, "server", "stop", "--socket", str(sock)], env=env, capture_output=True,
                           timeout=60)


def _set_process(b: Path, args: list[str], **extra) -> None:
    spec = json.loads((b / "config.json").read_text())
    spec["process"]["args"] = args
    spec["process"].update(extra)
    (b / "config.json").write_text(json.dumps(spec))


def _state(rt, cid: str) -> dict:
    p = rt("state", cid)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_lifecycle_create_start_state_kill_delete(leak_check, rt, tmp_path):
    pidfile = tmp_path / "pid"
    p = rt("create", "--bundle", str(rt.bundle), "--pid-file", str(pidfile), "c1")
    assert p.returncode == 0, p.stderr
    st = _state(rt, "c1")
    assert st["status"] == "created" and st["pid"] == int(pidfile.read_text()) and st["bundle"] == str(rt.bundle)
    assert st["ociVersion"].startswith("1.") and "org.opencontainers.image.ref.name" in st["annotations"]
    assert rt("start", "c1").returncode == 0
    st = _state(rt, "c1")
    assert st["status"] == "running"
    assert Path(f"/proc/{st['pid']}/cmdline").read_bytes() == b"sleep\x00300\x00"
    # lifecycle errors: one line, exit 1, nothing changes
    for argv, text in ((("start", "c1"), "only a created container can be started"),
                       (("delete", "c1"), "is running"),
                       (("create", "--bundle", str(rt.bundle), "c1"), "already exists"),
                       (("state", "nope"), "does not exist"),
                       (("kill", "nope"), "does not exist")):
        p = rt(*argv)
        assert p.returncode == 1 and text in p.stderr and p.stderr.count("\n") == 1, (argv, p.stderr)
    assert _state(rt, "c1")["status"] == "running"
    listed = json.loads(rt("list", "--format", "json").stdout)
    assert [(c["id"], c["status"]) for c in listed] == [("c1", "running")]
    assert "c1" in rt("list").stdout
    assert rt("kill", "c1", "KILL").returncode == 0
    deadline = time.monotonic() + 10
    while _state(rt, "c1")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    st = _state(rt, "c1")
    assert st["status"] == "stopped" and st["pid"] == 0
    p = rt("kill", "c1")
    assert p.returncode == 1 and "not running" in p.stderr
    assert rt("delete", "c1").returncode == 0
    assert rt("state", "c1").returncode == 1
    assert rt("delete", "--force", "c1").returncode == 0  # runc: --force of a gone container is fine


def test_delete_force_and_kill_all(leak_check, rt):
    assert rt("run", "--detach", "--bundle", str(rt.bundle), "c2").returncode == 0
    pid = _state(rt, "c2")["pid"]
    e = rt("exec", "--detach", "c2", "sleep", "200")
    assert e.returncode == 0, e.stderr
    assert rt("kill", "--all", "c2", "9").returncode == 0
    # PID 1 of a pid namespace exits once the namespace is torn down; the exec'd process, reparented to
    # the host's init, is reaped when that init gets to it (1-2 s here, longer under load)
    deadline = time.monotonic() + 30
    while _state(rt, "c2")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(rt, "c2")["status"] == "stopped"
    assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split(b")")[1][:3]
    assert rt("delete", "--force", "c2").returncode == 0
    assert not (rt.root / "containers" / "c2").exists()


def test_exec_process_file_and_command(leak_check, rt, tmp_path):
    assert rt("run", "-d", "--bundle", str(rt.bundle), "c3").returncode == 0
    proc = {"args": ["sh", "-c", "echo $WHO $(id -u) $(pwd); exit 5"], "env": ["WHO=exec", "PATH=/bin"],
            "cwd": "/tmp", "user": {"uid": 1, "gid": 1}}
    (tmp_path / "p.json").write_text(json.dumps(proc))
    pidfile = tmp_path / "exec.pid"
    p = rt("exec", "--process", str(tmp_path / "p.json"), "--pid-file", str(pidfile), "c3")
    assert (p.returncode, p.stdout) == (5, "exec 1 /tmp\n") and pidfile.read_text().isdigit()
    p = rt("exec", "c3", "cat", "/proc/1/cmdline")
    assert p.returncode == 0 and p.stdout == "sleep\x00300\x00"
    (tmp_path / "bad.json").write_text(json.dumps({"args": []}))
    p = rt("exec", "--process", str(tmp_path / "bad.json"), "c3")
    assert p.returncode == 1 and "args must be a non-empty array" in p.stderr


def test_run_foreground_exit_code_and_bad_bundle(leak_check, rt, tmp_path):
    _set_process(rt.bundle, ["sh", "-c", "echo out; exit 9"])
    p = rt("run", "--bundle", str(rt.bundle), "c4")
    assert (p.returncode, p.stdout) == (9, "out\n")
    assert rt("state", "c4").returncode == 1  # run deletes it
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"ociVersion": "1.0.2"}')
    p = rt("create", "--bundle", str(tmp_path / "bad"), "c5")
    assert p.returncode == 1 and "process: must be an object" in p.stderr and p.stderr.count("\n") == 1
    assert not (rt.root / "containers" / "c5").exists()
    p = rt("create", "--bundle", str(rt.bundle), "bad/id")
    assert p.returncode == 1 and "container id" in p.stderr


def test_log_file_json_and_features(rt, tmp_path):
    log = tmp_path / "log.json"
    p = subprocess.run([RUNTIME, "--root", str(rt.root), "--log", str(log), "--log-format", "json", "start", "x"],
                       capture_output=True, text=True, timeout=30, env=rt.env)
    assert p.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "does not exist" in entry["msg"]
    f = json.loads(rt("features").stdout)
    assert f["ociVersionMax"] == "1.0.2" and "pid" in f["linux"]["namespaces"] and "rbind" in f["mountOptions"]
    assert "CAP_SYS_ADMIN" in f["linux"]["capabilities"] and f["linux"]["seccomp"]["enabled"]


def test_console_socket_gets_the_pty_master(leak_check, rt, tmp_path):
    """process.terminal + --console-socket: the master arrives over SCM_RIGHTS (what conmon receives),
    and it is the container's terminal."""
    _set_process(rt.bundle, ["sh", "-c", "tty; read x; echo got-$x; exit 2"], terminal=True,
                 consoleSize={"height": 20, "width": 70})
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        p = rt("create", "--bundle", str(rt.bundle), "--console-socket", path, "c6")
        assert p.returncode == 0, p.stderr
        conn, _ = srv.accept()
        _msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        conn.close()
        master = fds[0]
        assert rt("start", "c6").returncode == 0
        out = b""
        deadline = time.monotonic() + 10
        while b"/dev/pts/" not in out and time.monotonic() < deadline:
            out += os.read(master, 4096)
        os.write(master, b"yes\n")
        while b"got-yes" not in out and time.monotonic() < deadline:
            out += os.read(master, 4096)
        assert b"/dev/pts/0" in out and b"got-yes" in out
        os.close(master)
    finally:
        srv.close()


def test_created_process_is_the_callers_child_as_with_runc(leak_check, rt, tmp_path):
    """conmon is a subreaper and waits for the container's process: after ``create`` that process must
    be an orphan of the *caller* (reparented to conmon), with or without a server (whose worker does
    create's work: the client spawns the process). A subreaper stand-in runs create and reads the
    container's parent; ``start`` then lets it run to its exit, which the subreaper reaps."""
    _set_process(rt.bundle, ["sh", "-c", "exit 7"])
    probe = tmp_path / "subreaper.py"
    probe.write_text(
        "import ctypes, os, subprocess, sys\n"
        "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER\n"
        "pidfile = sys.argv[2]\n"
        "subprocess.run([sys.argv[1], '--debug', '--root', sys.argv[3], 'create', '--bundle', sys.argv[4],"
        " '--pid-file', pidfile, 'c7'], check=True, stdin=subprocess.DEVNULL)\n"
        "pid = int(open(pidfile).read())\n"
        "ppid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "subprocess.run([sys.argv[1], '--root', sys.argv[3], 'start', 'c7'], check=True, stdin=subprocess.DEVNULL)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(ppid == os.getpid(), os.waitstatus_to_exitcode(status))\n")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:  # the container holds them
        p = subprocess.run([sys.executable, str(probe), RUNTIME, str(tmp_path / "c7.pid"), str(rt.root),
                            str(rt.bundle)], env=rt.env, stdout=out, stderr=err, timeout=60)
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(), err.read().decode()
    assert p.returncode == 0, errors
    assert text.split() == ["True", "7"], (text, errors)
    served = "create served by an isobench server's worker" in errors
    assert served == (rt.mode == "server") and "handed back" not in errors, errors
    assert rt("delete", "c7").returncode == 0
