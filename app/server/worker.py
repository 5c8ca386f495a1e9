"""The isobench server's workers: a spare forked ahead takes one request, becomes the client's
``isobench`` process (its fds, cwd, environ, umask, limits and a fresh signal state) and runs the
CLI there; see :mod:`app.server.daemon` for the whole design."""

from __future__ import annotations

import os
import struct

from app.server.protocol import CLIENT_FDS, EXIT_CLIENT_SETUP, PROCESS_NAME, Request, SPARE_NAME, decode_payload, system_exit_code

# ----------------------------------------------------------------------------- the worker

_real_exit = os._exit  # taken at import, before _report_exit_early wraps it: decline() exits without X

# Dispositions of a freshly started `isobench` (Python's own start-up choices), restored in a worker.
def _fresh_dispositions() -> dict:
    import signal

    table = {s: signal.SIG_DFL for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                                         signal.SIGUSR2, signal.SIGCHLD, signal.SIGWINCH)}
    table.update({signal.SIGINT: signal.default_int_handler, signal.SIGPIPE: signal.SIG_IGN,
                  signal.SIGXFSZ: signal.SIG_IGN})
    return table


SIGIGN_ENV = "ISOBENCH_CLIENT_SIGIGN"  # set by csrc/client.c in the request's environment only


def _ignore_as_the_client(mask_hex: str) -> None:
    """Ignore the signals the client was started with ignored (a hex mask, as /proc SigIgn), as a Python
    CLI exec'd in its place would have inherited them: ``nohup isobench ...`` ignores SIGHUP, a
    non-interactive shell's background job SIGINT. The ``run`` verb's signal proxy then installs its own
    handlers over them, in the worker as in the Python CLI."""
    import signal

    try:
        mask = int(mask_hex, 16) if mask_hex else 0
    except ValueError:
        return
    for sig in range(1, 64):
        if mask & (1 << (sig - 1)) and sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (OSError, ValueError):
                pass  # not settable from Python (e.g. glibc's reserved real-time signals)


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


def spare_main(chan, run_cli) -> None:
    """A spare worker: wait for the server to hand over a request, then become its worker. EOF (the
    server stopped, or died) ends it quietly."""
    import array
    import contextlib
    import signal
    import socket

    from core import syscalls

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
    if not data:
        os._exit(0)  # EOF: the server stopped or died
    if len(data) < 8 or len(fds) != CLIENT_FDS + 1:
        _spare_gone(f"{len(data)} bytes and {len(fds)} file descriptors instead of a request")
    peer_pid, length = struct.unpack(">iI", data[:8])
    while len(data) < 8 + length:
        chunk = chan.recv(1 << 20)
        if not chunk:
            _spare_gone(f"its channel closed after {len(data)} of {8 + length} bytes")
        data += chunk
    chan.close()
    run_worker(decode_payload(data[8:8 + length]), list(fds[:CLIENT_FDS]), peer_pid, run_cli, fds[CLIENT_FDS])


def _spare_gone(why: str) -> None:
    """End a spare whose channel brought no usable request, saying why on the server log (its stderr):
    the server then finds it unusable and forks the request's worker itself."""
    os.write(2, f"isobench-spare[{os.getpid()}]: exits without a request: {why}\n".encode())
    os._exit(0)


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
    import select

    from core.syscalls import madvise

    try:
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
                if madvise(lo + first * page, count * page, MADV_POPULATE_WRITE):
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


