"""Breakout probes: small commands run *inside* a container that try to reach the host.

One library for two users: the breakout suite (tests/security/) runs every probe in isobench's runtime
and in runc's default config and expects both to block; the benchmark's isolation matrix runs them in
every environment and the report shows the table. Probes are busybox shell one-liners (they run in the
busybox image) plus, for the system calls busybox has no applet for (keyctl, bpf, ptrace, raw sockets,
init_module, settimeofday), a tiny static C helper (``probe_helper.c``) compiled on the host with
``gcc -static`` and bind-mounted read-only at :data:`HELPER_DIR`.

Every probe is harmless when it is *not* blocked (it writes back current values, opens without
writing, unmounts what it mounted, sets the hostname to itself), so the same probes can run natively.

API (kept simple on purpose)::

    PROBES: dict[str, Probe]                   # name -> Probe(argv, blocked_if, description, ...)
    with host_context() as ctx:                # host marker process + host-only loopback listener
        argv = render(PROBES["see_host_pids"].argv, ctx)
        exit_code, output = <run argv in the environment>
        blocked = PROBES[name].blocked_if(exit_code, output)
    helper = build_helper(dest_dir)            # needs gcc; mount dest_dir at HELPER_DIR (ro)
    blocked = run_all(execute, ctx)            # execute(name, probe, argv) -> (exit_code, output)
    print(format_table({"isobench": {...name: bool}, "runc": {...}}))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator


HELPER_DIR = "/isoprobe"                     # where the helper's directory is mounted in the container
HELPER = f"{HELPER_DIR}/isoprobe"
MARKER = "hostmarker-secprobe"               # argv[0] of the host process that must stay invisible
LOOPBACK_TOKEN = "ISOBENCH-HOST-ONLY-SECRET"  # what the host-only listener sends to whoever connects
# /dev entries a container may have (OCI default devices + the usual symlinks and mounts).
MINIMAL_DEV = frozenset({"null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "pts", "shm",
                         "mqueue", "fd", "stdin", "stdout", "stderr", "core"})


@dataclass(frozen=True)
class Probe:
    """``argv`` runs in the container (``{placeholders}`` filled by :func:`render`); ``blocked_if`` says,
    from its exit code and combined output, whether the isolation held."""

    argv: tuple[str, ...]
    blocked_if: Callable[[int, str], bool]
    description: str
    needs_helper: bool = False
    cap_drop: tuple[str, ...] = ()  # settings the probe needs to be meaningful (e.g. raw socket without NET_RAW)
    needs: tuple[str, ...] = field(default=())  # host_context keys used in argv


def sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


def _last_int(out: str) -> int | None:
    for line in reversed(out.strip().splitlines()):
        try:
            return int(line.strip())
        except ValueError:
            continue
    return None


def _failed(code: int, out: str) -> bool:
    return code != 0


def _helper_blocked(code: int, out: str) -> bool:
    # only an explicit refusal counts: a helper that did not run must not pass as "blocked"
    return "DENIED" in out


def _no_word(word: str) -> Callable[[int, str], bool]:
    return lambda code, out: word not in out


def _dev_minimal(code: int, out: str) -> bool:
    return set(out.split()) <= MINIMAL_DEV


PROBES: dict[str, Probe] = {
    "see_host_pids": Probe(
        sh(f"cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c '{MARKER[:-1]}[{MARKER[-1]}]'"),
        lambda code, out: (_last_int(out) or 0) == 0,
        "see a host process (a marker process started on the host) in /proc"),
    "read_kcore": Probe(
        sh("n=0; for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do "
           "[ -e $f ] && n=$((n + $(head -c 4096 $f 2>/dev/null | wc -c))); done; echo $n"),
        lambda code, out: _last_int(out) == 0,
        "read host memory or kernel state from /proc/kcore, /proc/keys, /proc/timer_list, /proc/sched_debug"),
    "host_devices": Probe(
        sh("ls /dev"), _dev_minimal,
        "see host devices in /dev beyond the minimal set (null, zero, full, random, urandom, tty, console, ptmx)"),
    "mount_fs": Probe(
        sh("mkdir -p /tmp/.probe-mnt && mount -t tmpfs probe /tmp/.probe-mnt && echo MOUNTED; "
           "umount /tmp/.probe-mnt 2>/dev/null; rmdir /tmp/.probe-mnt 2>/dev/null; true"),
        _no_word("MOUNTED"), "mount a filesystem (tmpfs)"),
    "load_module": Probe(
        (HELPER, "module"), _helper_blocked, "load a kernel module (init_module of a garbage image)",
        needs_helper=True),
    "write_proc_sys": Probe(
        sh(": >> /proc/sys/kernel/core_pattern && echo WRITABLE"), _no_word("WRITABLE"),
        "open /proc/sys/kernel/core_pattern (a classic escape: it runs a host program) for writing; "
        "nothing is written"),
    "write_sysrq": Probe(
        sh("[ -e /proc/sysrq-trigger ] || { echo ABSENT; exit 0; }; : >> /proc/sysrq-trigger && echo WRITABLE"),
        _no_word("WRITABLE"),
        "open /proc/sysrq-trigger for writing, nothing is written (kernels without SysRq have none: blocked)"),
    "set_hostname": Probe(
        sh('hostname "$(hostname)" && echo CHANGED'), _no_word("CHANGED"),
        "call sethostname (with the current name; the UTS namespace keeps the host's name apart anyway)"),
    "set_time": Probe(
        (HELPER, "settime"), _helper_blocked, "set the host clock (settimeofday(NULL, NULL): permission check only)",
        needs_helper=True),
    "raw_socket": Probe(
        (HELPER, "rawsock"), _helper_blocked, "open a raw socket without CAP_NET_RAW (run with --cap-drop NET_RAW)",
        needs_helper=True, cap_drop=("NET_RAW",)),
    "host_loopback": Probe(
        # 127.0.0.1 (own loopback in a netns) and the default gateway (the host's bridge address)
        sh("for a in 127.0.0.1 $(ip route 2>/dev/null | awk '/^default/ {print $3}'); do "
           "timeout 3 nc $a {loopback_port} </dev/null 2>&1; done; true"), _no_word(LOOPBACK_TOKEN),
        "reach a host-only 127.0.0.1 listener without a port mapping (via 127.0.0.1 and via the gateway)",
        needs=("loopback_port",)),
    "cgroup_write": Probe(
        # only the process's own cgroups (from /proc/self/cgroup; the mount root is the own cgroup when
        # the runtime binds or namespaces it), so a native run cannot disturb anyone else's limits
        sh("n=0; for l in $(cat /proc/self/cgroup); do c=${l#*:}; ctl=${c%%:*}; p=${c#*:}; "
           "for d in /sys/fs/cgroup/$ctl$p /sys/fs/cgroup/$ctl /sys/fs/cgroup/unified$p; do "
           "for f in pids.max memory.limit_in_bytes memory.max cpu.cfs_quota_us cpu.max; do "
           "[ -f $d/$f ] || continue; v=$(cat $d/$f 2>/dev/null) || continue; n=$((n+1)); "
           "(echo \"$v\" > $d/$f) 2>/dev/null && echo WROTE $d/$f; done; done; done; echo TRIED $n; true"),
        _no_word("WROTE"),
        "raise its own cgroup limits by writing cgroup files (writes back the current values)"),
    "ptrace_host": Probe(
        (HELPER, "ptrace", "{host_pid}"), _helper_blocked, "ptrace (PTRACE_SEIZE) a process outside the container",
        needs_helper=True, needs=("host_pid",)),
    "device_node": Probe(
        # /dev/kmsg (c 1:11) is outside the allowed-device list of Docker and runc; opening it write-only
        # writes nothing. Tries /dev (tmpfs without nodev in containers), then / and /tmp.
        sh("for n in /dev/.probe-kmsg /.probe-kmsg /tmp/.probe-kmsg; do "
           "mknod $n c 1 11 2>/dev/null || { echo NOMKNOD $n; continue; }; "
           "(: >> $n) 2>/dev/null && echo OPENED $n; rm -f $n; done; true"),
        _no_word("OPENED"),
        "create a device node outside the allowed set (/dev/kmsg, c 1:11) and open it"),
    "keyctl": Probe(
        (HELPER, "keyctl"), _helper_blocked, "use the kernel keyring (keyctl; keyrings are not namespaced)",
        needs_helper=True),
    "bpf": Probe(
        (HELPER, "bpf"), _helper_blocked, "create a BPF map (bpf(2))", needs_helper=True),
    "host_runtime_exe": Probe(
        # a process that exits or execs between readlink and stat is skipped, not reported: only a stable
        # exe whose file differs from the path of the same name in the container counts
        sh("for p in /proc/[0-9]*; do t=$(readlink $p/exe 2>/dev/null) || continue; "
           "a=$(stat -L -c %d:%i $p/exe 2>/dev/null) || continue; "
           "[ \"$(readlink $p/exe 2>/dev/null)\" = \"$t\" ] || continue; "
           "[ \"$a\" = \"$(stat -L -c %d:%i \"$t\" 2>/dev/null)\" ] "
           "|| echo HOSTEXE $p $t; done; "
           "for d in /var/lib/isobench /run/isobench /run/runc {state_root}; do [ -e $d ] && echo STATE $d; done; true"),
        lambda code, out: "HOSTEXE" not in out and "STATE" not in out,
        "reach the runtime's binary (a /proc/<pid>/exe outside the container, CVE-2019-5736) or its state dirs",
        needs=("state_root",)),
}


def render(argv: tuple[str, ...] | list[str], ctx: dict[str, object]) -> list[str]:
    """Fill ``{placeholders}`` from ``ctx`` (see :func:`host_context`); shell ``${...}`` is left alone."""
    out = []
    for a in argv:
        for key, value in ctx.items():
            a = a.replace("{" + key + "}", str(value))
        out.append(a)
    return out


def _die_with_parent() -> None:
    """In the marker, before exec: SIGKILL when the process that started it dies, even by SIGKILL (a
    killed test session's finally never runs; the marker would sleep on for 10 minutes)."""
    import signal

    from core import syscalls

    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def host_context(state_root: str = "/var/lib/isobench") -> Iterator[dict[str, object]]:
    """Start what the probes look for on the host: a marker process (``see_host_pids``, ``ptrace_host``)
    and a listener on 127.0.0.1 that answers :data:`LOOPBACK_TOKEN` (``host_loopback``). Both stop on exit."""
    marker = subprocess.Popen([MARKER, "600"], executable=shutil.which("sleep") or "/bin/sleep",
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                with contextlib.suppress(OSError):
                    conn.sendall(LOOPBACK_TOKEN.encode() + b"\n")

    t = threading.Thread(target=serve, name="probe-loopback", daemon=True)
    t.start()
    try:
        yield {"host_pid": marker.pid, "loopback_port": srv.getsockname()[1], "state_root": state_root}
    finally:
        stop.set()
        t.join(timeout=2)
        srv.close()
        marker.kill()
        marker.wait()


def run_all(execute: Callable[[str, Probe, list[str]], tuple[int, str]], ctx: dict[str, object],
            names: list[str] | None = None) -> dict[str, bool]:
    """Run probes through ``execute(name, probe, argv) -> (exit_code, output)`` (the environment's way
    of running a command in the busybox image, with the helper mounted when ``probe.needs_helper`` and
    ``probe.cap_drop`` applied where the environment supports it); returns name -> blocked."""
    out = {}
    for name in names or list(PROBES):
        probe = PROBES[name]
        code, text = execute(name, probe, render(probe.argv, ctx))
        out[name] = bool(probe.blocked_if(code, text))
    return out


def build_helper(dest_dir: Path) -> Path:
    """Compile the static probe helper into ``dest_dir`` (mount that dir at :data:`HELPER_DIR`)."""
    from core.cbin import helper

    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / "isoprobe"
    shutil.copy2(helper("isoprobe"), out)  # a private copy: dest_dir is bind-mounted into containers
    os.chmod(out, 0o755)
    return out


def format_table(results: dict[str, dict[str, bool | None]]) -> str:
    """A text table: one row per probe, one column per runtime; ``None`` = not run."""
    runtimes = list(results)
    names = list(PROBES) + sorted({n for r in results.values() for n in r} - set(PROBES))
    width = max(len(n) for n in names)
    cols = [max(len(r), 11) for r in runtimes]
    lines = ["probe".ljust(width) + "  " + "  ".join(r.ljust(c) for r, c in zip(runtimes, cols))]
    for n in names:
        cells = []
        for r, c in zip(runtimes, cols):
            v = results[r].get(n)
            cells.append(("-" if v is None else "blocked" if v else "NOT BLOCKED").ljust(c))
        lines.append(n.ljust(width) + "  " + "  ".join(cells))
    totals = []
    for r, c in zip(runtimes, cols):
        ran = [v for v in results[r].values() if v is not None]
        totals.append(f"{sum(ran)}/{len(ran)}".ljust(c))
    lines.append("blocked".ljust(width) + "  " + "  ".join(totals))
    return "\n".join(lines)
