"""The isobench server's pure parts: the ISB1 request format, exit-status conversion, the pidfile and
its stale/live logic, socket path precedence and the ``server`` verbs' parser (no root, no server)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from app.commands import server as C
from app.server import daemon as D
from app.server import protocol as P
from app.server import worker as W
from core.errors import ServerError


def test_request_round_trip_keeps_bytes_exactly():
    argv = ["isobench", "run", "--rm", "busybox", "sh", "-c", "echo 'a b'; exit 3", b"\xff\xfe"]
    env = ["ISOBENCH_ROOT=/tmp/x", "EMPTY=", b"RAW=\xc3("]
    data = P.encode_request(argv, "/home/u/d ir", env, 0o027)
    assert data[:4] == b"ISB1"
    length = P.parse_header(data)
    assert length == len(data) - P.HEADER.size
    req = P.decode_payload(data[P.HEADER.size:])
    assert req.umask == 0o027
    assert req.cwd == b"/home/u/d ir"
    assert req.argv == tuple(os.fsencode(a) if isinstance(a, str) else a for a in argv)
    assert req.env == (b"ISOBENCH_ROOT=/tmp/x", b"EMPTY=", b"RAW=\xc3(")


def test_request_without_environment():
    data = P.encode_request(["isobench"], "/", [], 0)
    req = P.decode_payload(data[P.HEADER.size:])
    assert (req.argv, req.env, req.umask) == ((b"isobench",), (), 0)


def test_encode_refuses_nul_bytes():
    with pytest.raises(ValueError):
        P.encode_request(["isobench", "a\0b"], "/", [], 0o022)


@pytest.mark.parametrize("prefix", [b"", b"I", b"IS", b"ISB", b"ISB1", b"ISB1\0\0\0"])
def test_header_incomplete_is_not_an_error(prefix):
    assert P.parse_header(prefix) is None


def test_header_other_version_names_both():
    with pytest.raises(ServerError, match="speaks protocol ISB1 but the client sent ISB2"):
        P.parse_header(b"ISB2\0\0\0\1")


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"X", b"IX"])
def test_header_garbage(data):
    with pytest.raises(ServerError, match="not an isobench request"):
        P.parse_header(data)


def test_header_oversized():
    with pytest.raises(ServerError, match="exceeds the limit"):
        P.parse_header(struct.pack(">4sI", b"ISB1", P.MAX_REQUEST_BYTES + 1))
    assert P.parse_header(struct.pack(">4sI", b"ISB1", P.MAX_REQUEST_BYTES)) == P.MAX_REQUEST_BYTES


@pytest.mark.parametrize("payload,needle", [
    (b"0022\0/\0" + b"1\0isobench", "does not end with a NUL"),
    (b"0022\0/\0", "need umask, cwd and argc"),
    (b"0022\0/\0" + b"0\0", "argc 0"),
    (b"0022\0/\0" + b"3\0a\0b\0", "argc 3 but 2 strings"),
    (b"zz\0/\0" + b"1\0a\0", "is not a number"),
    (b"0022\0/\0" + b"one\0a\0", "is not a number"),
    (b"7777\0/\0" + b"1\0a\0", "out of range"),
])
def test_malformed_payloads(payload, needle):
    with pytest.raises(ServerError, match=needle):
        P.decode_payload(payload)


@pytest.mark.parametrize("status,code", [
    (0, 0), (3 << 8, 3), (255 << 8, 255),   # exit N -> N
    (9, 137), (15, 143), (2, 130), (11, 139),  # killed by signal N -> 128+N
    (11 | 0x80, 139),                          # ... with a core dump
])
def test_code_from_status(status, code):
    assert P.code_from_status(status) == code


@pytest.mark.parametrize("arg,code", [(None, 0), (0, 0), (2, 2), (130, 130), ("a message", 1)])
def test_system_exit_code(arg, code):
    assert P.system_exit_code(SystemExit(arg)) == code


def test_pidfile_format_round_trip_and_garbage():
    assert P.parse_pidfile(P.format_pidfile(1234, 987654)) == (1234, 987654)
    for junk in (b"", b"12", b"12 x", b"-1 5", b"0 5", b"1 2 3", b"\xff\xff"):
        assert P.parse_pidfile(junk) is None


def test_server_state_live_stale_absent():
    starts = {100: 5000}
    assert P.server_state(None, starts.get) == "absent"
    assert P.server_state((100, 5000), starts.get) == "live"
    assert P.server_state((100, 4999), starts.get) == "stale"  # pid recycled by another process
    assert P.server_state((101, 5000), starts.get) == "stale"  # dead


def test_remove_stale_removes_a_dead_servers_files(tmp_path):
    sock = str(tmp_path / "s.sock")
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(sock)  # a socket file nobody listens on: what a killed server leaves
    bound.close()
    (tmp_path / "s.sock.pid").write_bytes(P.format_pidfile(2**22 + 7, 1))  # above pid_max: never alive
    removed = P.remove_stale(sock)
    assert len(removed) == 2 and "pid 4194311 gone" in removed[0]
    assert not os.path.exists(sock) and not os.path.exists(sock + ".pid")
    assert P.remove_stale(sock) == []


def test_remove_stale_never_touches_a_live_server(tmp_path):
    from runtime.lifecycle.state import proc_start_time

    sock = str(tmp_path / "s.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(sock)
    live.listen(1)
    try:
        (tmp_path / "s.sock.pid").write_bytes(P.format_pidfile(os.getpid(), proc_start_time(os.getpid())))
        assert P.remove_stale(sock) == []
        os.unlink(sock + ".pid")  # listening without a pidfile: still somebody's
        assert P.remove_stale(sock) == []
        assert os.path.exists(sock)
    finally:
        live.close()


def test_remove_stale_leaves_a_non_socket_alone(tmp_path):
    path = tmp_path / "s.sock"
    path.write_text("not a socket")
    assert P.remove_stale(str(path)) == []
    assert path.exists()


def test_socket_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(P.SOCKET_ENV, raising=False)
    assert P.socket_path() == P.DEFAULT_SOCKET
    monkeypatch.setenv(P.SOCKET_ENV, str(tmp_path / "env.sock"))
    assert P.socket_path() == str(tmp_path / "env.sock")
    assert P.socket_path(str(tmp_path / "opt.sock")) == str(tmp_path / "opt.sock")
    assert P.pidfile_path("/x/s.sock") == "/x/s.sock.pid" and P.logfile_path("/x/s.sock") == "/x/s.sock.log"


def test_server_verbs_parse():
    from app.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["server", "start", "--socket", "/tmp/a.sock"])
    assert args.func is C._start and args.socket == "/tmp/a.sock"
    args = parser.parse_args(["server", "stop", "-t", "3"])
    assert args.func is C._stop and args.time == 3.0 and args.socket is None
    assert parser.parse_args(["server", "status"]).func is C._status
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["server"])
    assert exc.value.code == 2


def test_cli_main_accepts_a_prebuilt_parser(capsys):
    """The server builds the argparse tree once and hands it to every worker's ``main``."""
    from app import cli

    parser = cli.build_parser()
    with pytest.raises(SystemExit) as exc:
        cli.main(["run"], parser=parser)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("isobench run: ") and err.count("\n") == 1  # one prefix, not "isobench: isobench run:"


