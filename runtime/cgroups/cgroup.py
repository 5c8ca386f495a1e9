"""Create, join, read, kill and remove one container's cgroup, on v1 or v2 hosts.

This sits on the container start path (target: whole start under 10 ms), so creation is a handful of
mkdir and write calls: no subprocesses, no walks of the cgroup tree, layout detection cached. Limits are
computed by the pure per-controller rules in :mod:`runtime.cgroups.v1` / :mod:`runtime.cgroups.v2`,
validated before anything is made, and applied inside an ``ExitStack`` so a rejected value removes
every directory already created and raises one :class:`~core.errors.CgroupError` naming the
controller, file and value.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.cgroups import devices, fs, rules, v1, v2
from runtime.cgroups.layout import CgroupLayout, detect
from runtime.cgroups.rules import HostFacts
from core.errors import CgroupError
from core.paths import PREFIX

TYPE_CHECKING = False  # typing and runtime.spec: annotations only (each `isobench-runtime` verb is a process)
if TYPE_CHECKING:
    from runtime.spec import Resources

UNIFIED = "unified"  # the key of the single directory in ``Cgroup.paths`` on v2
DESTROY_TIMEOUT_S = 2.0
KILL_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class CgroupUsage:
    """Resource use read back from the kernel (cumulative counters since creation, and current values)."""

    cpu_usage_ns: int
    memory_current_bytes: int
    memory_peak_bytes: int
    pids_current: int
    io_read_bytes: int
    io_write_bytes: int
    oom_kill_count: int


def _check_name(name: str) -> None:
    if not name.startswith(PREFIX) or "/" in name or name in (PREFIX, ".", ".."):
        raise CgroupError(f"cgroup name {name!r} must be {PREFIX}<id> without '/'")


def _read(path: Path, default: str = "") -> str:
    try:
        return fs.read(path)
    except FileNotFoundError:
        return default


class Cgroup:
    """One ``isobench-<id>`` cgroup: a directory per v1 hierarchy, or one unified v2 directory."""

    def __init__(self, name: str, paths: dict[str, Path], layout: CgroupLayout) -> None:
        self.name = name
        self.paths = paths
        self.layout = layout
        self._peak_seen = 0  # v2 kernels before 5.19 have no memory.peak: track what we observe

    def __repr__(self) -> str:
        return f"Cgroup({self.name!r}, {self.layout.driver})"

    def _dirs(self) -> list[Path]:
        """Distinct directories (co-mounted v1 controllers share one)."""
        return list(dict.fromkeys(self.paths.values()))

    def _file(self, controller: str, name: str) -> Path | None:
        base = self.paths.get(UNIFIED) or self.paths.get(controller)
        return None if base is None else base / name

    # -- joining and listing ------------------------------------------------------------------------
    def add_pid(self, pid: int) -> None:
        """Move ``pid`` (a whole process) into this cgroup in every hierarchy, from another process.

        The kernel takes a global lock for this whose first use after an idle spell waits for an RCU grace
        period (~10 ms on an idle host): overlap it with other work, or let the child :meth:`join_self`."""
        for d in self._dirs():
            try:
                fs.write(d / "cgroup.procs", str(pid))
            except OSError as exc:
                raise CgroupError(f"cannot move pid {pid} into {d}: {exc.strerror}") from exc

    def self_join_files(self) -> tuple[str, ...]:
        """The files :meth:`join_self` writes, one per distinct directory (for a child that must
        join after losing sight of the host's /sys, or that is handed them in its launch plan)."""
        return join_files(self.layout, self.paths)

    def join_self(self) -> None:
        """Move the *calling* process in; meant for a freshly forked, single-threaded child before exec.

        Faster than ``add_pid`` from the parent on v1: a v1 write of "0" (self) to ``tasks`` moves one
        thread without the kernel's global threadgroup lock, whose first write after idle waits for an
        RCU grace period (~10 ms measured here) — the whole start-up budget. For the one thread of a
        just-forked child, one thread is the whole process. v2 has no such file for domain cgroups, so
        there it writes ``cgroup.procs``."""
        for f in self.self_join_files():
            try:
                fs.write(Path(f), "0")
            except OSError as exc:
                raise CgroupError(f"cannot join {Path(f).parent}: {exc.strerror}") from exc

    def pids(self) -> list[int]:
        """Processes in the cgroup and its sub-cgroups (runc nests its own ``ctr`` below; a container with a
        cgroup namespace may make more), as a union over hierarchies."""
        found: dict[int, None] = {}
        for top in self._dirs():
            for d in _subtree(top):
                for tok in _read(d / "cgroup.procs").split():
                    found[int(tok)] = None
        return list(found)

    # -- usage --------------------------------------------------------------------------------------
    def usage(self) -> CgroupUsage:
        """Current readings. A missing control file reads as 0 (e.g. no blkio on the host); a cgroup that
        no longer exists is an error, not a row of zeros."""
        if not self._dirs()[0].is_dir():
            raise CgroupError(f"cgroup {self.name} no longer exists (its container has exited)")
        return self._usage_v2() if self.layout.driver == "v2" else self._usage_v1()

    def _read_int(self, controller: str, name: str) -> int:
        f = self._file(controller, name)
        return 0 if f is None else v1.parse_int(_read(f, "0"))

    def _usage_v1(self) -> CgroupUsage:
        oom_file = self._file("memory", "memory.oom_control")
        oom = v1.parse_flat_keyed(_read(oom_file)) if oom_file else {}
        io_file = self._file("blkio", "blkio.throttle.io_service_bytes")
        io_read, io_write = v1.parse_io_service_bytes(_read(io_file)) if io_file else (0, 0)
        return CgroupUsage(
            cpu_usage_ns=self._read_int("cpuacct", "cpuacct.usage"),
            memory_current_bytes=self._read_int("memory", "memory.usage_in_bytes"),
            memory_peak_bytes=self._read_int("memory", "memory.max_usage_in_bytes"),
            pids_current=self._read_int("pids", "pids.current"),
            io_read_bytes=io_read, io_write_bytes=io_write,
            oom_kill_count=oom.get("oom_kill", 0),
        )

    def _usage_v2(self) -> CgroupUsage:
        d = self.paths[UNIFIED]
        cpu = v2.parse_flat_keyed(_read(d / "cpu.stat"))
        current = v2.parse_int(_read(d / "memory.current", "0"))
        peak_text = _read(d / "memory.peak")
        self._peak_seen = max(self._peak_seen, current)
        peak = v2.parse_int(peak_text) if peak_text else self._peak_seen
        io_read, io_write = v2.parse_io_stat(_read(d / "io.stat"))
        return CgroupUsage(
            cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
            memory_current_bytes=current,
            memory_peak_bytes=peak,
            pids_current=v2.parse_int(_read(d / "pids.current", "0")),
            io_read_bytes=io_read, io_write_bytes=io_write,
            oom_kill_count=v2.parse_flat_keyed(_read(d / "memory.events")).get("oom_kill", 0),
        )

    # -- kill and destroy ---------------------------------------------------------------------------
    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process. SIGKILL: v2 ``cgroup.kill`` when present, else kill what is listed until the
        cgroup is empty (re-reading catches children forked meanwhile, e.g. a fork bomb)."""
        kill_file = self.paths[UNIFIED] / "cgroup.kill" if UNIFIED in self.paths else None
        if sig == signal.SIGKILL and kill_file is not None and kill_file.exists():  # kernel 5.14+
            fs.write(kill_file, "1")
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # exited between listing and signalling
                    os.kill(pid, sig)
            if sig != signal.SIGKILL:
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name}: processes {pids[:10]} survive SIGKILL "
                                  f"after {KILL_TIMEOUT_S:g} s")
            time.sleep(0.005)

    def destroy(self) -> None:
        """Remove every directory (nested children first), retrying while exiting processes leave.
        Idempotent: already-removed directories are fine."""
        deadline = time.monotonic() + DESTROY_TIMEOUT_S
        for d in reversed(self._dirs()):
            _remove_tree(d, deadline)


def _subtree(d: Path) -> list[Path]:
    """``d`` and every cgroup below it (only this cgroup's own subtree is walked, never the whole tree)."""
    out = [d]
    try:
        out += [q for p in d.iterdir() if p.is_dir() for q in _subtree(p)]
    except FileNotFoundError:
        pass
    return out


def _remove_tree(d: Path, deadline: float) -> None:
    try:
        children = [p for p in d.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return
    for child in children:
        _remove_tree(child, deadline)
    while True:
        try:
            fs.remove_dir(d)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                procs = _read(d / "cgroup.procs").split()
                raise CgroupError(f"cannot remove cgroup {d}: {exc.strerror}"
                                  + (f" (processes still inside: {' '.join(procs[:10])})" if procs else "")) from exc
            time.sleep(0.01)


# -- creation -----------------------------------------------------------------------------------------

def _host_cpus(layout: CgroupLayout) -> frozenset[int]:
    text = _read(Path("/sys/devices/system/cpu/online")).strip()
    return rules.parse_cpu_list(text) if text else frozenset(os.sched_getaffinity(0))


def _facts(resources: Resources, layout: CgroupLayout) -> HostFacts:
    """Only what the asked limits need (each fact is a file read on the start path)."""
    needs_cpus = resources.cpuset_cpus is not None or resources.cpu_quota_us is not None
    parent_mems = "0"
    if resources.cpuset_cpus is not None and layout.driver == "v1" and "cpuset" in layout.v1:
        base = layout.v1["cpuset"]
        parent_mems = (_read(base / "cpuset.effective_mems") or _read(base / "cpuset.mems")).strip() or "0"
    memsw = True
    if resources.memory_swap_bytes is not None and layout.driver == "v1" and "memory" in layout.v1:
        memsw = (layout.v1["memory"] / v1.MEMSW_FILE).exists()
    return HostFacts(host_cpus=_host_cpus(layout) if needs_cpus else frozenset(), parent_mems=parent_mems,
                     memsw_available=memsw, resolve_device=devices.block_device_number)


def _missing(controller: str) -> CgroupError:
    return CgroupError(f"cgroup controller {controller!r} is not available on this host")


def _plan_v1(name: str, resources: Resources, layout: CgroupLayout, facts: HostFacts
             ) -> tuple[dict[str, Path], list[tuple[str, Path, str]]]:
    """``name`` is the cgroup's path below each hierarchy's root (``isobench-<id>``, or an OCI
    bundle's ``linux.cgroupsPath``)."""
    wanted = v1.needed_controllers(resources)
    for ctl in wanted:
        if ctl not in layout.v1:
            raise _missing(ctl)
    controllers = wanted + tuple(c for c in v1.USAGE_OPTIONAL if c in layout.v1 and c not in wanted)
    paths = {ctl: layout.v1[ctl] / name for ctl in controllers}
    writes = [(ctl, paths[ctl] / f, value)
              for ctl, rule in v1.SETTINGS.items() if ctl in paths
              for f, value in rule(resources, facts)]
    return paths, writes


def _plan_v2(name: str, resources: Resources, layout: CgroupLayout, facts: HostFacts
             ) -> tuple[dict[str, Path], list[tuple[str, Path, str]]]:
    assert layout.unified is not None
    wanted = v2.needed_controllers(resources)
    for ctl in wanted:
        if ctl not in layout.unified_controllers:
            raise _missing(ctl)
    d = layout.unified / name
    writes = [(ctl, d / f, value) for ctl, rule in v2.SETTINGS.items() for f, value in rule(resources, facts)]
    return {UNIFIED: d}, writes


def _enable_v2_controllers(layout: CgroupLayout, resources: Resources) -> None:
    assert layout.unified is not None
    wanted = v2.needed_controllers(resources) + tuple(
        c for c in v2.USAGE_OPTIONAL if c in layout.unified_controllers and c not in v2.needed_controllers(resources))
    control = layout.unified / "cgroup.subtree_control"
    line = v2.subtree_control_write(wanted, set(_read(control).split()))
    if line is None:
        return
    try:
        fs.write(control, line)
    except OSError as exc:
        raise CgroupError(f"cannot enable controllers ({line}) in {control}: {exc.strerror}") from exc


def join_files(layout: CgroupLayout, paths: dict[str, Path]) -> tuple[str, ...]:
    """v1: ``tasks`` (a write of "0" moves the calling thread without the kernel's global lock);
    v2: ``cgroup.procs`` (domain cgroups have no per-thread file)."""
    target = "cgroup.procs" if layout.driver == "v2" else "tasks"
    return tuple(str(d / target) for d in dict.fromkeys(paths.values()))


@dataclass(frozen=True)
class CgroupPlan:
    """A validated cgroup, not yet made: the directories and the limit writes, in order.

    Splitting validation (:func:`plan_cgroup`, at container create) from the mkdir and writes
    (:meth:`make`, after fork) lets the runtime make the cgroup while the container's child builds its
    root, off the start path, while bad values still fail at create before anything exists."""

    name: str
    paths: dict[str, Path]
    writes: tuple[tuple[str, Path, str], ...]
    layout: CgroupLayout
    resources: Resources

    def self_join_files(self) -> tuple[str, ...]:
        """What the container's child writes "0" into to join, known before anything is made."""
        return join_files(self.layout, self.paths)

    def make(self) -> Cgroup:
        """mkdir in every hierarchy and apply the limits; all or nothing."""
        if self.layout.driver == "v2":
            _enable_v2_controllers(self.layout, self.resources)
        cg = Cgroup(self.name, dict(self.paths), self.layout)
        with contextlib.ExitStack() as undo:
            for d in dict.fromkeys(self.paths.values()):
                _make_parents(d, self.layout)
                try:
                    fs.make_dir(d)
                except FileExistsError as exc:
                    raise CgroupError(f"cgroup {d} already exists (name {self.name} in use)") from exc
                except OSError as exc:
                    raise CgroupError(f"cannot create cgroup {d}: {exc.strerror}") from exc
                undo.callback(_remove_quietly, d)
            self._write_limits()
            undo.pop_all()
        return cg

    def apply_limits(self, cg: Cgroup) -> Cgroup:
        """This plan's limits written into ``cg``, the same directories made earlier without limits
        (a spare made ahead: runtime.lifecycle.spares); what :meth:`make` does after its mkdirs."""
        if self.writes and self.layout.driver == "v2":
            _enable_v2_controllers(self.layout, self.resources)
        self._write_limits()
        return cg

    def _write_limits(self) -> None:
        for ctl, f, value in self.writes:
            try:
                fs.write(f, value)
            except OSError as exc:
                raise CgroupError(f"cgroup controller {ctl!r} rejected {value!r} for {f.name} "
                                  f"({exc.strerror})") from exc


def _make_parents(d: Path, layout: CgroupLayout) -> None:
    """Missing parents of a nested cgroup (an OCI ``cgroupsPath`` such as ``/machine/ctr``); a new v1
    cpuset parent gets its parent's cpus and mems, without which nothing can join below it."""
    missing = []
    p = d.parent
    while not p.is_dir():
        missing.append(p)
        p = p.parent
    for m in reversed(missing):
        try:
            fs.make_dir(m)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CgroupError(f"cannot create cgroup {m}: {exc.strerror}") from exc
        if (m / "cpuset.cpus").exists() and not _read(m / "cpuset.cpus").strip():
            for f in ("cpuset.cpus", "cpuset.mems"):
                fs.write(m / f, _read(m.parent / f).strip())


def _relative_path(path: str) -> str:
    """``linux.cgroupsPath`` below the hierarchy roots: ``/a/b`` and ``a/b`` alike (runc resolves a
    relative one against its own cgroup; the runtime's callers are root-level daemons, so the root)."""
    rel = path.strip("/")
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or ":" in parts[0] and len(parts) == 1:
        raise CgroupError(f"cgroupsPath {path!r} is not a path like /parent/name (systemd slices are not supported)")
    return rel


def plan_cgroup(name: str, resources: Resources, layout: CgroupLayout | None = None,
                path: str | None = None) -> CgroupPlan:
    """Validate ``resources`` against the host (controllers present, CPUs and memory nodes that exist)
    and compute what :meth:`CgroupPlan.make` will do. Reads a few files; makes nothing. ``path``: an
    OCI bundle's ``linux.cgroupsPath`` instead of ``name`` at the top of each hierarchy."""
    _check_name(name)
    layout = layout or detect()
    facts = _facts(resources, layout)
    rules.validate(resources, facts)
    plan = _plan_v2 if layout.driver == "v2" else _plan_v1
    paths, writes = plan(_relative_path(path) if path else name, resources, layout, facts)
    return CgroupPlan(name, paths, tuple(writes), layout, resources)


def create_cgroup(name: str, resources: Resources, layout: CgroupLayout | None = None) -> Cgroup:
    """Make ``name`` in every hierarchy needed and apply ``resources``; all or nothing.

    The caller must already hold the lease for the id (``core.leases.take``) so ``gc`` leaves it alone."""
    return plan_cgroup(name, resources, layout).make()


def _remove_quietly(d: Path) -> None:
    """Rollback of a half-made cgroup: nothing has joined it yet, so rmdir succeeds or it never existed."""
    with contextlib.suppress(FileNotFoundError):
        fs.remove_dir(d)


def open_cgroup(name: str, layout: CgroupLayout | None = None, path: str | None = None) -> Cgroup:
    """An existing cgroup (for ``stats``/``inspect``/``gc``): the hierarchies where it exists.
    ``path``: its OCI ``cgroupsPath`` when it has one."""
    _check_name(name)
    layout = layout or detect()
    rel = _relative_path(path) if path else name
    if layout.driver == "v2":
        assert layout.unified is not None
        paths = {UNIFIED: layout.unified / rel} if (layout.unified / rel).is_dir() else {}
    else:
        paths = {ctl: mount / rel for ctl, mount in layout.v1.items() if (mount / rel).is_dir()}
    if not paths:
        raise CgroupError(f"cgroup {name} does not exist on this host")
    return Cgroup(name, paths, layout)
