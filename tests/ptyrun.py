"""Drive a command through a real pseudo-terminal, as a person at a terminal would: the command's
stdin/stdout/stderr are the slave side, the test types into the master and reads what it shows."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time


class PtySession:
    def __init__(self, argv: list[str], rows: int = 24, cols: int = 80, env: dict[str, str] | None = None,
                 timeout_s: float = 30.0) -> None:
        self.argv, self.rows, self.cols, self.env, self.timeout_s = argv, rows, cols, env, timeout_s
        self.output = b""
        self.pid = -1
        self.fd = -1

    def __enter__(self) -> "PtySession":
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execvpe(self.argv[0], self.argv, self.env if self.env is not None else dict(os.environ))
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
        return self

    def __exit__(self, *exc) -> None:
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if self.fd >= 0:
            os.close(self.fd)

    def _read(self, timeout_s: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], timeout_s)
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every slave closed
            return False
        if not data:
            return False
        self.output += data
        return True

    def expect(self, needle: bytes, timeout_s: float | None = None) -> None:
        """Wait until ``needle`` appears in the output after the last expect."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        start = getattr(self, "_mark", 0)
        while needle not in self.output[start:]:
            if time.monotonic() > deadline or not self._read(0.1):
                if needle in self.output[start:]:
                    break
                raise AssertionError(f"{needle!r} not seen; output: {self.output[-600:]!r}")
        self._mark = self.output.index(needle, start) + len(needle)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def resize(self, rows: int, cols: int) -> None:
        """As a terminal window does: new size on the pty, SIGWINCH to its foreground process group."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def wait(self) -> int:
        """Read until EOF, then the command's exit code."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline and self._read(0.1):
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.pid = -1
                while self._read(0.05):
                    pass
                return os.waitstatus_to_exitcode(status)
        if self.pid > 0:
            _, status = os.waitpid(self.pid, 0)
            self.pid = -1
            return os.waitstatus_to_exitcode(status)
        raise AssertionError("command exit status lost")
