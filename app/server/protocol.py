"""The isobench server's wire protocol, socket and pidfile rules: pure functions shared by the
daemon, its workers, the ``server`` verbs and the tests (the protocol itself is documented in
:mod:`app.server.daemon`)."""

from __future__ import annotations

import os
import struct

MAGIC = b"ISB1"
HEADER = struct.Struct(">4sI")  # magic, payload length
MAX_REQUEST_BYTES = 4 << 20     # argv + environ of an exec(2) fit in ARG_MAX (2 MiB here); twice that
CLIENT_FDS = 3                  # stdin, stdout, stderr
MAX_ANCILLARY_FDS = 16          # room to see (and refuse) a peer that sends more than three
REQUEST_TIMEOUT_S = 10.0        # a connection that never completes its request is dropped
DEFAULT_SOCKET = "/run/isobench/server.sock"  # run_dir()/server.sock where ISOBENCH_RUN_DIR is unset
SOCKET_ENV = "ISOBENCH_SERVER_SOCKET"  # core.paths.SERVER_SOCKET_ENV
PROCESS_NAME = "isobench-server"
SPARE_NAME = "isobench-spare"  # an idle pre-forked worker; it exits with its server (EOF on its channel)
# The worker acts in the server's namespaces and root: a peer elsewhere is told to run the CLI itself.
PEER_NAMESPACES = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup")
CRASH_SIGNALS = (4, 6, 7, 8, 11, 31)  # SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS: logged
EXIT_CLIENT_SETUP = 125  # the worker could not take over the client's context (docker's "daemon" code)
# ----------------------------------------------------------------------------- protocol (pure)

class Request:
    """One decoded request: what the worker needs to act as the client's own ``isobench`` process."""

    __slots__ = ("umask", "cwd", "argv", "env")

    def __init__(self, umask: int, cwd: bytes, argv: tuple[bytes, ...], env: tuple[bytes, ...]):
        self.umask, self.cwd, self.argv, self.env = umask, cwd, argv, env

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return f"Request(umask={self.umask:04o}, cwd={self.cwd!r}, argv={self.argv!r}, env=<{len(self.env)}>)"


def protocol_error(message: str) -> Exception:
    from core.errors import ServerError

    return ServerError(message)


def _as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else os.fsencode(text)


def encode_request(argv: list[str | bytes], cwd: str | bytes, env: list[str | bytes], umask: int) -> bytes:
    """Header + payload as the C client sends them (the fds travel beside, as SCM_RIGHTS)."""
    fields = [b"%04o" % umask, _as_bytes(cwd), b"%d" % len(argv), *map(_as_bytes, argv), *map(_as_bytes, env)]
    if any(b"\0" in f for f in fields):
        raise ValueError("a request field contains a NUL byte")
    payload = b"".join(f + b"\0" for f in fields)
    return HEADER.pack(MAGIC, len(payload)) + payload


def parse_header(data: bytes) -> int | None:
    """The payload length once ``data`` holds the header, None before; raises ServerError for another
    protocol version, a non-isobench peer or an oversized request."""
    if len(data) < 4:
        if not b"ISB".startswith(bytes(data[:3])):
            raise protocol_error(f"not an isobench request (starts with {bytes(data)!r})")
        return None
    magic = bytes(data[:4])
    if magic != MAGIC:
        if magic.startswith(b"ISB"):
            raise protocol_error(
                f"this isobench server speaks protocol {MAGIC.decode()} but the client sent "
                f"{magic.decode(errors='replace')}: run `make setup` to rebuild the client, or restart the "
                "server (isobench server stop; isobench server start)")
        raise protocol_error(f"not an isobench request (starts with {magic!r})")
    if len(data) < HEADER.size:
        return None
    _, length = HEADER.unpack_from(data)
    if length > MAX_REQUEST_BYTES:
        raise protocol_error(f"request of {length} bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes")
    return length


def decode_payload(payload: bytes) -> Request:
    """The payload's fields; raises ServerError naming what is malformed."""
    if not payload.endswith(b"\0"):
        raise protocol_error("malformed request: the payload does not end with a NUL byte")
    fields = payload[:-1].split(b"\0")
    if len(fields) < 3:
        raise protocol_error(f"malformed request: {len(fields)} fields, need umask, cwd and argc")
    umask_text, cwd, argc_text = fields[:3]
    try:
        umask = int(umask_text, 8)
        argc = int(argc_text)
    except ValueError:
        raise protocol_error(f"malformed request: umask {umask_text[:8]!r} or argc {argc_text[:8]!r} "
                              "is not a number") from None
    if not 0 <= umask <= 0o777:
        raise protocol_error(f"malformed request: umask {umask:o} is out of range")
    if not 1 <= argc <= len(fields) - 3:
        raise protocol_error(f"malformed request: argc {argc} but {len(fields) - 3} strings follow")
    argv = tuple(fields[3:3 + argc])
    env = tuple(fields[3 + argc:])
    return Request(umask=umask, cwd=cwd, argv=argv, env=env)


