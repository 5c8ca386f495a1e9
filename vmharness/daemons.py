"""libvirtd and virtlogd, started by isobench when they are not running.

These machines have no systemd (no socket activation), so the harness starts the daemons itself:
``virtlogd -d``, and libvirtd under a small subreaper (``vmharness.reaper``) in its own session; both
outlive the CLI and are reused by every later run and by other state roots. Starting is idempotent and serialized by a host-wide lock so two CLIs never start two copies.
A daemon counts as running when its socket accepts a connection, not merely when the socket file exists
(a crashed daemon leaves its socket behind).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.errors import VMError
from core.fsutil import file_lock
from core.paths import run_dir

URI = "qemu:///system"
LIBVIRT_SOCK = Path("/var/run/libvirt/libvirt-sock")
VIRTLOGD_SOCK = Path("/var/run/libvirt/virtlogd-sock")
START_TIMEOUT_S = 15.0
_spawned: list = []
def _log() -> Path:
    """Where the daemons isobench starts write their output (run_dir: host-wide, like the daemons)."""
    return run_dir() / "libvirtd.log"


HOW_TO_START = "start it with `libvirtd -d` (and `virtlogd -d`)"

_conn = None


def socket_alive(path: Path) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    if not path.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _start(binary: str, sock: Path) -> None:
    exe = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if exe is None:
        raise VMError(f"{binary} not found; install the Debian package libvirt-daemon-system")
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # stale socket of a crashed daemon
    if binary == "libvirtd":
        # libvirtd runs under our subreaper (see vmharness.reaper) in its own session, so it outlives
        # this process and QEMU zombies are reaped at once
        _log().parent.mkdir(parents=True, exist_ok=True)
        with open(_log(), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "vmharness.reaper", exe], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True, close_fds=True)
        _spawned.append(proc)
    else:
        # -d daemonizes: the daemon is reparented away from us and keeps running for later runs
        res = subprocess.run([exe, "-d"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, timeout=START_TIMEOUT_S, start_new_session=True)
        if res.returncode != 0:
            raise VMError(f"libvirtd is not reachable at {URI}: `{binary} -d` failed: "
                          f"{(res.stderr or '').strip()[-200:]}; {HOW_TO_START}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if socket_alive(sock):
            return
        time.sleep(0.05)
    raise VMError(f"libvirtd is not reachable at {URI}: {binary} started but {sock} did not answer within "
                  f"{START_TIMEOUT_S:.0f} s; {HOW_TO_START}")


def ensure_libvirtd() -> None:
    """Make sure virtlogd and libvirtd answer on their sockets, starting them if needed."""
    if socket_alive(LIBVIRT_SOCK) and socket_alive(VIRTLOGD_SOCK):
        return
    if os.geteuid() != 0:
        raise VMError(f"libvirtd is not reachable at {URI} and only root can start it; {HOW_TO_START} as root")
    with file_lock(run_dir() / "libvirtd-start.lock"):
        if not socket_alive(VIRTLOGD_SOCK):
            _start("virtlogd", VIRTLOGD_SOCK)
        if not socket_alive(LIBVIRT_SOCK):
            _start("libvirtd", LIBVIRT_SOCK)