class ClientSession:
    """What a worker can ask of its client beyond stdio and the exit code (protocol in
    :mod:`app.server.daemon`): run the command itself (``F``), or spawn a process as its own child
    (``S``: the start helper of ``isobench-runtime create``, whose container must outlive the command
    as the caller's orphan, as runc's does, for conmon to reap)."""

    def __init__(self, report_fd: int, log_fd: int = -1, peer_pid: int = 0) -> None:
        self.report_fd, self.log_fd, self.peer_pid = report_fd, log_fd, peer_pid

    def decline(self, reason: str) -> None:
        """Tell the client to run this command in its own Python CLI, and exit (no ``X``): for a
        command that must be the caller's own process. Nothing may have been written to its stdio.
        ``reason`` names the command; it is logged on the server log (when the worker kept it), so a
        test can tell served from declined."""
        import contextlib
        import sys
        import time

        reason = reason.replace("\n", " ")  # one line, on the log and to the client
        if self.log_fd >= 0:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            line = (f"{stamp} isobench-worker[{os.getpid()}]: hands a command back to client pid "
                    f"{self.peer_pid}: {reason}\n")
            with contextlib.suppress(OSError):
                os.write(self.log_fd, line.encode(errors="replace"))
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with contextlib.suppress(OSError):
            os.write(self.report_fd, f"F {reason}\n".encode(errors="replace"))
        _real_exit(0)

    def spawn(self, path: str, argv0: str, fds: list[int], pid_ns: str) -> int:
        """Have the client fork and exec ``path`` (argv ``[argv0]``, an empty environment) with ``fds``
        as its fds 0..N-1, in a new PID namespace (``pid_ns`` ""), the client's ("host") or the one at
        path ``pid_ns``; returns its pid. The client answers on a pipe we pass it (not on the
        connection, which the server also reads)."""
        import socket

        from core.errors import ContainerError

        if " " in argv0 or "\n" in argv0 or "\n" in path:
            raise ContainerError(f"cannot ask the client to start {path!r} as {argv0!r}")
        r, w = os.pipe2(os.O_CLOEXEC)
        extra = []
        try:
            mode = "new" if not pid_ns else "host" if pid_ns == "host" else "join"
            if mode == "join":
                try:
                    extra.append(os.open(pid_ns, os.O_RDONLY | os.O_CLOEXEC))
                except OSError as exc:
                    raise ContainerError(f"pid namespace {pid_ns}: {exc.strerror}") from exc
            sock = socket.socket(fileno=self.report_fd)
            try:
                socket.send_fds(sock, [f"S {mode} {argv0} {path}\n".encode()], [w, *fds, *extra])
            except OSError as exc:
                raise ContainerError(f"cannot reach the client to start the container: {exc.strerror}") from exc
            finally:
                sock.detach()
        finally:
            os.close(w)
            for fd in extra:
                os.close(fd)
        reply = b""
        try:
            while not reply.endswith(b"\n") and (chunk := os.read(r, 256)):
                reply += chunk
        finally:
            os.close(r)
        text = reply.decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if text.startswith("E "):
            raise ContainerError(f"the client could not start the container's process: {text[2:]}")
        raise ContainerError("the client went away before it started the container's process")


def is_monitor(pid: int) -> bool:
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


def run_worker(req: Request, fds: list[int], peer_pid: int, run_cli, report_fd: int = -1) -> None:
    """Become the client's ``isobench`` (or ``isobench-runtime``) process, run the CLI
    (``run_cli(argv, session)``, the server's preloaded ``app.cli.serve``) and exit with its code."""
    import signal
    import sys

    if report_fd >= 0:
        _report_exit_early(report_fd)

    from core import syscalls
    from runtime import monitor

    monitor.WORKER_IS_MONITOR = True  # a foreground `run` needs no forked monitor (see run_here)

    for sig, handler in _fresh_dispositions().items():
        signal.signal(sig, handler)
    with __import__("contextlib").suppress(OSError):
        syscalls.set_process_name("isobench")  # what ps shows for the Python CLI
    with __import__("contextlib").suppress(OSError):
        os.setpgid(0, 0)  # own process group: terminal signals the client forwards reach its children too
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    log_fd = -1  # the server log (our stderr until now): an OCI verb handed back says so there
    if report_fd >= 0 and os.path.basename(req.argv[0]) == b"isobench-runtime":
        import fcntl

        log_fd = fcntl.fcntl(2, fcntl.F_DUPFD_CLOEXEC, 3)
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
    _ignore_as_the_client(os.environ.pop(SIGIGN_ENV, ""))
    os.umask(req.umask)
    _adopt_limits(peer_pid)
    import time

    time.tzset()  # the client's TZ
    _fresh_stdio(encoding, errors)
    argv = [os.fsdecode(a) for a in req.argv]
    sys.argv = argv
    session = ClientSession(report_fd, log_fd, peer_pid) if report_fd >= 0 else None
    os._exit(_run_cli(argv, run_cli, session))


def _run_cli(argv: list[str], run_cli, session: ClientSession | None = None) -> int:
    """``run_cli(argv, session)`` (argv[0] names the client's program: ``isobench`` or
    ``isobench-runtime``) with the console script's exit semantics; returns the process exit code."""
    import sys
    import traceback

    try:
        code = run_cli(argv, session)
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
