"""``isobench server start|stop|status``: a resident fork server, so the ``isobench`` command starts fast.

Why: issue 3 wants ``isobench run --rm busybox true`` end to end no slower than ``runc run`` (~26 ms
here), but a Python interpreter needs 12-17 ms just to start and the CLI's imports ~60 ms more. Like
dockerd (or Android's zygote), this server pays both once: it imports everything the verbs need,
builds the argparse tree, warms the pure caches, then forks one **worker** per command. The
``isobench`` command itself is a small C client (``client.c`` beside this file, installed by
``make setup``) that hands the server its command line and stdio, forwards signals to the worker and
exits with the worker's code. Without a server the client execs the Python CLI (``isobench-py``):
everything works the same, only slower.

Protocol ``ISB1`` (one request per connection; peers must be root or the server's uid)::

    client -> server  b"ISB1" | u32 big-endian payload length | payload; SCM_RIGHTS on the first bytes
                      carries the client's fds 0, 1, 2. The payload is NUL-terminated strings: umask
                      (octal), cwd, argc (decimal), argv[0..argc-1], then every environ entry.
    server -> client  "P <worker pid>\\n"  the command runs (the client forwards its signals to it)
                      "X <code>\\n"        the worker exited: exit N -> N, killed by signal N -> 128+N
                      "E <message>\\n"     refused (other version, malformed, peer not allowed): the
                                          client prints the message and exits 125
                      "F <reason>\\n"      not served here (the peer lives in other namespaces or
                                          another root): the client runs the Python CLI itself

A connection the server closes before it read the whole request is reset (ECONNRESET): the client
then knows nothing ran and falls back to the Python CLI. A plain EOF after the request was read means
the server died; the client reports that rather than risk running the command twice.

The server is single-threaded: one selector over the listening socket, a signal wake-up socket, the
client connections and one pidfd per worker (no SIGCHLD handler). It keeps one **spare** worker forked
ahead, blocked on a socketpair; a request is handed to it (payload + the client's fds + the server's
end of the connection), so the ~1.5 ms fork is not on the client's clock. While it waits, the spare
copies the pages it shares copy-on-write with the server (:func:`_break_cow`), so the command does not
pay those faults either. A worker sends ``X`` itself from ``os._exit`` (before the kernel tears its
address space down); the server's ``X`` after waitpid covers workers killed by a signal. This module
is also the parser module of the ``server`` verb, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import os
import struct

MAGIC = b"ISB1"
HEADER = struct.Struct(">4sI")  # magic, payload length
MAX_REQUEST_BYTES = 4 << 20     # argv + environ of an exec(2) fit in ARG_MAX (2 MiB here); twice that
CLIENT_FDS = 3                  # stdin, stdout, stderr
MAX_ANCILLARY_FDS = 16          # room to see (and refuse) a peer that sends more than three
REQUEST_TIMEOUT_S = 10.0        # a connection that never completes its request is dropped
DEFAULT_SOCKET = "/run/isobench/server.sock"
SOCKET_ENV = "ISOBENCH_SERVER_SOCKET"
PROCESS_NAME = "isobench-server"
SPARE_NAME = "isobench-spare"  # an idle pre-forked worker; it exits with its server (EOF on its channel)
# The worker acts in the server's namespaces and root: a peer elsewhere is told to run the CLI itself.
PEER_NAMESPACES = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup")
CRASH_SIGNALS = (4, 6, 7, 8, 11, 31)  # SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS: logged
EXIT_CLIENT_SETUP = 125  # the worker could not take over the client's context (docker's "daemon" code)
# Preloaded by the server: everything `run` and the other verbs import, so a worker imports nothing.
PRELOAD = (
    "bench.cli", "runtime.api", "runtime.paths", "runtime.spec", "runtime.units", "runtime.errors",
    "runtime.lifecycle.monitor", "runtime.lifecycle.state", "runtime.lifecycle.process", "runtime.lifecycle.gc",
    "runtime.lifecycle.exec", "runtime.lifecycle.cbin", "runtime.image.store", "runtime.security",
    "runtime.cgroups", "runtime.namespaces", "runtime.leases", "runtime.fsutil", "runtime.cli.container",
    "runtime.cli.image", "runtime.network", "runtime.network.container", "runtime.network.bridge",
    "runtime.network.veth", "runtime.network.portmap", "runtime.network.portspec",
    "runtime.network.firewall", "runtime.network.ipam", "runtime.network.nftlib", "runtime.network.cli",
    "bench.cli_gc", "traceback", "selectors", "socket", "resource", "signal", "io", "atexit", "time",
    "calendar", "json", "shlex",
)


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


def _protocol_error(message: str) -> Exception:
    from runtime.errors import ServerError

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
            raise _protocol_error(f"not an isobench request (starts with {bytes(data)!r})")
        return None
    magic = bytes(data[:4])
    if magic != MAGIC:
        if magic.startswith(b"ISB"):
            raise _protocol_error(
                f"this isobench server speaks protocol {MAGIC.decode()} but the client sent "
                f"{magic.decode(errors='replace')}: run `make setup` to rebuild the client, or restart the "
                "server (isobench server stop; isobench server start)")
        raise _protocol_error(f"not an isobench request (starts with {magic!r})")
    if len(data) < HEADER.size:
        return None
    _, length = HEADER.unpack_from(data)
    if length > MAX_REQUEST_BYTES:
        raise _protocol_error(f"request of {length} bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes")
    return length


def decode_payload(payload: bytes) -> Request:
    """The payload's fields; raises ServerError naming what is malformed."""
    if not payload.endswith(b"\0"):
        raise _protocol_error("malformed request: the payload does not end with a NUL byte")
    fields = payload[:-1].split(b"\0")
    if len(fields) < 3:
        raise _protocol_error(f"malformed request: {len(fields)} fields, need umask, cwd and argc")
    umask_text, cwd, argc_text = fields[:3]
    try:
        umask = int(umask_text, 8)
        argc = int(argc_text)
    except ValueError:
        raise _protocol_error(f"malformed request: umask {umask_text[:8]!r} or argc {argc_text[:8]!r} "
                              "is not a number") from None
    if not 0 <= umask <= 0o777:
        raise _protocol_error(f"malformed request: umask {umask:o} is out of range")
    if not 1 <= argc <= len(fields) - 3:
        raise _protocol_error(f"malformed request: argc {argc} but {len(fields) - 3} strings follow")
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


