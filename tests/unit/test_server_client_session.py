"""The worker's requests to its C client (app.server.worker.ClientSession), against a stand-in client
on a socketpair: ``S`` carries the helper's fds and a reply pipe (SCM_RIGHTS), the pid or an error comes
back on the pipe; ``F`` hands a command back (logged on the server log). The real client
(csrc/client.c) is exercised end to end by tests/integration/test_oci_cli.py and test_oci_podman.py."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from app.server import worker as W
from core.errors import ContainerError


def _client(sock: socket.socket, reply: bytes | None, seen: dict) -> None:
    """Read one ``S`` line with its fds, record them, answer ``reply`` on the pipe (None: close it)."""
    data, fds, _, _ = socket.recv_fds(sock, 4096, 16)
    seen["line"], seen["nfds"] = data.decode(), len(fds)
    seen["targets"] = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds[1:]]
    if reply is not None:
        os.write(fds[0], reply)
    for fd in fds:
        os.close(fd)


def _session(reply: bytes | None):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    seen: dict = {}
    t = threading.Thread(target=_client, args=(theirs, reply, seen))
    t.start()
    return W.ClientSession(ours.fileno()), ours, theirs, t, seen


@pytest.mark.parametrize("pid_ns,mode", [("", "new"), ("host", "host")])
def test_spawn_sends_the_fds_and_returns_the_clients_pid(pid_ns, mode):
    session, ours, theirs, t, seen = _session(b"4242\n")
    r, w = os.pipe()
    try:
        fds = [r, w, r, w, r, w]
        assert session.spawn("/x/isobench-nsexec", "isobench-abc", fds, pid_ns) == 4242
        t.join(5)
        assert seen["line"] == f"S {mode} isobench-abc /x/isobench-nsexec\n"
        assert seen["nfds"] == 7  # the reply pipe, then the helper's fds 0-5 in order
        assert seen["targets"] == [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
    finally:
        for fd in (r, w):
            os.close(fd)
        ours.close()
        theirs.close()


def test_spawn_joins_a_pid_namespace_by_path():
    session, ours, theirs, t, seen = _session(b"7\n")
    try:
        assert session.spawn("/x/h", "a", [0, 1, 2, 0, 1, 2], "/proc/self/ns/pid") == 7
        t.join(5)
        assert seen["line"].startswith("S join a ") and seen["nfds"] == 8  # + the namespace
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("reply,text", [(b"E fork: Resource temporarily unavailable\n", "could not start"),
                                        (None, "went away")])
def test_spawn_failure_is_a_container_error(reply, text):
    session, ours, theirs, t, _ = _session(reply)
    try:
        with pytest.raises(ContainerError, match=text):
            session.spawn("/x/h", "a", [0, 1, 2, 0, 1, 2], "")
        t.join(5)
    finally:
        ours.close()
        theirs.close()


def test_spawn_refuses_what_the_line_cannot_carry():
    session = W.ClientSession(-1)
    with pytest.raises(ContainerError):
        session.spawn("/x/h", "two words", [0, 1, 2, 0, 1, 2], "")
    with pytest.raises(ContainerError):
        session.spawn("/x/h\nS host a /bin/sh", "a", [0, 1, 2, 0, 1, 2], "")


def test_decline_logs_the_reason_sends_f_and_exits_without_x(monkeypatch):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log_r, log_w = os.pipe()

    def fake_exit(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(W, "_real_exit", fake_exit)
    try:
        with pytest.raises(SystemExit) as exc:
            session = W.ClientSession(ours.fileno(), log_w, 4242)
            session.decline("`isobench-runtime exec` runs in the caller's\nown process")
        assert exc.value.code == 0
        assert theirs.recv(4096) == b"F `isobench-runtime exec` runs in the caller's own process\n"
        log = os.read(log_r, 4096).decode()
        assert log.endswith("isobench-worker[%d]: hands a command back to client pid 4242: `isobench-runtime exec` "
                            "runs in the caller's own process\n" % os.getpid()), log
    finally:
        for fd in (log_r, log_w):
            os.close(fd)
        ours.close()
        theirs.close()
