"""The suite's own process hygiene: its leak check sees a process a test leaves running, and the host
context's marker (``hostmarker-secprobe 600``) ends with the context, also when the session is ended
by SIGTERM. A marker once outlived a security session; the host leak check did not notice it (it looks
only for ``isobench``-named objects)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from runtime.security import probes
from tests.security.conftest import marker_pids, own_processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_leak_check_sees_a_child_left_running():
    before = own_processes()
    proc = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL)
    try:
        left = own_processes() - before
        assert str(proc.pid) in {p.split()[0] for p in left}, left
    finally:
        proc.kill()
        proc.wait()
    assert not {p for p in own_processes() - before if p.startswith(f"{proc.pid} ")}


def test_host_context_stops_its_marker():
    with probes.host_context() as ctx:
        marker = ctx["host_pid"]
        assert marker in marker_pids(parent=os.getpid())
        assert f"{marker} {probes.MARKER} 600" in own_processes()
    assert marker not in marker_pids()


def test_sigterm_to_the_session_still_stops_the_marker():
    """``host_ctx`` turns SIGTERM into KeyboardInterrupt while the marker lives, so the context's
    ``finally`` (kill the marker by pid, reap it) runs, as pytest's teardown on an interrupt does."""
    script = textwrap.dedent("""
        import signal, sys, time
        from runtime.security import probes
        from tests.security.conftest import _signals_raise_keyboard_interrupt
        try:
            with _signals_raise_keyboard_interrupt(signal.SIGTERM, signal.SIGHUP):
                with probes.host_context() as ctx:
                    print(ctx["host_pid"], flush=True)
                    time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
        marker = int(proc.stdout.readline())
        assert marker in marker_pids(parent=proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 5
    while marker in marker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker not in marker_pids(), f"marker {marker} outlived its session"