def code_from_status(status: int) -> int:
    """waitpid status -> shell-style exit code: exit N -> N, killed by signal N -> 128+N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def system_exit_code(exc: BaseException) -> int:
    """The process exit code Python gives ``raise SystemExit(arg)`` (its message printed by the caller)."""
    code = getattr(exc, "code", None)
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def send_with_fds(chan, data: bytes, fds: list[int], first_bytes: int = 1 << 16) -> None:
    """Send ``data`` on a stream socket, ``fds`` (SCM_RIGHTS) with its first ``first_bytes``; raises
    OSError when the peer is gone before it has everything.

    Why not ``sendmsg`` then ``sendall(rest)`` unconditionally: ``sendall(b"")`` still makes one
    send(2), and on a Unix socket whose peer has already read the whole request and closed its end
    that send fails with EPIPE. A spare worker does exactly that when the request fits in the first
    send: the server took the spare for unusable, killed it while it was already running the
    command, and forked a second worker for the same request (seen about once in 50 server starts
    followed at once by a command, and as the "unusable spare" of commands in a row)."""
    import socket

    sent = chan.sendmsg([data[:first_bytes]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                struct.pack(f"{len(fds)}i", *fds))])
    if sent < len(data):
        chan.sendall(data[sent:])


# ----------------------------------------------------------------------------- socket, pidfile

def socket_path(option: str | None = None) -> str:
    """``--socket`` wins, then ``$ISOBENCH_SERVER_SOCKET``, then /run/isobench/server.sock."""
    from core.paths import server_socket

    return str(server_socket(option))


def pidfile_path(sock: str) -> str:
    return sock + ".pid"


def logfile_path(sock: str) -> str:
    return sock + ".log"


def format_pidfile(pid: int, start: int) -> bytes:
    return b"%d %d\n" % (pid, start)


def parse_pidfile(data: bytes) -> tuple[int, int] | None:
    """(pid, start time in clock ticks) from a pidfile's text; None when it is not one."""
    parts = data.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    pid, start = int(parts[0]), int(parts[1])
    return (pid, start) if pid > 0 else None


def read_pidfile(sock: str) -> tuple[int, int] | None:
    try:
        with open(pidfile_path(sock), "rb") as f:
            return parse_pidfile(f.read(64))
    except OSError:
        return None


def server_state(record: tuple[int, int] | None, start_time_of) -> str:
    """``absent`` (no pidfile), ``live`` (its pid runs with the recorded start time) or ``stale`` (dead,
    or the pid was recycled by another process). ``start_time_of(pid)`` -> start time or None."""
    if record is None:
        return "absent"
    pid, start = record
    return "live" if start_time_of(pid) == start else "stale"


def start_time(pid: int) -> int | None:
    from runtime.lifecycle.state import proc_start_time

    return proc_start_time(pid)


def accepts(sock: str) -> bool:
    """True when something listens on ``sock`` (a server without our pidfile still counts)."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(sock)
        return True
    except OSError:
        return False
    finally:
        s.close()


def unlink_quiet(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_stale(sock: str) -> list[str]:
    """Remove the socket and pidfile of a dead server (never a live one); returns what went."""
    record = read_pidfile(sock)
    state = server_state(record, start_time)
    if state == "live" or accepts(sock):
        return []
    removed = []
    if state == "stale" and unlink_quiet(pidfile_path(sock)):
        removed.append(f"server pidfile {pidfile_path(sock)} (pid {record[0]} gone)")
    if os.path.exists(sock):
        import stat

        try:
            is_socket = stat.S_ISSOCK(os.lstat(sock).st_mode)
        except OSError:
            is_socket = False
        if is_socket and unlink_quiet(sock):
            removed.append(f"server socket {sock} (nobody listening)")
    return removed


def gc(paths) -> list[str]:
    """``isobench gc``: a dead server's socket and pidfile (``$ISOBENCH_SERVER_SOCKET`` or the default)."""
    return remove_stale(socket_path())
