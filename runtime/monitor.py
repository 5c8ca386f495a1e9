"""The per-container monitor the CLI starts (conmon / containerd-shim in miniature).

Why: ``isobench run -d`` must return while the container keeps running, and someone must stay the
container's parent to reap it, record its exit code (and OOM kill), free its cgroup and network and,
with ``--rm``, remove it. The CLI forks this monitor (double fork + setsid, so killing the CLI or its
terminal does not touch it); the monitor holds the container's lease, runs :mod:`runtime.api`
create/start in-process and reports back on a pipe::

    S <id> <pid> <monitor>\\n started (the CLI prints the id with -d, or forwards signals to monitor)
    X <exit code>\\n          exited, recorded, cleaned up (foreground: the CLI exits with it)
    E <exit code> <message>\\n create/start failed; nothing is left behind

A detached container's monitor then ``execve``s a tiny static C program (``monitor_shim.c``): children
survive execve, so it is still the parent, but idles at a few hundred KiB instead of a Python
interpreter's tens of MiB. When the container exits the shim records the wait status and execs the
Python finisher (``python -m runtime.monitor finish ...``). Foreground runs stay in Python
(the CLI waits for them anyway, and re-exec'ing Python would only add latency to ``run --rm``).

Under the isobench server (``app.server.daemon``) a foreground run needs no separate monitor: the
worker the server forked is already a process of its own, not the user's shell's child, so killing the
``isobench`` client leaves it running exactly as it leaves a monitor running. :func:`run_here` makes
the worker the monitor, which saves the double fork and the pipe round trips (milliseconds of
``run --rm`` wall time).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from pathlib import Path

from core import syscalls
from core.errors import IsobenchError
from core.paths import HostPaths, host_name
from runtime.spec import ContainerConfig

STATUS_FILE = "exit-status"
# Set by the isobench server's worker: foreground runs then use run_here (see the module docstring).
WORKER_IS_MONITOR = False


# ----------------------------------------------------------------------------- CLI side

class Launch:
    """The CLI's handle on a monitor it started: the container id/pid and, later, the exit code."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""
        self.container_id = ""
        self.pid = 0
        self.monitor_pid = 0  # a foreground run's signals go here: the monitor delivers them

    def _line(self) -> str:
        while b"\n" not in self.buf:
            try:
                chunk = os.read(self.fd, 4096)
            except InterruptedError:
                continue
            if not chunk:
                line, self.buf = self.buf, b""
                return line.decode(errors="replace")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")

    def _message(self, expect: str) -> list[str]:
        line = self._line()
        if line.startswith("E "):
            _, code, msg = (line.split(" ", 2) + ["", ""])[:3]
            err = IsobenchError(msg or "container failed to start")
            err.exit_code = int(code) if code.isdigit() else 1
            raise err
        if not line.startswith(expect + " "):
            raise IsobenchError("the container's monitor exited unexpectedly (see `isobench ps -a`)")
        return line.split()[1:]

    def started(self) -> tuple[str, int]:
        cid, pid, monitor_pid = self._message("S")[:3]
        self.container_id, self.pid, self.monitor_pid = cid, int(pid), int(monitor_pid)
        return self.container_id, self.pid

    def exit_code(self) -> int:
        return int(self._message("X")[0])