# ----------------------------------------------------------------------------- socket, pidfile

def socket_path(option: str | None = None) -> str:
    """``--socket`` wins, then ``$ISOBENCH_SERVER_SOCKET``, then /run/isobench/server.sock."""
    return os.path.abspath(option or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


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


def _start_time(pid: int) -> int | None:
    from runtime.lifecycle.state import proc_start_time

    return proc_start_time(pid)


def _accepts(sock: str) -> bool:
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


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_stale(sock: str) -> list[str]:
    """Remove the socket and pidfile of a dead server (never a live one); returns what went."""
    record = read_pidfile(sock)
    state = server_state(record, _start_time)
    if state == "live" or _accepts(sock):
        return []
    removed = []
    if state == "stale" and _unlink(pidfile_path(sock)):
        removed.append(f"server pidfile {pidfile_path(sock)} (pid {record[0]} gone)")
    if os.path.exists(sock):
        import stat

        try:
            is_socket = stat.S_ISSOCK(os.lstat(sock).st_mode)
        except OSError:
            is_socket = False
        if is_socket and _unlink(sock):
            removed.append(f"server socket {sock} (nobody listening)")
    return removed


def gc(paths) -> list[str]:
    """``isobench gc``: a dead server's socket and pidfile (``$ISOBENCH_SERVER_SOCKET`` or the default)."""
    return remove_stale(socket_path())


# ----------------------------------------------------------------------------- CLI verbs

def register(sub) -> None:
    p = sub.add_parser("server", help="the resident fork server that makes `isobench` start fast",
                       description="A resident process that has Python and every import loaded and forks "
                                   "a worker per `isobench` command (like dockerd). Without it the "
                                   "command works the same, only slower.")
    verbs = p.add_subparsers(dest="server_command", metavar="ACTION")
    verbs.required = True
    where = f"socket path (default ${SOCKET_ENV}, else {DEFAULT_SOCKET})"
    q = verbs.add_parser("start", help="start a server (returns once it accepts commands)")
    q.add_argument("--socket", metavar="PATH", help=where)
    q.set_defaults(func=_start)
    q = verbs.add_parser("stop", help="stop the server (running commands finish first)")
    q.add_argument("--socket", metavar="PATH", help=where)
    q.add_argument("-t", "--time", type=float, default=10.0, metavar="S",
                   help="seconds to wait for it to exit (default 10)")
    q.set_defaults(func=_stop)
    q = verbs.add_parser("status", help="is a server running? (exit 0 yes, 3 no)")
    q.add_argument("--socket", metavar="PATH", help=where)
    q.set_defaults(func=_status)


def _dir_lock(sock: str) -> int:
    """An flock on the socket's directory: two concurrent ``start``s must not both clear and bind."""
    import fcntl

    d = os.path.dirname(sock)
    os.makedirs(d, mode=0o755, exist_ok=True)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _start(args) -> int:
    from runtime.errors import ServerError

    sock = socket_path(args.socket)
    lock = _dir_lock(sock)
    try:
        record = read_pidfile(sock)
        if server_state(record, _start_time) == "live":
            raise ServerError(f"an isobench server is already running on {sock} (pid {record[0]})")
        if _accepts(sock):
            raise ServerError(f"{sock} is already served by a live process that left no pidfile "
                              f"{pidfile_path(sock)}: stop it, or start with another --socket")
        remove_stale(sock)
        r, w = os.pipe2(os.O_CLOEXEC)
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # double fork + setsid: the daemon is nobody's child and has no terminal
            try:
                os.close(r)
                os.close(lock)
                os.setsid()
                if os.fork() == 0:
                    _daemon(sock, w)
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        reply = b""
        while chunk := os.read(r, 4096):
            reply += chunk
        os.close(r)
    finally:
        os.close(lock)
    text = reply.decode(errors="replace").strip()
    if not text.startswith("ok "):
        raise ServerError(text or f"the isobench server exited during start-up (see {logfile_path(sock)})")
    print(f"isobench server running: pid {text.split()[1]}, socket {sock}, log {logfile_path(sock)}")
    return 0


def _stop(args) -> int:
    import select
    import signal
    import time

    from runtime.errors import ServerError

    sock = socket_path(args.socket)
    record = read_pidfile(sock)
    if record is None:
        raise ServerError(f"no isobench server is running on {sock} (no pidfile {pidfile_path(sock)})")
    pid, start = record
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None
    # checked after pidfd_open: if the start time still matches, the pidfd is that very process
    if pidfd is None or _start_time(pid) != start:
        removed = remove_stale(sock)
        if pidfd is not None:
            os.close(pidfd)
        raise ServerError(f"no isobench server is running on {sock} (pid {pid} is gone"
                          + ("; removed its stale socket and pidfile)" if removed else ")"))
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if os.getppid() == pid:  # run by one of its own workers: it exits once we have
            deadline = time.monotonic() + args.time
            while os.path.exists(pidfile_path(sock)) and time.monotonic() < deadline:
                time.sleep(0.01)
            print(f"isobench server (pid {pid}) stopping")
            return 0
        ready, _, _ = select.select([pidfd], [], [], max(0.0, args.time))
    finally:
        os.close(pidfd)
    if not ready:
        print(f"isobench server (pid {pid}) stopped accepting commands; it exits when the commands it is "
              f"still running finish (more than {args.time:g} s)")
        return 0
    print(f"isobench server (pid {pid}) stopped")
    return 0


def _status(args) -> int:
    sock = socket_path(args.socket)
    record = read_pidfile(sock)
    state = server_state(record, _start_time)
    if state == "live":
        print(f"isobench server running: pid {record[0]}, socket {sock}, log {logfile_path(sock)}")
        return 0
    extra = " (stale pidfile of a dead server: `isobench gc` removes it)" if state == "stale" else ""
    print(f"isobench server not running on {sock}{extra}")
    return 3


# ----------------------------------------------------------------------------- the daemon

def _log(message: str) -> None:
    import sys
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sys.stderr.write(f"{stamp} {PROCESS_NAME}[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


def _preload():
    """Import every verb's modules, build the parser, warm pure caches; returns the parser.

    Only caches that depend on nothing but their arguments are warmed (the default security profile):
    anything derived from a state root, the cgroup mounts or the environment is computed per worker,
    exactly as a fresh CLI would."""
    import gc
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    from bench import cli
    from runtime import api
    from runtime.spec import SecuritySpec

    from runtime.cli.container import config_from_args

    parser = cli.build_parser()
    api._prepared_security(SecuritySpec())  # caps + the compiled default seccomp program
    # one sample parse: argparse and the re module compile and cache their patterns on first use
    # (~1 ms a worker would otherwise pay); config_from_args is pure (no env, no paths)
    config_from_args(parser.parse_args(["run", "--rm", "--network", "none", "busybox", "true"]))
    gc.collect()
    gc.freeze()  # the preloaded heap stays shared with workers (no copy-on-write by the collector)
    return parser


def _bind(sock: str):
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    old = os.umask(0o177)  # the socket file is 0600 from birth: only root (and our uid) may connect
    try:
        s.bind(sock)
    finally:
        os.umask(old)
    s.listen(128)
    return s


def _daemon(sock: str, ready_fd: int) -> None:
    """The grandchild of ``start``: detach, preload, listen, report ``ok <pid>`` (or the error), serve."""
    import signal
    import sys
    import traceback

    from runtime import syscalls
    from runtime.fsutil import atomic_write_bytes

    reported = False
    try:
        os.chdir("/")
        os.umask(0o022)
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(logfile_path(sock), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal: a stray hang-up must not kill it
        syscalls.set_process_name(PROCESS_NAME)
        parser = _preload()
        listener = _bind(sock)
        atomic_write_bytes(__import__("pathlib").Path(pidfile_path(sock)),
                           format_pidfile(os.getpid(), _start_time(os.getpid())), fsync=False)
        _log(f"serving {sock} (python {sys.version.split()[0]}, {len(sys.modules)} modules preloaded)")
        server = Server(listener, sock, parser)
        os.write(ready_fd, f"ok {os.getpid()}\n".encode())
        os.close(ready_fd)
        reported = True
        server.serve()
        _log("stopped")
    except BaseException as exc:  # noqa: BLE001 - report to `start` (or the log) before the process ends
        if not reported:
            from runtime.errors import IsobenchError

            msg = str(exc) if isinstance(exc, IsobenchError) else f"{type(exc).__name__}: {exc}"
            with __import__("contextlib").suppress(OSError):
                os.write(ready_fd, f"could not start the isobench server on {sock}: {msg}\n".encode())
        _log("failed: " + traceback.format_exc().rstrip())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class _Conn:
    """A client connection: reading its request, then waiting for its worker."""

    __slots__ = ("sock", "buf", "fds", "peer_pid", "deadline", "pid", "pidfd", "argv")

    def __init__(self, sock, peer_pid: int, deadline: float):
        self.sock, self.peer_pid, self.deadline = sock, peer_pid, deadline
        self.buf = bytearray()
        self.fds: list[int] = []
        self.pid = 0          # the worker, once forked
        self.pidfd = -1
        self.argv: tuple[bytes, ...] = ()

    def close_fds(self) -> None:
        for fd in self.fds:
            with __import__("contextlib").suppress(OSError):
                os.close(fd)
        self.fds = []


class _Spare:
    """A worker forked ahead of its request, waiting on ``chan`` (the server keeps the other end)."""

    __slots__ = ("pid", "pidfd", "chan")

    def __init__(self, pid: int, pidfd: int, chan):
        self.pid, self.pidfd, self.chan = pid, pidfd, chan


class Server:
    """The serving loop. Host effects: the socket file and pidfile it owns, and one fork per command."""

    def __init__(self, listener, sock: str, parser):
        import selectors
        import signal
        import socket

        self.listener, self.sock_path, self.parser = listener, sock, parser
        self.sock_ino = os.stat(sock).st_ino
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}   # by socket fd
        self.workers: dict[int, _Conn] = {}  # by pidfd
        self.stopping = False
        self.wake_r, self.wake_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)  # the wake-up socket carries it to the loop
        self.sel.register(listener, selectors.EVENT_READ, "accept")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.own_ns = _namespaces(os.getpid())
        self.spare: _Spare | None = None  # the next worker, forked ahead of its request

    # -- loop
    def serve(self) -> None:
        import time

        self._fork_spare()
        while not self.stopping or self.workers or self.spare:
            now = time.monotonic()
            pending = [c.deadline for c in self.conns.values() if not c.pid]
            timeout = max(0.0, min(pending) - now) if pending else None
            for key, _ in self.sel.select(timeout):
                try:
                    self._dispatch(key)
                except Exception as exc:  # noqa: BLE001 - one bad connection must not take the server down
                    import traceback

                    _log(f"error handling {key.data}: {type(exc).__name__}: {exc}\n" + traceback.format_exc())
                    conn = key.data if isinstance(key.data, _Conn) else None
                    if conn is not None and not conn.pid:
                        self._drop(conn)
            now = time.monotonic()
            for conn in [c for c in self.conns.values() if not c.pid and c.deadline <= now]:
                _log(f"dropped a client (pid {conn.peer_pid}) that sent no complete request in "
                     f"{REQUEST_TIMEOUT_S:g} s")
                self._reply(conn.sock, f"E no complete request within {REQUEST_TIMEOUT_S:g} s")
                self._drop(conn)
        self.sel.close()

    def _dispatch(self, key) -> None:
        """One ready fd. An event can be stale: handling an earlier one of the same batch may have
        closed this fd's connection (a worker's exit and its client's EOF arrive together)."""
        tag = key.data
        if tag == "accept":
            self._accept()
        elif tag == "signal":
            self._on_signal()
        elif isinstance(tag, _Conn):
            if tag.sock is not None and key.fileobj is tag.sock:
                self._on_client(tag)
            elif tag.pidfd >= 0 and key.fd == tag.pidfd:
                self._on_worker_exit(tag)
        elif isinstance(tag, _Spare) and tag is self.spare and key.fd == tag.pidfd:
            self._on_spare_exit(tag)

    def _on_signal(self) -> None:
        try:
            data = self.wake_r.recv(64)
        except BlockingIOError:
            return
        if data and not self.stopping:
            self._stop_accepting()

    def _stop_accepting(self) -> None:
        """SIGTERM: no new commands; remove our socket and pidfile; running workers still report."""
        self.stopping = True
        self.sel.unregister(self.listener)
        self.listener.close()  # clients still in the backlog are reset and fall back to the Python CLI
        try:
            if os.stat(self.sock_path).st_ino == self.sock_ino:
                os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        if read_pidfile(self.sock_path) == (os.getpid(), _start_time(os.getpid())):
            _unlink(pidfile_path(self.sock_path))
        for conn in [c for c in self.conns.values() if not c.pid]:
            self._reply(conn.sock, "F the isobench server is stopping")  # nothing ran: the client runs it
            self._drop(conn)
        if self.spare is not None:  # idle, holds nothing: killed, then reaped by the loop
            import signal

            with __import__("contextlib").suppress(OSError):
                signal.pidfd_send_signal(self.spare.pidfd, signal.SIGKILL)
        _log(f"stopping: waiting for {len(self.workers)} running command(s)" if self.workers else "stopping")

    # -- connections
    def _accept(self) -> None:
        import selectors
        import socket
        import time

        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer_pid, peer_uid, _ = struct.unpack("3i", cred)
        if peer_uid not in (0, os.getuid()):
            _log(f"refused pid {peer_pid}: uid {peer_uid} is neither root nor the server's uid {os.getuid()}")
            self._reply(sock, f"E the isobench server on {self.sock_path} serves only root and uid "
                              f"{os.getuid()}, not uid {peer_uid}")
            sock.close()
            return
        conn = _Conn(sock, peer_pid, time.monotonic() + REQUEST_TIMEOUT_S)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _on_client(self, conn: _Conn) -> None:
        import array
        import socket

        if conn.pid:  # the client only ever reads after its request: readable means it is gone
            try:
                data = conn.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                return  # stray bytes from a confused client: ignored
            self._client_gone(conn)
            return
        try:
            data, anc, flags, _ = conn.sock.recvmsg(1 << 16, socket.CMSG_SPACE(MAX_ANCILLARY_FDS * 4),
                                                    socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            _log(f"client pid {conn.peer_pid}: {exc}")
            self._drop(conn)
            return
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
                conn.fds.extend(fds)
        if not data:
            self._drop(conn)  # closed before finishing its request: nothing to do
            return
        conn.buf += data
        try:
            if flags & socket.MSG_CTRUNC or len(conn.fds) > CLIENT_FDS:
                raise _protocol_error(f"a request carries {CLIENT_FDS} file descriptors (stdin, stdout, "
                                      "stderr), this one more")
            length = parse_header(conn.buf)
            if length is None or len(conn.buf) < HEADER.size + length:
                return
            if len(conn.buf) > HEADER.size + length:
                raise _protocol_error("bytes after the end of the request")
            if len(conn.fds) != CLIENT_FDS:
                raise _protocol_error(f"a request carries {CLIENT_FDS} file descriptors (stdin, stdout, "
                                      f"stderr), this one {len(conn.fds)}")
            req = decode_payload(bytes(conn.buf[HEADER.size:]))
        except Exception as exc:  # noqa: BLE001 - ServerError from the decoders; anything else is a bug
            from runtime.errors import ServerError

            if not isinstance(exc, ServerError):
                raise
            _log(f"bad request from pid {conn.peer_pid}: {exc}")
            self._reply(conn.sock, f"E {exc}")
            self._drop(conn)
            return
        elsewhere = self._elsewhere(conn.peer_pid)
        if elsewhere:
            self._reply(conn.sock, f"F {elsewhere}")
            self._drop(conn)
            return
        spare, self.spare = self.spare, None
        if spare is None or not self._hand_over(spare, conn, req):
            self._fork_worker(conn, req)

    def _elsewhere(self, peer_pid: int) -> str:
        """Why the worker could not act for this peer (other namespaces or root), '' when it can."""
        try:
            theirs = _namespaces(peer_pid)
        except OSError as exc:
            return f"cannot inspect the client (pid {peer_pid}): {exc.strerror}"
        differ = [n for n in PEER_NAMESPACES if theirs.get(n) != self.own_ns.get(n)]
        return f"the client is in other namespaces ({', '.join(differ)}) or root" if differ else ""

    def _fork_worker(self, conn: _Conn, req: Request) -> None:
        import selectors
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            _log(f"cannot fork a worker: {exc}")
            self._reply(conn.sock, f"E the isobench server cannot fork a worker: {exc.strerror}")
            self._drop(conn)
            return
        if pid == 0:
            try:
                fds = conn.fds
                conn.fds = []
                peer = conn.peer_pid
                report_fd = os.dup(conn.sock.fileno())
                self._close_in_worker()
                _worker(req, fds, peer, self.parser, report_fd)
            except BaseException:  # noqa: BLE001 - a bug in the worker's set-up: on the client's stderr
                import traceback

                traceback.print_exc()
            finally:
                os._exit(70)  # _worker never returns (EX_SOFTWARE: reaching this is a bug in it)
        with __import__("contextlib").suppress(OSError):
            os.setpgid(pid, pid)  # also done by the worker; whichever runs first wins the race
        conn.close_fds()
        conn.pid, conn.argv = pid, req.argv
        conn.pidfd = os.pidfd_open(pid)
        self.workers[conn.pidfd] = conn
        self.sel.register(conn.pidfd, selectors.EVENT_READ, conn)
        if not self._reply(conn.sock, f"P {pid}"):
            self._client_gone(conn)

    def _close_in_worker(self) -> None:
        """Everything of the server's a worker must not hold (it would keep sockets or pidfds open)."""
        import contextlib
        import signal

        signal.set_wakeup_fd(-1)
        if self.spare is not None:
            self.spare.chan.close()
            with contextlib.suppress(OSError):
                os.close(self.spare.pidfd)
        with contextlib.suppress(OSError):
            self.sel.close()
        for obj in (self.listener, self.wake_r, self.wake_w, *(c.sock for c in self.conns.values())):
            obj.close()
        for conn in {*self.conns.values(), *self.workers.values()}:
            conn.close_fds()
            if conn.pidfd >= 0:
                with contextlib.suppress(OSError):
                    os.close(conn.pidfd)

    def _fork_spare(self) -> None:
        """Fork the next worker now, while no client waits: the fork (~1.5 ms of a client's wall time
        otherwise) is paid ahead. The spare blocks reading its channel until it gets a request."""
        import selectors
        import socket
        import sys

        if self.stopping or self.spare is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            _log(f"cannot fork a spare worker: {exc}")
            ours.close()
            theirs.close()
            return
        if pid == 0:
            try:
                ours.close()
                self._close_in_worker()
                _spare_main(theirs, self.parser)
            except BaseException:  # noqa: BLE001 - a bug in the spare: to the client's stderr or the log
                import traceback

                traceback.print_exc()
            finally:
                os._exit(70)
        theirs.close()
        self.spare = _Spare(pid, os.pidfd_open(pid), ours)
        self.sel.register(self.spare.pidfd, selectors.EVENT_READ, self.spare)

    def _hand_over(self, spare: "_Spare", conn: _Conn, req: Request) -> bool:
        """Give a request to the spare: peer pid and payload, with the client's fds and our end of the
        client connection (for its early ``X``). False when the spare is unusable (then reaped)."""
        import selectors
        import signal
        import socket

        payload = bytes(conn.buf[HEADER.size:])
        head = struct.pack(">iI", conn.peer_pid, len(payload))
        try:
            sent = spare.chan.sendmsg([head + payload[:1 << 16]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      struct.pack(f"{CLIENT_FDS + 1}i", *conn.fds, conn.sock.fileno()))])
            spare.chan.sendall((head + payload)[sent:])
        except OSError as exc:
            _log(f"spare worker {spare.pid} unusable ({exc}): forking one for this request")
            with __import__("contextlib").suppress(OSError):
                signal.pidfd_send_signal(spare.pidfd, signal.SIGKILL)
            self.spare = spare
            self._on_spare_exit(spare)
            return False
        spare.chan.close()
        with __import__("contextlib").suppress(OSError):
            os.setpgid(spare.pid, spare.pid)
        conn.close_fds()
        conn.pid, conn.pidfd, conn.argv = spare.pid, spare.pidfd, req.argv
        self.workers[conn.pidfd] = conn
        self.sel.modify(conn.pidfd, selectors.EVENT_READ, conn)
        if not self._reply(conn.sock, f"P {conn.pid}"):
            self._client_gone(conn)
        return True

    def _on_spare_exit(self, spare: "_Spare") -> None:
        """A spare that ended before getting a request (stop, or a bug): reaped; the next request
        forks its worker directly, then a new spare."""
        _, status = os.waitpid(spare.pid, 0)
        if not self.stopping:
            _log(f"spare worker {spare.pid} ended before its request (status {code_from_status(status)})")
        self.sel.unregister(spare.pidfd)
        os.close(spare.pidfd)
        spare.chan.close()
        if self.spare is spare:
            self.spare = None

    def _client_gone(self, conn: _Conn) -> None:
        """The client died (SIGKILL: it handles every other signal): its command dies with it, as the
        Python CLI process would have; a container's monitor carries on, as it does then. A worker
        that became a foreground container's monitor (``monitor.run_here``, named ``isobench-<id>``)
        is that monitor: it is left to finish (record the exit, ``--rm``)."""
        import signal

        if conn.pidfd >= 0 and conn.pid and not _is_monitor(conn.pid):
            with __import__("contextlib").suppress(OSError):
                signal.pidfd_send_signal(conn.pidfd, signal.SIGKILL)
        self._forget_sock(conn)

    def _on_worker_exit(self, conn: _Conn) -> None:
        import signal

        _, status = os.waitpid(conn.pid, 0)
        code = code_from_status(status)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) in CRASH_SIGNALS:  # not a forwarded signal
            _log(f"worker {conn.pid} ({' '.join(os.fsdecode(a) for a in conn.argv[:4])} ...) crashed: "
                 f"{signal.Signals(os.WTERMSIG(status)).name}")
        self.sel.unregister(conn.pidfd)
        del self.workers[conn.pidfd]
        os.close(conn.pidfd)
        conn.pidfd = -1
        if conn.sock is not None:
            self._reply(conn.sock, f"X {code}")
            self._forget_sock(conn)
        self._fork_spare()  # after its command, not during: the fork does not compete with it for CPUs

    def _forget_sock(self, conn: _Conn) -> None:
        if conn.sock is None:
            return
        self.sel.unregister(conn.sock)
        del self.conns[conn.sock.fileno()]
        conn.sock.close()
        conn.sock = None

    def _drop(self, conn: _Conn) -> None:
        conn.close_fds()
        self._forget_sock(conn)

    @staticmethod
    def _reply(sock, line: str) -> bool:
        import socket

        try:
            sock.send((line.replace("\n", " ") + "\n").encode(errors="replace"), socket.MSG_NOSIGNAL)
            return True
        except OSError:
            return False


