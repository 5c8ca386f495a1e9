"""podman drives isobench-runtime: an image from isobench's own store, loaded into a private podman
storage, runs with ``--runtime .venv/bin/isobench-runtime`` for ``run --rm``, ``run -d``, ``exec``,
``stop``, ``rm`` and ``run -it`` (through a real pty).

Conditions of this host, chosen and said plainly: ``--network none`` (podman's default network here is
a CNI bridge, cni-podman0, with its own firewall rules: host objects outside the project's
``isobench-`` names; slirp4netns and netavark are not installed), ``--cgroup-manager cgroupfs`` with ``--cgroup-parent
/isobench-podman-<id>`` (no systemd; the cgroups podman and the runtime make carry the project's
name, and the test removes them), ``--events-backend file``, and ``--ulimit nofile=1024:1024
--ulimit nproc=4096:4096``: root on this machine has no CAP_SYS_RESOURCE (CapBnd lacks bit 24), so
podman's default of raising both to 1048576 is refused by the kernel for any runtime (runc too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("podman") is None or shutil.which("conmon") is None,
                                 reason="podman/conmon not installed (make setup installs them)")]

VENV_BIN = Path(sys.executable).parent
RUNTIME = str(VENV_BIN / "isobench-runtime")
DEFAULT_ROOT = "/run/isobench-runtime"
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")


@pytest.fixture(params=["no-server", "server"])
def podman(request, paths, tmp_path):
    """``podman(*args)`` with private storage, run root, runtime state and cgroup parent; everything
    podman made is removed afterwards (containers, images, storage, cgroups). ``server``: the runtime's
    C client is served by an isobench server this fixture starts and stops on the default socket
    (podman runs conmon, and conmon the runtime, with an environment of its own: no
    ISOBENCH_SERVER_SOCKET reaches the runtime, as for a user); ``no-server``: each verb is a Python
    process. Skipped when another server already listens there (not ours to stop or to use)."""
    from core.paths import new_id
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    top = Path(tempfile.mkdtemp(prefix="isb-pm-", dir="/tmp"))  # podman refuses a run root over 50 characters
    parent = f"isobench-podman-{new_id()}"
    base = ["podman", "--root", str(top / "storage"), "--runroot", str(top / "run"), "--tmpdir", str(top / "tmp"),
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--storage-driver", "overlay",
            "--runtime", RUNTIME]  # the runtime's default --root: podman's clean-up process (conmon's exit
    # command) calls `delete` without --runtime-flag options, so a private root would not be seen there
    from app.server import protocol as P

    sock = P.DEFAULT_SOCKET
    if P.accepts(sock):
        shutil.rmtree(top, ignore_errors=True)
        pytest.skip(f"an isobench server this test did not start listens on {sock}: the runtime under "
                    "conmon would use it")
    env = {k: v for k, v in os.environ.items() if k not in (P.SOCKET_ENV, "ISOBENCH_RUN_DIR")}
    env.update(ISOBENCH_ROOT=str(paths.root), ISOBENCH_SERVER_AUTOSTART="0")
    log_offset = os.path.getsize(f"{sock}.log") if os.path.exists(f"{sock}.log") else 0
    if request.param == "server":
        subprocess.run([str(VENV_BIN / "isobench"), "server", "start", "--socket", sock], env=env, check=True,
                       capture_output=True, timeout=60)

    def run(*args: str, timeout_s: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
        p = subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout_s, env=env,
                           stdin=subprocess.DEVNULL, **kw)
        if check:
            assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
        return p

    run.base, run.parent, run.top, run.env, run.mode = base, parent, top, env, request.param  # type: ignore[attr-defined]
    run.sock, run.log_offset = sock, log_offset  # type: ignore[attr-defined]
    archive = tmp_path / "busybox.tar"
    try:
        subprocess.run([str(VENV_BIN / "isobench-py"), "image", "save", "-o", str(archive), "busybox"], check=True,
                       env=env, capture_output=True)
        run("load", "-i", str(archive))
        yield run
        run("rm", "--all", "--force", "--time", "0", check=False)
        run("rmi", "--all", "--force", check=False)
    finally:
        if request.param == "server":  # by its pidfile (pid and start time)
            subprocess.run([str(VENV_BIN / "isobench"), "server", "stop", "--socket", sock], env=env,
                           capture_output=True, timeout=60)
    for hierarchy in Path("/sys/fs/cgroup").iterdir():  # conmon's and the containers' cgroups, deepest first
        d = hierarchy / parent
        if d.is_dir():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                sub.rmdir()
            d.rmdir()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if str(top) in line.split()[4]:
            subprocess.run(["umount", "-l", line.split()[4]], check=False)
    shutil.rmtree(top, ignore_errors=True)


def _run_opts(podman) -> tuple[str, ...]:
    return ("--network", "none", "--cgroup-parent", f"/{podman.parent}") + ULIMITS


def test_podman_run_rm_detach_exec_stop_rm(leak_check, podman):
    opts = _run_opts(podman)
    p = podman("run", "--rm", *opts, "localhost/busybox", "sh", "-c", "echo hello; cat /proc/1/cgroup; exit 3",
               check=False)
    assert p.returncode == 3 and p.stdout.startswith("hello\n"), (p.stdout, p.stderr)
    assert f"/{podman.parent}/libpod-" in p.stdout  # the cgroupsPath podman gave us is honoured
    assert not [d for d in (Path(DEFAULT_ROOT) / "containers").iterdir() if not d.name.startswith(".")
                and (d / "state.json").read_text().find(str(podman.top)) >= 0]  # --rm deleted it

    cid = podman("run", "-d", "--name", "d1", *opts, "localhost/busybox", "sleep", "300").stdout.strip()
    s = subprocess.run([RUNTIME, "--debug", "state", cid], capture_output=True, text=True, check=True, env=podman.env)
    assert '"status": "running"' in s.stdout
    assert ("served by an isobench server" in s.stderr) == (podman.mode == "server"), s.stderr
    assert "Up" in podman("ps", "--filter", "name=d1").stdout
    e = podman("exec", "d1", "sh", "-c", "echo in-exec; ps -o pid,args")
    assert "in-exec" in e.stdout and "sleep 300" in e.stdout
    assert podman("exec", "d1", "sh", "-c", "exit 4", check=False).returncode == 4
    if podman.mode == "server":  # conmon's creates were served (their process is the client's child)
        with open(f"{podman.sock}.log", "rb") as f:
            f.seek(podman.log_offset)
            log = f.read().decode(errors="replace")
        handed_back = [line for line in log.splitlines() if " back to client pid " in line]
        assert handed_back and all("`isobench-runtime exec`" in line for line in handed_back), log[-3000:]
    podman("stop", "--time", "1", "d1")
    assert "Exited (137)" in podman("ps", "-a", "--filter", "name=d1").stdout
    podman("rm", "d1")
    assert "d1" not in podman("ps", "-a").stdout
    assert not (Path(DEFAULT_ROOT) / "containers" / cid).exists()


def test_podman_run_it_through_a_pty(leak_check, podman):
    from tests.ptyrun import PtySession

    argv = podman.base + ["run", "--rm", "-it", *_run_opts(podman), "localhost/busybox", "sh"]
    with PtySession(argv, rows=30, cols=90) as s:
        s.expect(b"# ")
        s.send(b"tty; stty size; echo $((6*7))\r")
        s.expect(b"42")
        s.send(b"exit 6\r")
        code = s.wait()
    assert code == 6
    assert b"/dev/pts/0" in s.output and b"30 90" in s.output
