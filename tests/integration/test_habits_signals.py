"""Signals as a Docker user expects them: the container's process starts with default dispositions
and an empty blocked mask (as runc gives it), Ctrl-C ends a foreground run with 130 with and without
the isobench server, `timeout -s INT` works, and `isobench kill -s INT` reaches an `--init` workload.

Before the fix the monitor ignored SIGINT and SIGHUP and every container inherited that
(``SigIgn: ...0003``): ``timeout -s INT 2 isobench run --rm busybox sleep 30`` ran 30 s and exited 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runtime.lifecycle import state as S
from tests.integration.test_cli_server_live import _no_server_env, client, server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(180)]


def _masks(text: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1], 16) for line in text.splitlines()
            if line.startswith(("SigIgn:", "SigBlk:"))}


def test_container_starts_with_default_signal_state(server, tmp_path, leak_check):
    """Foreground without the server (a forked monitor), with the server (the worker monitors), and
    detached (the monitor ignores hang-ups; its container must not): no ignored, no blocked signal."""
    direct = _no_server_env(server, tmp_path)
    for env in (direct, server.env):
        p = server.run("run", "--rm", "--network", "none", "busybox", "cat", "/proc/self/status", env=env)
        assert p.returncode == 0, p.stderr
        assert _masks(p.stdout) == {"SigIgn": 0, "SigBlk": 0}, p.stdout
    cid = server.run("run", "-d", "--network", "none", "busybox", "cat", "/proc/self/status",
                     env=direct).stdout.strip()
    assert server.run("wait", cid, env=direct).stdout.strip() == "0"
    logs = server.run("logs", cid, env=direct).stdout
    server.run("rm", cid, env=direct)
    assert _masks(logs) == {"SigIgn": 0, "SigBlk": 0}, logs
    # `exec` too: the exec'd process gets the same clean state
    cid = server.run("run", "-d", "--network", "none", "busybox", "sleep", "30", env=direct).stdout.strip()
    try:
        p = server.run("exec", cid, "cat", "/proc/self/status", env=direct)
        assert _masks(p.stdout) == {"SigIgn": 0, "SigBlk": 0}, p.stdout
    finally:
        server.run("rm", "-f", cid, env=direct)


def test_timeout_s_int_ends_the_run_with_130(server, paths, tmp_path, leak_check):
    """`timeout -s INT 2 isobench run --rm busybox sleep 30` ends after ~2 s, and isobench exits 130
    (timeout itself reports 124 for any timed-out command; --preserve-status passes ours on). Sleep
    is PID 1 without a SIGINT handler: the kernel drops the signal, the monitor carries out its
    default action. --rm leaves nothing."""
    for env in (_no_server_env(server, tmp_path), server.env):
        before = set(S.all_ids(paths))
        t0 = time.monotonic()
        p = subprocess.run(["timeout", "--preserve-status", "-s", "INT", "2", server.client, "run", "--rm",
                            "--network", "none", "busybox", "sleep", "30"], env=env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        took_s = time.monotonic() - t0
        assert p.returncode == 130, (p.returncode, p.stderr)
        assert took_s < 10, took_s
        deadline = time.monotonic() + 20
        while set(S.all_ids(paths)) - before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not set(S.all_ids(paths)) - before


def _ctrl_c(client: str, env: dict[str, str], paths, argv: list[str], ignore_sigint: bool = False) -> tuple[int, str]:
    """Run the client in its own process group (SIGINT at default, as an interactive shell starts a
    foreground job, or ignored with ``ignore_sigint``, whatever pytest was started with), wait until
    the container runs, SIGINT the group (what a terminal's Ctrl-C does); (exit code, stderr)."""
    before = set(S.all_ids(paths))
    disposition = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
    proc = subprocess.Popen([client, "run", "--rm", "--network", "none", *argv], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = set(S.all_ids(paths)) - before
        st = (S.read_state(S.container_dir(paths, next(iter(ids)))) or {}) if ids else {}
        if st.get("status") == "running" and st.get("pid") and _execd(st["pid"]):
            break
        time.sleep(0.02)
    time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def _execd(pid: int) -> bool:
    """PID 1 runs the image's program: past the start helper (``isobench-*``), which keeps signals
    blocked while it sets up; a SIGINT sent then would stay pending and be dropped at exec, as the
    kernel drops a namespace init's default-action signals, so a Ctrl-C that early is a different test."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return bool(comm) and not comm.startswith("isobench")


@pytest.mark.parametrize("started_ignoring_sigint", [False, True], ids=["terminal", "background-job"])
def test_ctrl_c_ends_a_foreground_run_with_130(server, paths, tmp_path, leak_check, started_ignoring_sigint):
    """Also when the client starts with SIGINT ignored, as a non-interactive shell's background job or a
    CI runner starts it: the Python CLI's proxy forwards it all the same, and so must the C client of
    the server (it dropped it, and the run went on for the full 30 s with exit 0)."""
    for env in (_no_server_env(server, tmp_path), server.env):
        for argv in (["busybox", "sleep", "30"], ["--init", "busybox", "sleep", "30"]):
            rc, err = _ctrl_c(server.client, env, paths, argv, ignore_sigint=started_ignoring_sigint)
            assert rc == 130, (argv, rc, err)


def test_kill_s_int_reaches_an_init_containers_workload(server, tmp_path, leak_check):
    env = _no_server_env(server, tmp_path)
    cid = server.run("run", "-d", "--init", "--network", "none", "busybox", "sleep", "30", env=env).stdout.strip()
    try:
        time.sleep(0.3)
        p = server.run("kill", "-s", "INT", cid, env=env)
        assert p.returncode == 0, p.stderr
        w = server.run("wait", cid, env=env, timeout_s=20)
        assert w.stdout.strip() == "130", (w.stdout, w.stderr)
    finally:
        server.run("rm", "-f", cid, env=env)