def _namespaces(pid: int) -> dict[str, tuple[int, int]]:
    out = {}
    for ns in PEER_NAMESPACES:
        try:
            st = os.stat(f"/proc/{pid}/ns/{ns}")
        except FileNotFoundError:
            continue  # a kernel without this namespace type: the same for both
        out[ns] = (st.st_dev, st.st_ino)
    st = os.stat(f"/proc/{pid}/root")
    out["root"] = (st.st_dev, st.st_ino)
    return out


# ----------------------------------------------------------------------------- the worker

# Dispositions of a freshly started `isobench` (Python's own start-up choices), restored in a worker.
def _fresh_dispositions() -> dict:
    import signal

    table = {s: signal.SIG_DFL for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                                         signal.SIGUSR2, signal.SIGCHLD, signal.SIGWINCH)}
    table.update({signal.SIGINT: signal.default_int_handler, signal.SIGPIPE: signal.SIG_IGN,
                  signal.SIGXFSZ: signal.SIG_IGN})
    return table


def _adopt_limits(peer_pid: int) -> None:
    """The client's nice value and rlimits (best effort: the client may be gone, or ask for more than
    we may grant), so ``nice isobench ...`` and ``ulimit`` apply as they would to the Python CLI."""
    import resource

    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, peer_pid))
    except OSError:
        pass
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            r = getattr(resource, name)
            try:
                resource.setrlimit(r, resource.prlimit(peer_pid, r))
            except (OSError, ValueError):
                pass


