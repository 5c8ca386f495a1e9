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
                      (octal), cwd, argc (decimal), argv[0..argc-1] (argv[0] is the client's
                      program: ``isobench`` or ``isobench-runtime``), then every environ entry.
    server -> client  "P <worker pid>\\n"  the command runs (the client forwards its signals to it)
                      "X <code>\\n"        the worker exited: exit N -> N, killed by signal N -> 128+N
                      "E <message>\\n"     refused (other version, malformed, peer not allowed): the
                                          client prints the message and exits 125
                      "F <reason>\\n"      not served here (the peer lives in other namespaces or
                                          another root): the client runs the Python CLI itself
    worker -> client  "S <new|host|join> <argv0> <path>\\n" (isobench-runtime create) with SCM_RIGHTS:
                                          a reply pipe, the fds 0..5 of a process to fork and exec as
                                          the client's own child (in a new PID namespace, the client's,
                                          or the one sent); the client writes "<pid>\\n" or
                                          "E <message>\\n" to the pipe
                      "F <reason>\\n"      (any time before its X) a verb that must be the caller's
                                          own process: the client runs the Python CLI itself

A connection the server closes before it read the whole request is reset (ECONNRESET): the client
then knows nothing ran and falls back to the Python CLI. A plain EOF after the request was read means
the server died; the client reports that rather than risk running the command twice.

The server is single-threaded: one selector over the listening socket, a signal wake-up socket, the
client connections and one pidfd per worker (no SIGCHLD handler). It keeps one **spare** worker forked
ahead, blocked on a socketpair; a request is handed to it (payload + the client's fds + the server's
end of the connection), so the ~1.5 ms fork is not on the client's clock. While it waits, the spare
copies the pages it shares copy-on-write with the server (:func:`_break_cow`), so the command does not
pay those faults either. A worker sends ``X`` itself from ``os._exit`` (before the kernel tears its
address space down); the server's ``X`` after waitpid covers workers killed by a signal. The next
spare is forked once the command is over for its client (its connection closes, or its worker is
reaped, whichever comes first), never while the client waits. This module
is also the parser module of the ``server`` verb, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import os
import struct

from app.server.protocol import CLIENT_FDS, CRASH_SIGNALS, HEADER, MAX_ANCILLARY_FDS, PEER_NAMESPACES, PROCESS_NAME, REQUEST_TIMEOUT_S, Request, code_from_status, decode_payload, format_pidfile, logfile_path, parse_header, pidfile_path, protocol_error, read_pidfile, send_with_fds, start_time, unlink_quiet
from app.server.worker import is_monitor, run_worker, spare_main

# The CLI the server serves is passed in (``app.cli``): ``preload() -> parser`` imports and
# warms everything once; ``serve(argv, session, parser=parser) -> exit code`` runs one command in a
# worker (argv[0] names the client's program: ``isobench`` or ``isobench-runtime``).
# (No typing.Protocol here: this module is on every `isobench` start's import path.)



# ----------------------------------------------------------------------------- the daemon

