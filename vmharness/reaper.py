"""A child-subreaper parent for libvirtd: ``python -m vmharness.reaper /usr/sbin/libvirtd``.

libvirtd double-forks QEMU, so an exited QEMU becomes a zombie of the nearest subreaper — normally
PID 1. On these machines PID 1 is a sandbox process that reaps lazily (~1.7 s), and libvirt keeps a
destroyed domain "active" until the zombie is reaped, which would add that delay to every VM's
"domain gone" phase. Running libvirtd under this small reaper (PR_SET_CHILD_SUBREAPER, blocking
``wait()`` loop) makes QEMU's parent reap it at once, as a normal init would. The reaper detaches
from the caller's session and exits when libvirtd does.
"""

from __future__ import annotations

import os
import subprocess
import sys

from runtime import syscalls


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m vmharness.reaper DAEMON [ARGS...]", file=sys.stderr)
        return 2
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except KeyboardInterrupt:
            continue
        if pid == daemon.pid:
            daemon.returncode = os.waitstatus_to_exitcode(status)
            return daemon.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