def launch(config: ContainerConfig, paths: HostPaths, *, detach: bool, auto_remove: bool) -> Launch:
    """Start a monitor for a new container; returns once it reported ``S`` (or raised its error)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _monitor(config, paths, detach, auto_remove, w)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    handle = Launch(r)
    handle.started()
    return handle


def run_here(config: ContainerConfig, paths: HostPaths, *, auto_remove: bool, interactive: bool = False,
             tty: bool = False) -> int:
    """A foreground run with the calling process as the container's monitor; returns the exit code.

    As :func:`_monitor` does for a foreground run: the container gets /dev/null as stdin (our stdin
    with ``-i``) and our stdout/stderr; Ctrl-C and SIGTERM/SIGHUP/SIGQUIT are forwarded to it (those
    that arrive while it is being created, once it runs); a failed start leaves nothing behind;
    ``--rm`` removes it after the exit has been recorded. ``-t``: the container gets a pty
    (runtime.console) that we relay to our terminal, in raw mode, so Ctrl-C reaches it as a byte."""
    from runtime import api

    forwarder = Forwarder()
    forwarder.install()  # from the start: no window where Ctrl-C orphans a started container
    stdin = os.dup(0) if interactive else os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)  # until the child has it
    ours = theirs = -1
    if tty:
        import socket

        from runtime import console

        ours, theirs = (s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        c = _create_and_start(config, paths, (stdin, 1, 2), auto_remove=auto_remove, detach=False,
                              console_fd=theirs)
    finally:
        os.close(stdin)
        if theirs >= 0:
            os.close(theirs)
    forwarder.attach(c)
    if tty:
        sock = socket.socket(fileno=ours)
        try:
            master = console.receive_master(sock)
        finally:
            sock.close()
        try:
            console.relay(master, 0 if interactive else None, 1)
        finally:
            os.close(master)
    code = api.wait(c)
    if auto_remove:
        api.delete(c)
    return code


# What a foreground run passes on to its container, as docker run's signal proxy does.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Forwarder:
    """The foreground monitor's signal handler: signals reach the container's PID 1 once it runs
    (those that arrive while it is being created wait, then go)."""

    def __init__(self) -> None:
        self.container = None
        self.pending: list[int] = []

    def install(self) -> None:
        for sig in FORWARDED:
            signal.signal(sig, self)

    def attach(self, c) -> None:
        self.container = c
        for sig in self.pending:
            self(sig, None)
        self.pending = []

    def __call__(self, sig: int, _frame) -> None:
        if self.container is None:
            self.pending.append(sig)
            return
        deliver(self.container, sig)


def deliver(c, sig: int) -> None:
    """Send ``sig`` to the container's PID 1; Ctrl-C ends the run even when PID 1 has no handler.

    The kernel drops a signal whose action is the default for a PID namespace's init (only SIGKILL
    and SIGSTOP from the parent namespace get through), so ``isobench run busybox sleep 30`` would
    ignore Ctrl-C forever. For SIGINT, and only when PID 1 neither catches, blocks (an init's
    sigwait) nor ignores it, the monitor carries out the default action itself: it kills the
    container and records 128+SIGINT = 130, the code the workload would have had as an ordinary
    process. Other signals are only forwarded (``docker stop`` semantics: SIGTERM, then a kill)."""
    pid = c.pid
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if sig == signal.SIGINT and not _has_disposition(pid, sig):
        c.interrupted_by = sig  # record_exit reports 128+sig for the SIGKILL below
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _has_disposition(pid: int, sig: int) -> bool:
    """Does the process catch, block or ignore ``sig`` (``SigCgt``/``SigBlk``/``SigIgn`` of
    /proc/PID/status)? Unreadable (it just exited): treated as yes, nothing more to do."""
    bit = 1 << (sig - 1)
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            masks = [int(line.split()[1], 16) for line in f
                     if line.startswith(("SigCgt:", "SigBlk:", "SigIgn:"))]
    except (OSError, ValueError, IndexError):
        return True
    return any(m & bit for m in masks)


def _create_and_start(config: ContainerConfig, paths: HostPaths, stdio: tuple[int, int, int] | None, *,
                      auto_remove: bool, detach: bool, console_fd: int = -1):
    """create + start as the container's monitor (named ``isobench-<id>``, as gc and ps expect); a
    failed start leaves nothing behind."""
    from runtime import api

    size = None
    if console_fd >= 0:
        from runtime.console import terminal_size

        size = terminal_size(0) or terminal_size(1)
    c = api.create(config, paths, stdio=stdio, auto_remove=auto_remove, detached=detach, console_fd=console_fd,
                   console_size=size, starting=True)
    try:
        with contextlib.suppress(OSError):
            syscalls.set_process_name(host_name(c.id))
        api.start(c)
    except BaseException:
        with contextlib.suppress(IsobenchError, OSError):
            api.delete(c, force=True)
        raise
    return c


# ----------------------------------------------------------------------------- monitor side

def _send(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):  # the CLI may be gone (killed): the container carries on
        os.write(fd, (text.replace("\n", " ") + "\n").encode())


def _to_devnull(fds: tuple[int, ...]) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)


def _monitor(config: ContainerConfig, paths: HostPaths, detach: bool, auto_remove: bool, w: int) -> None:
    from runtime import api

    # A detached monitor outlives the terminal: a hang-up or a stray Ctrl-C must not end it (its
    # container starts with default dispositions all the same: process.reset_signals). A foreground
    # one is the container's signal proxy: the CLI forwards what it gets to us.
    forwarder = None
    if detach:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    else:
        forwarder = Forwarder()
        forwarder.install()
    c = None
    try:
        if detach:
            _to_devnull((0, 1, 2))
            stdio = None
        else:  # the container writes straight to the CLI's stdout/stderr: no copying through us
            stdio = (os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), 1, 2)
        c = _create_and_start(config, paths, stdio, auto_remove=auto_remove, detach=detach)
        _to_devnull((0, 1, 2))  # keep no copy of the CLI's terminal/pipes while we wait
        if forwarder is not None:
            forwarder.attach(c)
        _send(w, f"S {c.id} {c.pid} {os.getpid()}")
        if detach:
            _exec_shim(c, paths, w)  # returns only when the shim is unavailable
        code = api.wait(c)
        if auto_remove:
            api.delete(c)
        _send(w, f"X {code}")
    except IsobenchError as exc:
        _send(w, f"E {exc.exit_code} {exc}")
    except BaseException as exc:  # noqa: BLE001 - the monitor has no terminal: report, then log
        _send(w, f"E 1 container monitor failed: {type(exc).__name__}: {exc}")
        _crash_log(paths, c, traceback.format_exc())


def _crash_log(paths: HostPaths, c: object, text: str) -> None:
    with contextlib.suppress(OSError):
        d = paths.containers / getattr(c, "id", "") if c is not None else paths.tmp
        with open(d / "monitor-crash.log", "a", encoding="utf-8") as f:
            f.write(text)


def shim_path(paths: HostPaths) -> Path:
    """The static shim ``make setup`` compiled (csrc/monitor_shim.c); raises when it is missing."""
    from core.cbin import helper

    return helper("isobench-monitor")


def _exec_shim(c, paths: HostPaths, w: int) -> None:
    shim = shim_path(paths)
    os.set_inheritable(w, True)
    status_file = c.dir / STATUS_FILE
    argv = [host_name(c.id), str(c.pid), str(status_file), sys.executable, "-m", "runtime.monitor",
            "finish", str(paths.root), c.id, str(w)]
    os.execv(str(shim), argv)


def finish(paths: HostPaths, cid: str, report_fd: int) -> int:
    """After the shim: record the exit from its status file, free cgroup/network, ``--rm``, report."""
    from runtime import api
    from runtime.lifecycle import state as S

    syscalls.set_process_name(host_name(cid))
    try:
        raw = (S.container_dir(paths, cid) / STATUS_FILE).read_text().strip()
        status = int(raw)
    except (OSError, ValueError):
        status = -1
    c = api.load(paths, cid)
    c.exit_code = None
    if c.state.get("network_mode") == "bridge":
        c._netplan = True
    with contextlib.suppress(IsobenchError):
        c._cgroup = api.open_cgroup_of(c)
    if status < 0:  # the shim lost its child: no status to report
        c.state.update(status="exited", exit_code=None, error="exit status lost", finished_at=S.now_iso())
        api._after_exit(c)
        code = 255
    else:
        api.record_exit(c, status)
        code = c.exit_code or 0
    if c.state.get("auto_remove"):
        c.pid = None
        api.delete(c)
    _send(report_fd, f"X {code}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "finish":
        return finish(HostPaths(root=Path(argv[1])), argv[2], int(argv[3]))
    print("usage: python -m runtime.monitor finish ROOT ID FD", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
