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


@pytest.fixture
def podman(paths, tmp_path):
    """``podman(*args)`` with private storage, run root, runtime state and cgroup parent; everything
    podman made is removed afterwards (containers, images, storage, cgroups)."""
    from core.paths import new_id
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    top = Path(tempfile.mkdtemp(prefix="isb-pm-", dir="/tmp"))  # podman refuses a run root over 50 characters
    parent = f"isobench-podman-{new_id()}"
    base = ["podman", "--root", str(top / "storage"), "--runroot", str(top / "run"), "--tmpdir", str(top / "tmp"),
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--storage-driver", "overlay",
            "--runtime", RUNTIME]  # the runtime's default --root: podman's clean-up process (conmon's exit
    # command) calls `delete` without --runtime-flag options, so a private root would not be seen there
    env = {**os.environ, "ISOBENCH_ROOT": str(paths.root)}

    def run(*args: str, timeout_s: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
        p = subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout_s, env=env,
                           stdin=subprocess.DEVNULL, **kw)
        if check:
            assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
        return p

    run.base, run.parent, run.top = base, parent, top  # type: ignore[attr-defined]
    archive = tmp_path / "busybox.tar"
    subprocess.run([str(VENV_BIN / "isobench-py"), "image", "save", "-o", str(archive), "busybox"], check=True,
                   env=env, capture_output=True)
    run("load", "-i", str(archive))
    yield run
    run("rm", "--all", "--force", "--time", "0", check=False)
    run("rmi", "--all", "--force", check=False)
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
    state = subprocess.run([RUNTIME, "state", cid], capture_output=True, text=True, check=True).stdout
    assert '"status": "running"' in state
    assert "Up" in podman("ps", "--filter", "name=d1").stdout
    e = podman("exec", "d1", "sh", "-c", "echo in-exec; ps -o pid,args")
    assert "in-exec" in e.stdout and "sleep 300" in e.stdout
    assert podman("exec", "d1", "sh", "-c", "exit 4", check=False).returncode == 4
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
