"""``isobench run -it`` and ``isobench exec -it`` through a real pty, as docker works: a terminal in
the container (its own devpts), raw mode (Ctrl-C is a byte the container's line discipline turns into
SIGINT for its foreground job, not a signal to the CLI), the window size and its changes, the exit
code; with and without an isobench server (which gets the client's fds 0-2)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.ptyrun import PtySession

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(180)]

BIN = Path(sys.executable).parent


def _session(argv: list[str], env: dict[str, str]) -> int:
    with PtySession(argv, rows=33, cols=101, env=env) as s:
        s.expect(b"# ")
        s.send(b"tty; stty size; echo $((6*7))\r")
        s.expect(b"42")
        s.send(b"sleep 30\r")
        s.expect(b"sleep 30")
        time.sleep(1.0)  # sleep is the terminal's foreground job by now (an earlier ^C would hit the shell)
        s.send(b"\x03")  # Ctrl-C: the container's sleep dies of SIGINT, its shell lives on
        s.expect(b"# ")  # a new prompt: the interrupt also flushed the input queue, so type after it
        s.send(b"echo after-intr-$?\r")
        s.expect(b"after-intr-130")
        s.resize(40, 120)
        s.send(b"stty size\r")
        s.expect(b"40 120")
        s.send(b"exit 5\r")
        code = s.wait()
    out = s.output
    assert b"/dev/pts/0" in out and b"33 101" in out
    return code


def _env(paths, sock: Path) -> dict[str, str]:
    from app.server import protocol as P

    return {**os.environ, "ISOBENCH_ROOT": str(paths.root), P.SOCKET_ENV: str(sock)}


def test_run_it_without_server(paths, tmp_path, leak_check):
    from runtime.lifecycle import state as S
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    before = set(S.all_ids(paths))
    env = _env(paths, tmp_path / "nobody.sock")  # the client falls back to the Python CLI
    assert _session([str(BIN / "isobench"), "run", "-it", "--rm", "--network", "none", "busybox", "sh"], env) == 5
    assert set(S.all_ids(paths)) == before  # --rm


def test_run_it_and_exec_it_with_server(paths, tmp_path, leak_check):
    from runtime.lifecycle import state as S
    from tests.imagefixtures import ensure_busybox
    from tests.integration.test_cli_server_live import Server

    ensure_busybox(paths)
    sock = tmp_path / "s.sock"
    env = _env(paths, sock)
    server = Server(str(BIN / "isobench"), sock, env)
    before = set(S.all_ids(paths))
    p = server.start()
    assert p.returncode == 0 and server.pid, p.stderr
    try:
        client = str(BIN / "isobench")
        assert _session([client, "run", "-it", "--rm", "--network", "none", "busybox", "sh"], env) == 5
        assert server.run("run", "-d", "--name", "tt", "--network", "none", "busybox", "sleep", "120").returncode == 0
        assert _session([client, "exec", "-it", "tt", "sh"], env) == 5
        p = server.run("run", "-i", "--rm", "--network", "none", "busybox", "cat")  # -i: stdin reaches it
        assert p.returncode == 0
    finally:
        left = set(S.all_ids(paths)) - before
        if left:
            server.run("rm", "-f", *sorted(left))
        server.stop()


def test_run_i_passes_stdin(paths, leak_check):
    import subprocess

    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    p = subprocess.run([str(BIN / "isobench-py"), "run", "-i", "--rm", "--network", "none", "busybox", "sh", "-c",
                        "tr a-z A-Z"], input="hello\n", capture_output=True, text=True, timeout=60,
                       env={**os.environ, "ISOBENCH_ROOT": str(paths.root)})
    assert (p.returncode, p.stdout) == (0, "HELLO\n")
    p = subprocess.run([str(BIN / "isobench-py"), "run", "-d", "-t", "--network", "none", "busybox", "sh"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "ISOBENCH_ROOT": str(paths.root)})
    assert p.returncode == 2 and "-d with -i/-t" in p.stderr
