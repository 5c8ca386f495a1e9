"""The one interface every execution environment (native, container, runc, vm) implements.

Workloads are written once against :class:`Environment`: ``run(job)`` for a command that runs to
completion (start-up, cpu, memory, disk, probes) and ``start(job)`` for a server or an idle instance
(HTTP, iperf3, footprint) that returns an :class:`Instance` to wait on, read usage from, and stop. The
differences between the four technologies (chroot, the project's runtime, runc, a VM) stay inside the
environment modules, so the only thing that changes between two numbers of one workload is the
isolation technology.

Also here: :class:`OutputPump`, the event-driven reader of a child's output (a thread blocks on the
pipe; the ready marker sets an Event, so waiting for "ready" involves no polling loop), and PSS
readings of host processes (what an instance costs the host).
"""

from __future__ import annotations

import abc
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import BenchError

READY_MARKER = "ISOBENCH-READY"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job, in the units of the names; ``None`` = unlimited. Environments map
    them to cgroups (container, runc) or to domain settings (vm); native has no limits at all."""

    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    memory_bytes: int | None = None
    pids_max: int | None = None
    write_bps: int | None = None          # block-device write throttle on the disk of the writable layer

    def any(self) -> bool:
        return any(v is not None for v in (self.cpus, self.cpu_shares, self.cpuset_cpus, self.memory_bytes,
                                           self.pids_max, self.write_bps))


@dataclass(frozen=True)
class Volume:
    """A host directory mounted at ``destination`` (native: bind-mounted into the chroot)."""

    host_dir: Path
    destination: str = "/data"


@dataclass(frozen=True)
class Job:
    """What to run, identical for every environment. ``{port}`` in ``argv`` is replaced by the port the
    server must listen on (the container port, or for native a free host port on loopback)."""

    image: str
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    port: int | None = None               # container port to publish on 127.0.0.1
    volume: Volume | None = None
    timeout_s: float = 300.0
    vcpus: int = 1                        # VM only (containers see the host's CPUs)
    memory_mib: int = 256                 # VM guest RAM
    ready_marker: str | None = None       # a line the workload prints when ready (start())
    workdir: str | None = None
    cap_drop: tuple[str, ...] = ()        # capabilities to drop (container, runc); native/vm have no such knob


@dataclass
class Outcome:
    """A job run to completion. ``phases``: phase -> seconds since the create call (host monotonic),
    in order; ``wall_s`` is create-to-exit."""

    exit_code: int
    output: str
    wall_s: float
    phases: dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)   # env-specific readings: cpu_usage_s, memory_peak_bytes, ...


@dataclass(frozen=True)
class Usage:
    pss_bytes: int
    cpu_s: float
    memory_peak_bytes: int | None = None
    detail: str = ""


LIVE: "set[Instance]" = set()   # instances not yet stopped: the runner stops them on Ctrl-C/crash


def stop_all_live() -> list[str]:
    """Stop every instance still alive (after an interrupt landed between create and stop, or inside a
    stop); returns the errors. Each stop is idempotent, so a half-done stop is finished here."""
    errors = []
    for inst in list(LIVE):
        try:
            inst.stop()
        except BenchError as exc:
            errors.append(str(exc))
        LIVE.discard(inst)
    return errors


class Instance(abc.ABC):
    """A started (detached) job. Subclasses call :meth:`_register` first thing in ``__init__`` and
    :meth:`_unregister` at the end of a completed ``stop``."""

    def _register(self) -> None:
        LIVE.add(self)

    def _unregister(self) -> None:
        LIVE.discard(self)

    env_name: str = ""
    created_ns: int = 0                   # perf_counter_ns at the create call
    endpoint: tuple[str, int] | None = None   # host address reaching the job's port
    target: str = ""                      # where the endpoint leads, e.g. "10.88.0.5:80"

    @abc.abstractmethod
    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Block until the job printed its ready marker (or is running); seconds since create."""

    @abc.abstractmethod
    def usage(self) -> Usage:
        """What the instance costs the host now."""

    @abc.abstractmethod
    def wait(self, timeout_s: float | None = None) -> Outcome:
        """Wait for the job to exit by itself."""

    def workload_pids(self) -> list[int]:
        """Host pids of the job's own processes (not the runtime's); empty where unknown (VM guests)."""
        return []

    def accounting_pid(self) -> int | None:
        """A host pid in the instance's own cgroup (its kernel memory is charged there): the job's first
        process; the VM overrides it with QEMU's."""
        pids = self.workload_pids()
        return pids[0] if pids else None

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the job and remove everything it made on the host (idempotent)."""

    def __hash__(self) -> int:
        return id(self)

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Environment(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def run(self, job: Job) -> Outcome:
        """Create, start, wait for exit, clean up."""

    @abc.abstractmethod
    def start(self, job: Job) -> Instance:
        """Create and start; the caller stops the returned instance."""

    def describe(self) -> dict:
        """Execution technology and versions, recorded in meta.json."""
        return {}

    def accelerator(self) -> tuple[str, str]:
        """(accelerator, reason) for VM environments; containers run natively on the host kernel."""
        return ("none", "shares the host kernel")

    def close(self) -> None:
        """Release environment-wide resources (daemons stay: they are the project's, started once)."""


# ---------------------------------------------------------------------------------------- helpers

def elapsed_s(since_ns: int) -> float:
    return (time.perf_counter_ns() - since_ns) / 1e9


class OutputPump:
    """Reads a child's combined output on a thread; :meth:`wait_marker` blocks on an Event (no polling)."""

    def __init__(self, stream, marker: str | None = None, limit_bytes: int = 4 << 20) -> None:
        self._stream = stream
        self._marker = marker
        self._chunks: list[str] = []
        self._size = 0
        self._limit = limit_bytes
        self.ready = threading.Event()
        self.ready_ns: int | None = None
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="isobench-output", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode(errors="replace")
                if self._marker and not self.ready.is_set() and self._marker in line:
                    self.ready_ns = time.perf_counter_ns()
                    self.ready.set()
                if self._size < self._limit:
                    self._chunks.append(line)
                    self._size += len(line)
        except (OSError, ValueError):
            pass  # the pipe was closed under us by stop(): the output so far is kept
        finally:
            self.closed.set()
            self.ready.set()  # wake a waiter: it checks ready_ns to tell ready from exited

    def wait_marker(self, timeout_s: float) -> bool:
        self.ready.wait(timeout_s)
        return self.ready_ns is not None

    def text(self, join_timeout_s: float = 5.0) -> str:
        self._thread.join(join_timeout_s)
        return "".join(self._chunks)


def pss_bytes(pids: list[int]) -> int:
    """Sum of PSS (proportional set size: shared pages split fairly) of the given host processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(stat[11]) + int(stat[12])) / tick
    return total


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fill_port(argv: tuple[str, ...], port: int | None) -> list[str]:
    if port is None:
        return list(argv)
    return [a.replace("{port}", str(port)) for a in argv]


def kill_wait(proc: subprocess.Popen, grace_s: float = 5.0) -> int | None:
    if proc.poll() is None:
        proc.kill()
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"process {proc.pid} did not exit {grace_s}s after SIGKILL") from exc