def _log(message: str) -> None:
    import sys
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sys.stderr.write(f"{stamp} {PROCESS_NAME}[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


def _preload(app: "object"):
    """The application's :meth:`CliApp.preload` (imports, parser, warm pure caches), then freeze the heap;
    returns the function a worker runs: ``argv -> exit code``."""
    import functools
    import gc

    parser = app.preload()
    gc.collect()
    gc.freeze()  # the preloaded heap stays shared with workers (no copy-on-write by the collector)
    return functools.partial(app.serve, parser=parser)


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


def run_daemon(sock: str, ready_fd: int, app: "object", idle_timeout_s: float = 0.0) -> None:
    """The grandchild of ``start``: detach, preload ``app``, listen, report ``ok <pid>`` (or the error),
    serve. ``app`` is the CLI the workers run (passed in: the server sits below the CLI it serves).
    ``idle_timeout_s`` > 0: stop after that long without a client or a running command."""
    import signal
    import sys
    import traceback

    from core import syscalls
    from core.fsutil import atomic_write_bytes

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
        run_cli = _preload(app)
        listener = _bind(sock)
        atomic_write_bytes(__import__("pathlib").Path(pidfile_path(sock)),
                           format_pidfile(os.getpid(), start_time(os.getpid())), fsync=False)
        idle = f", exits after {idle_timeout_s:g} s idle" if idle_timeout_s > 0 else ""
        _log(f"serving {sock} (python {sys.version.split()[0]}, {len(sys.modules)} modules preloaded{idle})")
        server = Server(listener, sock, run_cli, idle_timeout_s)
        os.write(ready_fd, f"ok {os.getpid()}\n".encode())
        os.close(ready_fd)
        reported = True
        server.serve()
        _log("stopped")
    except BaseException as exc:  # noqa: BLE001 - report to `start` (or the log) before the process ends
        if not reported:
            from core.errors import IsobenchError

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

    def __init__(self, listener, sock: str, run_cli, idle_timeout_s: float = 0.0):
        import selectors
        import signal
        import socket
        import time

        self.listener, self.sock_path, self.run_cli = listener, sock, run_cli
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
        self.own_client = own_client_path()
        self.spare: _Spare | None = None  # the next worker, forked ahead of its request
        # Started on first use by the client: exit after this long without clients (Bazel/Gradle style),
        # so a server nobody asked for by hand does not stay resident for ever. 0: never.
        self.idle_timeout_s = idle_timeout_s
        self.last_busy = time.monotonic()

    # -- loop
    def serve(self) -> None:
        import time

        self._fork_spare()
        while not self.stopping or self.workers or self.spare:
            now = time.monotonic()
            pending = [c.deadline for c in self.conns.values() if not c.pid]
            if self.idle_timeout_s > 0 and not self.stopping:
                pending.append(self._idle_deadline(now))
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
            if self.idle_timeout_s > 0 and not self.stopping and self._idle_deadline(now) <= now:
                _log(f"idle for {self.idle_timeout_s:g} s: exiting")
                self._stop_accepting()
        self.sel.close()

    def _idle_deadline(self, now: float) -> float:
        """When the server has been idle long enough: never while a client or command is there."""
        if self.conns or self.workers:
            self.last_busy = now
        return self.last_busy + self.idle_timeout_s

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
        if read_pidfile(self.sock_path) == (os.getpid(), start_time(os.getpid())):
            unlink_quiet(pidfile_path(self.sock_path))
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
                raise protocol_error(f"a request carries {CLIENT_FDS} file descriptors (stdin, stdout, "
                                      "stderr), this one more")
            length = parse_header(conn.buf)
            if length is None or len(conn.buf) < HEADER.size + length:
                return
            if len(conn.buf) > HEADER.size + length:
                raise protocol_error("bytes after the end of the request")
            if len(conn.fds) != CLIENT_FDS:
                raise protocol_error(f"a request carries {CLIENT_FDS} file descriptors (stdin, stdout, "
                                      f"stderr), this one {len(conn.fds)}")
            req = decode_payload(bytes(conn.buf[HEADER.size:]))
        except Exception as exc:  # noqa: BLE001 - ServerError from the decoders; anything else is a bug
            from core.errors import ServerError

            if not isinstance(exc, ServerError):
                raise
            _log(f"bad request from pid {conn.peer_pid}: {exc}")
            self._reply(conn.sock, f"E {exc}")
            self._drop(conn)
            return
        elsewhere = self._elsewhere(conn.peer_pid)
        if elsewhere:
            _log(f"client pid {conn.peer_pid} runs its own CLI: {elsewhere}")
            self._reply(conn.sock, f"F {elsewhere}")
            self._drop(conn)
            return
        spare, self.spare = self.spare, None
        if spare is None:
            self._fork_worker(conn, req, "no spare")
        elif not self._hand_over(spare, conn, req):
            self._fork_worker(conn, req, "the spare was unusable")

    def _elsewhere(self, peer_pid: int) -> str:
        """Why the worker could not act for this peer (other namespaces or root), '' when it can."""
        try:
            theirs = _namespaces(peer_pid)
        except OSError as exc:
            return f"cannot inspect the client (pid {peer_pid}): {exc.strerror}"
        differ = [n for n in PEER_NAMESPACES if theirs.get(n) != self.own_ns.get(n)]
        if differ:
            return f"the client is in other namespaces ({', '.join(differ)}) or root"
        return other_installation(peer_pid, self.own_client)

    def _fork_worker(self, conn: _Conn, req: Request, why: str) -> None:
        """Fork this request's worker now, on the client's clock: ``why`` there was no spare to take it
        (logged; the live server test counts these)."""
        import selectors

        def worker() -> None:
            fds = conn.fds
            conn.fds = []
            peer = conn.peer_pid
            report_fd = os.dup(conn.sock.fileno())
            self._close_in_worker()
            run_worker(req, fds, peer, self.run_cli, report_fd)

        try:
            pid = _fork_child(worker)
        except OSError as exc:
            _log(f"cannot fork a worker: {exc}")
            self._reply(conn.sock, f"E the isobench server cannot fork a worker: {exc.strerror}")
            self._drop(conn)
            return
        _log(f"forked worker {pid} for client pid {conn.peer_pid} (no usable spare: {why})")
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

        if self.stopping or self.spare is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)

        def spare() -> None:
            ours.close()
            self._close_in_worker()
            spare_main(theirs, self.run_cli)

        try:
            pid = _fork_child(spare)
        except OSError as exc:
            _log(f"cannot fork a spare worker: {exc}")
            ours.close()
            theirs.close()
            return
        theirs.close()
        self.spare = _Spare(pid, os.pidfd_open(pid), ours)
        self.sel.register(self.spare.pidfd, selectors.EVENT_READ, self.spare)

    def _hand_over(self, spare: "_Spare", conn: _Conn, req: Request) -> bool:
        """Give a request to the spare: peer pid and payload, with the client's fds and our end of the
        client connection (for its early ``X``). False when the spare is unusable (then reaped)."""
        import selectors
        import signal

        payload = bytes(conn.buf[HEADER.size:])
        head = struct.pack(">iI", conn.peer_pid, len(payload))
        try:
            send_with_fds(spare.chan, head + payload, [*conn.fds, conn.sock.fileno()])
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
        """The client closed its connection after its request: it read the worker's own early ``X``
        and exited (the usual end of a command), or it died (SIGKILL: it handles every other signal).
        A command still running dies with its client, as the Python CLI process would have; a worker
        that became a foreground container's monitor (``monitor.run_here``, named ``isobench-<id>``)
        is that monitor: it is left to finish (record the exit, ``--rm``), as a monitor does then.

        The next spare is forked here, not only once the worker is reaped: the worker reports ``X``
        before the kernel has torn it down, so a client that runs its next command at once (a shell
        loop: ``isobench a; isobench b``) used to find no spare (measured: 3-4 of 30 commands in a
        row forked their worker on the client's clock). The EOF of this connection always reaches
        the loop before the next command of the same caller connects, so that command finds a spare."""
        import signal

        if conn.pidfd >= 0 and conn.pid and not is_monitor(conn.pid):
            with __import__("contextlib").suppress(OSError):
                signal.pidfd_send_signal(conn.pidfd, signal.SIGKILL)
        self._forget_sock(conn)
        self._fork_spare()

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