def _fresh_stdio(encoding: str, errors: str) -> None:
    """New sys.std* over the client's fds, buffered as a fresh interpreter would (line-buffered on a
    terminal); the encoding stays the server's (chosen at its start-up from the locale)."""
    import sys

    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False, encoding=encoding, errors=errors)
    sys.stdout = sys.__stdout__ = open(1, "w", closefd=False, encoding=encoding, errors=errors)
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False, encoding=encoding,
                                       errors="backslashreplace")


def _spare_main(chan, parser) -> None:
    """A spare worker: wait for the server to hand over a request, then become its worker. EOF (the
    server stopped, or died) ends it quietly."""
    import array
    import contextlib
    import signal
    import socket

    from runtime import syscalls

    for sig, handler in _fresh_dispositions().items():  # a plain SIGTERM ends an idle spare
        signal.signal(sig, handler)
    with contextlib.suppress(OSError):
        syscalls.set_process_name(SPARE_NAME)  # the leak check tells spares from leaks by it
    _break_cow(chan.fileno())
    data, anc, _, _ = chan.recvmsg(1 << 16, socket.CMSG_SPACE((CLIENT_FDS + 1) * 4), socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
    if len(data) < 8 or len(fds) != CLIENT_FDS + 1:
        os._exit(0)
    peer_pid, length = struct.unpack(">iI", data[:8])
    while len(data) < 8 + length:
        chunk = chan.recv(1 << 20)
        if not chunk:
            os._exit(0)
        data += chunk
    chan.close()
    _worker(decode_payload(data[8:8 + length]), list(fds[:CLIENT_FDS]), peer_pid, parser, fds[CLIENT_FDS])


MADV_POPULATE_WRITE = 23  # Linux 5.14


def _break_cow(wake_fd: int) -> int:
    """Copy, while idle, every page this spare still shares copy-on-write with the server.

    Why: a worker writes to ~1,500 of the server's pages while it runs a command (reference counts,
    the heap, module dicts), and on these nested-virtualised machines each copy-on-write fault costs
    ~3 us: milliseconds on the client's clock (measured: ~1,450 faults per ``run --rm`` without this,
    ~670 with it, and ~3 ms less wall time). A spare has nothing else to do, so it takes those faults
    ahead (``MADV_POPULATE_WRITE`` on the present, not exclusively mapped pages /proc/self/pagemap
    shows), at the price of a private copy of the server's heap for the one spare. Stops early when a
    request arrives (``wake_fd`` readable). Returns the pages touched; 0 where the kernel has neither
    the madvise nor pagemap (everything then works as before, only slower)."""
    import ctypes
    import select

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/maps", "rb") as f:
            maps = f.read().splitlines()
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return 0
    touched = 0
    try:
        for lo, hi in private_writable_ranges(maps):
            if select.select([wake_fd], [], [], 0)[0]:
                break  # a request waits: serve it now
            data = os.pread(pagemap, (hi - lo) // page * 8, lo // page * 8)
            for first, count in shared_page_runs(struct.unpack(f"<{len(data) // 8}Q", data)):
                if madvise(lo + first * page, count * page, MADV_POPULATE_WRITE) == 0:
                    touched += count
    except OSError:
        pass
    finally:
        os.close(pagemap)
    return touched


def private_writable_ranges(maps_lines: list[bytes]) -> list[tuple[int, int]]:
    """(start, end) of the private writable mappings in /proc/<pid>/maps lines, but the stack."""
    out = []
    for line in maps_lines:
        parts = line.split()
        if len(parts) < 2 or parts[1] != b"rw-p" or (len(parts) > 5 and parts[5] == b"[stack]"):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split(b"-"))
        out.append((lo, hi))
    return out


def shared_page_runs(entries: tuple[int, ...]) -> list[tuple[int, int]]:
    """(first page, count) runs of pagemap entries that are present (bit 63) but not exclusively
    mapped (bit 56): the pages a write would copy."""
    runs, start = [], -1
    for i, e in enumerate(entries + (0,)):
        shared = bool(e >> 63) and not (e >> 56) & 1
        if shared and start < 0:
            start = i
        elif not shared and start >= 0:
            runs.append((start, i - start))
            start = -1
    return runs


def _report_exit_early(report_fd: int) -> None:
    """Make this worker's ``os._exit(code)`` send ``X code`` to the client itself, after flushing stdio.

    Why: the server learns the code only from waitpid, after the kernel has torn the worker's address
    space down (~1.5 ms of the client's wall time). Every exit path of a worker ends in ``os._exit``
    (``isobench run`` calls it itself), so reporting there is exact; the server's ``X`` after waitpid
    stays the fallback for a worker killed by a signal (a second ``X`` finds the client gone)."""
    import contextlib
    import sys

    real_exit, me = os._exit, os.getpid()
    # not the monitor's to hold; closed in our direct children only (by then the number may mean
    # another file in a grandchild, whose fork runs this hook again)
    os.register_at_fork(after_in_child=lambda: os.getppid() == me and _close_quietly(report_fd))

    def exit_reporting(code: int) -> None:
        if os.getpid() == me:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            with contextlib.suppress(OSError):
                os.write(report_fd, b"X %d\n" % (code & 0xFF))
        real_exit(code)

    os._exit = exit_reporting


def _is_monitor(pid: int) -> bool:
    """Whether our worker ``pid`` (not reaped yet, so the number is still its) now monitors a container."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            name = f.read().strip()
    except OSError:
        return False
    # not our own name (a worker forked just now has not renamed itself yet) nor a spare's
    return name.startswith(b"isobench-") and name not in (SPARE_NAME.encode(), PROCESS_NAME.encode())


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _worker(req: Request, fds: list[int], peer_pid: int, parser, report_fd: int = -1) -> None:
    """Become the client's ``isobench`` process, run ``bench.cli.main`` and exit with its code."""
    import signal
    import sys

    if report_fd >= 0:
        _report_exit_early(report_fd)

    from runtime import syscalls
    from runtime.lifecycle import monitor

    monitor.WORKER_IS_MONITOR = True  # a foreground `run` needs no forked monitor (see run_here)

    for sig, handler in _fresh_dispositions().items():
        signal.signal(sig, handler)
    with __import__("contextlib").suppress(OSError):
        syscalls.set_process_name("isobench")  # what ps shows for the Python CLI
    with __import__("contextlib").suppress(OSError):
        os.setpgid(0, 0)  # own process group: terminal signals the client forwards reach its children too
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    try:
        os.chdir(req.cwd)
    except OSError as exc:
        os.write(2, b"isobench: cannot enter the working directory " + req.cwd + b": "
                 + (exc.strerror or str(exc)).encode() + b"\n")
        os._exit(EXIT_CLIENT_SETUP)
    os.environ.clear()
    for entry in req.env:
        key, sep, value = entry.partition(b"=")
        if sep and key:
            os.environb[key] = value
    os.umask(req.umask)
    _adopt_limits(peer_pid)
    import time

    time.tzset()  # the client's TZ
    _fresh_stdio(encoding, errors)
    argv = [os.fsdecode(a) for a in req.argv]
    sys.argv = argv
    os._exit(_run_cli(argv[1:], parser))


def _run_cli(args: list[str], parser) -> int:
    """``bench.cli.main`` with the console script's exit semantics; returns the process exit code."""
    import sys
    import traceback

    from bench import cli

    try:
        code = cli.main(args, parser=parser)
    except SystemExit as exc:
        code = system_exit_code(exc)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130  # what a Python process killed by its own SIGINT reports to the shell
    except BaseException:  # noqa: BLE001 - as the interpreter does: traceback on stderr, exit 1
        traceback.print_exc()
        code = 1
    return _finish(code)


def _finish(code: int) -> int:
    """What interpreter exit would do that matters: join threads, atexit handlers, flush stdio."""
    import atexit
    import sys

    if "threading" in sys.modules:
        shutdown = getattr(sys.modules["threading"], "_shutdown", None)
        if shutdown is not None:
            shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if code == 0:
                code = 120  # Python's code when flushing stdout at exit fails
    return code


# ----------------------------------------------------------------------------- the C client

CLIENT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "client.c")


