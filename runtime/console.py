"""Terminals: the container's pty (``process.terminal``), its master sent over a unix socket, and the
client side that puts the user's terminal in raw mode and copies bytes both ways.

Why this way (runc's): the pty must come from the *container's* devpts instance (``/dev/pts`` is a
``newinstance`` mount), so the container's init opens ``/dev/ptmx`` after pivot_root, makes the slave
its controlling terminal and stdio (and /dev/console), and hands the master to whoever holds the other
end of the console socket: conmon for podman (``--console-socket``), or the ``isobench run -it`` /
``exec -it`` process, which then relays between the user's terminal and the master. Ctrl-C is a byte
on that path: the container's line discipline turns it into SIGINT for *its* foreground process.

Child side (:func:`open_in_container`) runs after pivot_root: everything it uses is imported here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import tty

from core import syscalls
from core.errors import ContainerError


# ----------------------------------------------------------------------------- in the container

def set_size(fd: int, rows: int, cols: int) -> None:
    if rows > 0 and cols > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def open_in_container(sock_fd: int, size: tuple[int, int] | None, bind_console: bool = True) -> int:
    """Open a pty in the container's devpts, send its master over ``sock_fd``, make the slave our
    controlling terminal (and /dev/console for the container's init); returns the slave fd (the
    caller dups it onto 0-2)."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    if size is not None:
        set_size(slave, size[0], size[1])
    if bind_console:
        with contextlib.suppress(OSError):  # no /dev/console (no tmpfs /dev in the spec): nothing to bind
            syscalls.mount(name, "/dev/console", None, syscalls.MS_BIND)
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [name.encode()], [master])
    finally:
        sock.detach()
        os.close(sock_fd)
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    return slave


# ----------------------------------------------------------------------------- the receiving side

def connect(path: str) -> int:
    """A connected socket fd on ``--console-socket PATH`` (the child inherits it across fork)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ContainerError(f"--console-socket {path}: cannot connect: {exc.strerror}") from exc
    return sock.detach()


def receive_master(sock: socket.socket, timeout_s: float = 30.0) -> int:
    """The pty master fd the container sent (SCM_RIGHTS)."""
    sock.settimeout(timeout_s)
    try:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    except (OSError, socket.timeout) as exc:
        raise ContainerError(f"no terminal from the container: {exc}") from exc
    if not fds:
        raise ContainerError("the container closed its console socket without sending a terminal")
    return fds[0]


def terminal_size(fd: int) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on ``fd``; None when it is not one."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def relay(master: int, in_fd: int | None = 0, out_fd: int = 1, size_fd: int = 0) -> None:
    """Copy ``in_fd`` -> master and master -> ``out_fd`` until the container side closes, with ``in_fd``
    in raw mode (restored after) and the window size of ``size_fd`` following SIGWINCH. ``in_fd``
    None: output only (``-t`` without ``-i``). Returns when the master reports EOF/EIO (every slave
    closed: the container's process exited)."""
    saved = None
    if in_fd is not None and os.isatty(in_fd):
        saved = termios.tcgetattr(in_fd)
        tty.setraw(in_fd)
    r_wake, w_wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def on_winch(_sig, _frame):
        with contextlib.suppress(OSError):
            os.write(w_wake, b"w")

    old = signal.signal(signal.SIGWINCH, on_winch)
    size = terminal_size(size_fd)
    if size:
        set_size(master, *size)
    in_open = in_fd is not None
    try:
        while True:
            fds = [master, r_wake] + ([in_fd] if in_open else [])
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if r_wake in ready:
                with contextlib.suppress(OSError):
                    os.read(r_wake, 64)
                size = terminal_size(size_fd)
                if size:
                    set_size(master, *size)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        return
                    raise
                if not data:
                    return
                _write_all(out_fd, data)
            if in_open and in_fd in ready:
                data = os.read(in_fd, 65536)
                if not data:  # stdin closed (not a terminal): send EOF to the container's line discipline
                    in_open = False
                    with contextlib.suppress(OSError):
                        os.write(master, b"\x04")
                else:
                    _write_all(master, data)
    finally:
        signal.signal(signal.SIGWINCH, old)
        os.close(r_wake)
        os.close(w_wake)
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


__all__ = ["connect", "open_in_container", "receive_master", "relay", "set_size", "terminal_size"]