def test_parser_module_imports_nothing_heavy():
    """``server`` is registered in every `isobench` start: its module level stays stdlib-light."""
    import subprocess
    import sys

    code = ("import sys; before=set(sys.modules); import app.commands.server; "
            "print(sorted(m for m in set(sys.modules)-before if not m.startswith(('runtime', 'app', 'core'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) <= {"struct", "_struct", "__future__"}, out


def test_is_client_binary(tmp_path):
    script = tmp_path / "isobench"
    script.write_text("#!/usr/bin/python3\nimport sys\n")
    assert not D.is_client_binary(str(script))
    assert not D.is_client_binary(str(tmp_path / "missing"))
    elf = tmp_path / "elf"
    elf.write_bytes(b"\x7fELF\x02\x01\x01")
    assert D.is_client_binary(str(elf))


def test_private_writable_ranges_skip_stack_shared_and_readonly():
    maps = [b"55d0a000-55d0c000 rw-p 00000000 00:00 0                          [heap]",
            b"7f00000000-7f00002000 r-xp 00000000 fd:01 123                   /usr/lib/libc.so.6",
            b"7f00002000-7f00003000 rw-p 00002000 fd:01 123                   /usr/lib/libc.so.6",
            b"7f10000000-7f10001000 rw-s 00000000 00:05 9                     /dev/zero (deleted)",
            b"7ffc0000-7ffc2000 rw-p 00000000 00:00 0                          [stack]",
            b"7f20000000-7f20004000 rw-p 00000000 00:00 0"]
    assert W.private_writable_ranges(maps) == [(0x55D0A000, 0x55D0C000), (0x7F00002000, 0x7F00003000),
                                                 (0x7F20000000, 0x7F20004000)]


def test_shared_page_runs_are_present_and_not_exclusive():
    present, exclusive = 1 << 63, 1 << 56
    entries = (present, present, present | exclusive, 0, present, present | exclusive, present)
    assert W.shared_page_runs(entries) == [(0, 2), (4, 1), (6, 1)]
    assert W.shared_page_runs(()) == [] and W.shared_page_runs((present | exclusive, 0)) == []


def test_is_monitor_by_name(monkeypatch):
    """Only a worker renamed isobench-<id> is a monitor: not a fresh fork (the server's name), not a
    spare, not a plain worker, not a process that is gone."""
    import builtins
    import io

    names = {1: b"isobench-0a1b2c\n", 2: b"isobench-server\n", 3: b"isobench-spare\n", 4: b"isobench\n"}
    real_open = builtins.open

    def fake_open(path, mode="r", *a, **k):
        if isinstance(path, str) and path.startswith("/proc/") and path.endswith("/comm"):
            pid = int(path.split("/")[2])
            if pid not in names:
                raise FileNotFoundError(path)
            return io.BytesIO(names[pid])
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert [W.is_monitor(p) for p in (1, 2, 3, 4, 5)] == [True, False, False, False, False]


class _PeerReadsAtOnce:
    """A channel whose peer (a spare worker) reads the whole request and closes its end as soon as the
    first send returns: the interleaving that made the server take a working spare for a dead one."""

    def __init__(self):
        self.ours, self.theirs = socket.socketpair()
        self.received = b""

    def sendmsg(self, buffers, ancdata):
        sent = self.ours.sendmsg(buffers, ancdata)
        self.received, _, _, _ = self.theirs.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 4))
        self.theirs.close()
        return sent

    def sendall(self, data):
        return self.ours.sendall(data)


def test_send_with_fds_whole_request_in_one_send_survives_the_peer_closing():
    chan = _PeerReadsAtOnce()
    try:
        P.send_with_fds(chan, b"x" * 100, [0, 1, 2])
        assert chan.received == b"x" * 100
    finally:
        chan.ours.close()


def test_send_with_fds_sends_the_rest_and_reports_a_peer_gone_mid_request():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        P.send_with_fds(ours, b"abcdefgh", [0], first_bytes=3)
        assert theirs.recv(3) == b"abc" and theirs.recv(16) == b"defgh"
    ours, theirs = socket.socketpair()
    theirs.close()
    with ours, pytest.raises(OSError):
        P.send_with_fds(ours, b"abcdefgh", [0], first_bytes=3)