def is_client_binary(path: str) -> bool:
    """True for a compiled client (an ELF file), False for pip's Python console script or nothing."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def compile_client(out: str, cc: str | None = None) -> str:
    """``gcc -O2`` the client to ``out`` (atomically); raises ServerError when no compiler works."""
    import shutil
    import subprocess

    from runtime.errors import ServerError

    cc = cc or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ServerError("no C compiler (gcc) to build the isobench client")
    tmp = f"{out}.tmp-pid{os.getpid()}"
    proc = subprocess.run([cc, "-O2", "-Wall", "-o", tmp, CLIENT_SOURCE], capture_output=True, text=True)
    if proc.returncode != 0:
        _unlink(tmp)
        raise ServerError(f"building the isobench client failed: {proc.stderr.strip()[-400:]}")
    os.replace(tmp, out)
    return out


def ensure_client(bin_dir: str) -> str:
    """A compiled client whose fallback runs this interpreter's CLI: the installed ``isobench`` when
    ``make setup`` built it, else one compiled into ``bin_dir`` beside an ``isobench-py`` script (so
    tests and benchmarks do not depend on set-up order). Raises ServerError without a compiler."""
    import sys

    installed = os.path.join(os.path.dirname(sys.executable), "isobench")
    if is_client_binary(installed) and os.path.exists(installed + "-py"):
        return installed
    os.makedirs(bin_dir, exist_ok=True)
    out = compile_client(os.path.join(bin_dir, "isobench"))
    script = os.path.join(bin_dir, "isobench-py")
    with open(script, "w", encoding="utf-8") as f:  # what pip writes as the console script
        f.write(f"#!{sys.executable}\nimport sys\nfrom bench.cli import entry\nsys.exit(entry())\n")
    os.chmod(script, 0o755)
    return out
