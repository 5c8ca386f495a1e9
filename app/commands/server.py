"""``isobench server start|stop|status``: the verbs that start, stop and query the fork server
(:mod:`app.server.daemon`). Imports nothing heavy at module level (a parser module)."""

from __future__ import annotations

import os

from app.commands.common import verb, verb_group
from app.server.protocol import DEFAULT_SOCKET, SOCKET_ENV, accepts, logfile_path, pidfile_path, read_pidfile, remove_stale, server_state, socket_path, start_time

# ----------------------------------------------------------------------------- CLI verbs

def register(sub) -> None:
    verbs = verb_group(sub, "server", "the resident fork server that makes `isobench` start fast",
                       dest="server_command", metavar="ACTION",
                       description="A resident process that has Python and every import loaded and forks "
                                   "a worker per `isobench` command (like dockerd). Without it the "
                                   "command works the same, only slower.")
    where = f"socket path (default ${SOCKET_ENV}, else {DEFAULT_SOCKET})"
    q = verb(verbs, "start", _start, help="start a server (returns once it accepts commands)")
    q.add_argument("--socket", metavar="PATH", help=where)
    q.add_argument("--idle-timeout", type=_idle_seconds, default=0.0, metavar="S",
                   help="exit after S seconds without a command (default 0: never; the server the "
                        "client starts on first use gets $ISOBENCH_SERVER_IDLE_S, default 900)")
    q = verb(verbs, "stop", _stop, help="stop the server (running commands finish first)")
    q.add_argument("--socket", metavar="PATH", help=where)
    q.add_argument("-t", "--time", type=float, default=10.0, metavar="S",
                   help="seconds to wait for it to exit (default 10)")
    q = verb(verbs, "status", _status, help="is a server running? (exit 0 yes, 3 no)")
    q.add_argument("--socket", metavar="PATH", help=where)


def _idle_seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--idle-timeout {text!r}: expected seconds >= 0 (0: never)")
    return value


def _dir_lock(sock: str) -> int:
    """An flock on the socket's directory: two concurrent ``start``s must not both clear and bind."""
    import fcntl

    d = os.path.dirname(sock)
    os.makedirs(d, mode=0o755, exist_ok=True)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _start(args) -> int:
    from core.errors import ServerError

    sock = socket_path(args.socket)
    lock = _dir_lock(sock)
    try:
        record = read_pidfile(sock)
        if server_state(record, start_time) == "live":
            raise ServerError(f"an isobench server is already running on {sock} (pid {record[0]})")
        if accepts(sock):
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
                    from app.server.daemon import run_daemon

                    run_daemon(sock, w, args.cli_app, idle_timeout_s=args.idle_timeout)
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

    from core.errors import ServerError

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
    if pidfd is None or start_time(pid) != start:
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
    state = server_state(record, start_time)
    if state == "live":
        print(f"isobench server running: pid {record[0]}, socket {sock}, log {logfile_path(sock)}")
        return 0
    extra = " (stale pidfile of a dead server: `isobench gc` removes it)" if state == "stale" else ""
    print(f"isobench server not running on {sock}{extra}")
    return 3