def _fork_child(body) -> int:
    """fork(); the child runs ``body()``, which ends the process itself (a worker always leaves by
    ``os._exit``). Returns the child's pid in the server; raises OSError when fork fails. A child whose
    ``body`` returns or raises exits 70 (EX_SOFTWARE: a bug in its set-up), its traceback on its
    stderr (the client's, or the server log for a spare). stdio is flushed first, so nothing buffered
    in the server is written twice."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            body()
        except BaseException:  # noqa: BLE001 - a bug in the worker's set-up: on its stderr
            import traceback

            traceback.print_exc()
        finally:
            os._exit(70)  # body never returns (EX_SOFTWARE: reaching this is a bug in it)
    return pid


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


# ----------------------------------------------------------------------------- the C client

def is_client_binary(path: str) -> bool:
    """True for a compiled client (an ELF file), False for pip's Python console script or nothing."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def own_client_path() -> str:
    """The client binary of this server's installation: ``isobench`` beside its interpreter."""
    import sys

    return os.path.realpath(os.path.join(os.path.dirname(sys.executable), "isobench"))


def other_installation(peer_pid: int, own_client: str) -> str:
    """Why a client of another isobench installation (another checkout's .venv, an older copy: a client
    binary with its own ``isobench-py`` beside it) is not served here, '' for our own clients
    (``isobench`` and ``isobench-runtime`` beside this interpreter) or a
    program that speaks the protocol itself. Why: the socket is host-wide (/run/isobench/server.sock), so
    a second checkout's ``isobench`` would otherwise run this server's code, another version of it,
    silently (a fresh clone's tests could be served by the previous clone's auto-started server). The
    client then runs its own Python CLI (``F``). A client replaced by ``make setup`` while it runs
    reads ``PATH (deleted)``: still ours."""
    try:
        exe = os.readlink(f"/proc/{peer_pid}/exe").removesuffix(" (deleted)")
    except OSError as exc:
        return f"cannot inspect the client (pid {peer_pid}): {exc.strerror}"
    ours = (own_client, os.path.join(os.path.dirname(own_client), "isobench-runtime"))  # the two clients
    if exe in ours or not os.path.exists(os.path.join(os.path.dirname(exe), "isobench-py")):
        return ""  # ours, or not an installed client (a program speaking the protocol itself)
    return f"the client {exe} belongs to another isobench installation than this server ({own_client})"


def ensure_client(bin_dir: str) -> str:
    """The compiled client ``make setup`` installed as ``isobench`` beside this interpreter (its
    fallback, ``isobench-py``, runs this interpreter's CLI). Raises ServerError when set-up did not
    install it: a missing client is a set-up error, not something to compile here at run time.
    ``bin_dir`` is kept for callers that pass a scratch dir; nothing is written there."""
    import sys

    from core.errors import ServerError

    installed = os.path.join(os.path.dirname(sys.executable), "isobench")
    if is_client_binary(installed) and os.path.exists(installed + "-py"):
        return installed
    raise ServerError(f"the isobench client is not installed at {installed}: run `make setup`")
