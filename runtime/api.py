"""The container runtime's library API: what the benchmark harness calls in-process and what the CLI's
per-container monitor runs.

    c = create(config, paths)          # validate, resolve image, dirs, cgroup, network plan; no process
    start(c)                           # fork + namespaces + rootfs + cgroup + network + exec
    code = wait(c, timeout_s=None)     # exit code (exit N -> N, signal N -> 128+N, OOM -> 137)
    kill(c, signal.SIGTERM); delete(c) # delete removes everything the container made
    r = run(config, paths)             # all of it: RunResult(exit_code, timings_ns, stdout, stderr, ...)
    usage(c) -> CgroupUsage; init_pid(c); ip(c); load(paths, "name-or-id") -> Container

The calling process is the container's parent (its "monitor"): it holds the lease on the container's
host objects, so ``gc`` leaves them alone while it lives. Timings are ``time.perf_counter_ns()``
stamps (CLOCK_MONOTONIC, comparable across processes) of each phase so start-up can be broken down:
``call, created, start, forked, child, cgroup, namespaces, rootfs, network, exec, exited`` (``child``,
``namespaces`` and ``rootfs`` are stamped inside the container's process).

Kept lean on purpose: the start path imports only what it uses (security and the image store; the
network package only for ``bridge``) and never runs a subprocess.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import namespaces
from core import leases
from runtime.config_image import exposed_ports, process_spec
from core.errors import ContainerError, IsobenchError
from runtime.lifecycle import state as S
from runtime.lifecycle.state import wait_pid_exit
from runtime.lifecycle.process import LaunchPlan, exit_code_of, spawn
from core.paths import HostPaths, host_name, new_id
from runtime.rootfs.mounts import MountPlan, RootfsPlan
from runtime.spec import ContainerConfig
from runtime.validate import validate

LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass
class RunResult:
    exit_code: int
    timings_ns: dict[str, int]
    stdout: bytes = b""
    stderr: bytes = b""
    container_id: str = ""
    oom_killed: bool = False

    @property
    def timings(self) -> dict[str, int]:
        return self.timings_ns


@dataclass
class Container:
    """A container of one state root. Built by :func:`create` (this process is its parent) or
    :func:`load` (another process is: operations go through pids and state files)."""

    id: str
    paths: HostPaths
    config: ContainerConfig | None
    name: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    ip_address: str | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    timings_ns: dict[str, int] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    final_usage: Any = None
    _plan: LaunchPlan | None = None
    _security: Any = None
    _cgroup: Any = None
    _cgroup_plan: Any = None
    _netplan: Any = None
    _stdio: tuple[int, int, int] | None = None
    _own_fds: tuple[int, ...] = ()
    _is_parent: bool = False

    @property
    def dir(self) -> Path:
        return S.container_dir(self.paths, self.id)

    @property
    def host_name(self) -> str:
        return host_name(self.id)


# ----------------------------------------------------------------------------- create

def _resolve_user(user: str, lowerdirs: list[Path]) -> tuple[int, int, str]:
    """``-u``/image User to (uid, gid, home) using the image's /etc/passwd and /etc/group."""
    if user in ("", "0", "root", "0:0", "root:root"):
        return 0, 0, "/root"
    from runtime.image.runstep import resolve_user_in

    def top(rel: str) -> Path | None:
        for d in reversed(lowerdirs):
            if os.path.lexists(d / rel):
                return d / rel
        return None

    try:
        return resolve_user_in(user, top("etc/passwd"), top("etc/group"))
    except IsobenchError as exc:
        raise ContainerError(f"--user {user!r}: {exc}") from exc


def _mount_plans(config: ContainerConfig, paths: HostPaths) -> tuple[MountPlan, ...]:
    out = []
    for m in config.mounts:
        if m.type == "volume":
            data = paths.volumes / m.source / "_data"
            data.mkdir(parents=True, exist_ok=True)  # named volumes persist: never undone
            out.append(MountPlan("bind", str(data), m.destination, m.read_only))
        elif m.type == "tmpfs":
            out.append(MountPlan("tmpfs", "", m.destination, m.read_only))
        else:
            out.append(MountPlan("bind", m.source, m.destination, m.read_only))
    return tuple(out)


def _write_etc(cdir: Path, hostname: str, mode: str) -> tuple[tuple[str, str], ...]:
    files = {"hostname": hostname + "\n", "hosts": LOCALHOST + f"127.0.1.1\t{hostname}\n", "resolv.conf": ""}
    if mode == "host":
        with contextlib.suppress(OSError):
            files["resolv.conf"] = Path("/etc/resolv.conf").read_text()
    for fname, text in files.items():  # os-level: three io.open stacks cost ~0.1 ms of every start
        fd = os.open(f"{cdir}/{fname}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    return tuple((f"/etc/{fname}", str(cdir / fname)) for fname in files)


def _open_logs(cdir: Path) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    fds = (os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), os.open(cdir / "stdout.log", flags, 0o640),
           os.open(cdir / "stderr.log", flags, 0o640))
    return fds, fds


def create(config: ContainerConfig, paths: HostPaths, *, stdio: tuple[int, int, int] | None = None,
           owner_pid: int | None = None, auto_remove: bool = False, detached: bool = True,
           extra_state: dict[str, Any] | None = None) -> Container:
    """Everything but the process. ``stdio`` (stdin, stdout, stderr fds, kept open by the caller) or
    None: stdin /dev/null, output to ``stdout.log``/``stderr.log`` in the container dir."""
    t_call = time.perf_counter_ns()
    validate(config)
    from runtime.image.store import ImageStore

    prepared = _prepared_security(config.security)
    store = ImageStore(paths)
    img = store.resolve(config.image)
    lowers = store.layer_dirs(img)
    cid = new_id()
    hostname = config.hostname or cid[:12]
    proc = process_spec(config, img.config, hostname)
    uid, gid, home = _resolve_user(proc.user, lowers)
    env = proc.env if any(e.startswith("HOME=") for e in proc.env) else proc.env + (f"HOME={home}",)
    cdir = S.container_dir(paths, cid)
    c = Container(id=cid, paths=paths, config=config, name=config.name)
    with contextlib.ExitStack() as undo:
        if config.name:
            S.reserve_name(paths, config.name, cid)
            undo.callback(S.release_name, paths, config.name, cid)
        cdir.mkdir(parents=True)
        undo.callback(S.remove_dir, paths, cid)
        os.mkdir(f"{cdir}/upper")
        os.mkdir(f"{cdir}/work")
        leases.take(cid, pid=owner_pid, kind="container", root=str(paths.root))
        undo.callback(leases.release, cid)
        mounts = _mount_plans(config, paths)
        etc = _write_etc(cdir, hostname, config.network.mode)
        if stdio is None:
            stdio, owned = _open_logs(cdir)
            c._own_fds = owned
            undo.callback(_close_all, owned)
        from runtime.cgroups import cgroup_namespace_supported, plan_cgroup

        # validated now (bad values fail here), made by start() while the child builds its root
        c._cgroup_plan = plan_cgroup(c.host_name, config.resources)
        if config.network.mode == "bridge":
            from runtime import network

            c._netplan = network.prepare(cid, config.network, paths, exposed_ports(img.config, config.image))
            undo.callback(network.detach, cid, paths)
        cgroupns = cgroup_namespace_supported()
        remap = config.userns == "remap"
        if remap:  # the container's root must own its writable layer's top
            for sub in ("upper", "work"):
                os.chown(cdir / sub, namespaces.REMAP_HOST_BASE, namespaces.REMAP_HOST_BASE)
        argv, init_bin = proc.argv, ""
        if config.init:
            from core.cbin import helper

            argv, init_bin = ("/dev/init", "--") + proc.argv, str(helper("isobench-init"))
        c._plan = LaunchPlan(
            container_id=cid, hostname=hostname, argv=argv, env=env, workdir=proc.workdir,
            uid=uid, gid=gid, groups=(gid,) if uid else (), unshare_flags=namespaces.child_flags(config, cgroupns),
            cgroupns=cgroupns, userns_remap=remap, loopback_up=config.network.mode == "none",
            cgroup_join=c._cgroup_plan.self_join_files(),
            rootfs=RootfsPlan(lowerdirs=tuple(str(d) for d in lowers), upper=str(cdir / "upper"),
                              work=str(cdir / "work"), merged=_shared_mountpoint(paths), mounts=mounts,
                              etc_files=etc, read_only=config.read_only_rootfs, init_binary=init_bin))
        c._security = prepared
        c._stdio = stdio
        c._is_parent = True
        c.state = {
            "id": cid, "name": config.name, "image": img.name, "image_digest": img.manifest_digest,
            "argv": list(proc.argv), "env": list(env), "workdir": proc.workdir, "user": proc.user, "uid": uid, "gid": gid,
            "hostname": hostname, "network_mode": config.network.mode, "userns_remap": remap,
            "cgroupns": cgroupns, "status": "created", "created_at": S.now_iso(), "pid": None,
            "pid_start": None, "monitor_pid": owner_pid or os.getpid(),
            "monitor_start": S.proc_start_time(owner_pid or os.getpid()), "exit_code": None,
            "oom_killed": False, "auto_remove": auto_remove, "detached": detached, "ip": None,
            "ports": [], "config": _config_dict(config), **(extra_state or {}),
        }
        S.write_state(cdir, c.state)
        undo.pop_all()
    c.timings_ns["call"] = t_call
    c.timings_ns["created"] = time.perf_counter_ns()
    return c


@functools.lru_cache(maxsize=64)
def _prepared_security(spec: Any) -> Any:
    """security.prepare is pure (caps, compiled seccomp program): compute once per distinct spec."""
    from runtime import security

    return security.prepare(spec)


@functools.lru_cache(maxsize=8)
def _shared_mountpoint(paths: HostPaths) -> str:
    """One mountpoint for every container's root: each container mounts its overlay there inside its
    own mount namespace only, so they never meet, and no per-container directory is needed."""
    mnt = paths.containers / ".rootfs"
    mnt.mkdir(parents=True, exist_ok=True)
    return str(mnt)


@functools.lru_cache(maxsize=64)
def _config_dict(config: ContainerConfig) -> dict[str, Any]:
    """The config as JSON-able data (cached: a harness starts the same frozen config many times)."""
    from dataclasses import asdict

    return asdict(config)


def _close_all(fds: tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ----------------------------------------------------------------------------- start / wait

def start(c: Container) -> None:
    """Start the created container; returns once its workload has exec'd."""
    if c._plan is None or not c._is_parent:
        raise ContainerError(f"container {c.id} was not created by this process; only its creator can start it")
    if c.pid is not None:
        raise ContainerError(f"container {c.id} is already started")
    t0 = time.perf_counter_ns()
    attachment: list[Any] = []

    def on_forked(pid: int) -> None:
        # The child is unsharing meanwhile, then joins the cgroup itself (LaunchPlan.cgroup_join): the
        # mkdirs and limit writes overlap its unshare, and no process is moved from outside
        c._cgroup = c._cgroup_plan.make()

    def on_ready(pid: int) -> None:
        if c._netplan is not None:
            from runtime import network

            att = network.attach(c._netplan, pid)
            attachment.append(att)
            listed = {n for _, names in att.hosts_entries for n in names.split()}
            hostname = None if c._plan.hostname in listed else c._plan.hostname  # no duplicate line
            _rewrite(c.dir / "hosts", network.hosts_file(att, hostname))
            _rewrite(c.dir / "resolv.conf", network.resolv_conf(att))

    try:
        spawned = spawn(c._plan, c._security, c._stdio, on_forked, on_ready if c._netplan is not None else None)
    except BaseException:
        c.state.update(status="exited", exit_code=125, finished_at=S.now_iso())
        _after_exit(c)
        raise
    finally:
        _close_all(c._own_fds)
        c._own_fds = ()
    c.pid = spawned.pid
    c.pid_start = S.proc_start_time(spawned.pid)
    c.timings_ns["start"] = t0
    c.timings_ns.update(spawned.timings_ns)
    if attachment:
        att = attachment[0]
        c.ip_address = att.ip
        c.state["ip"] = att.ip
        c.state["ports"] = [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in att.ports]
    c.state.update(status="running", pid=c.pid, pid_start=c.pid_start, started_at=S.now_iso())
    S.write_state(c.dir, c.state)


def _rewrite(path: Path, text: str) -> None:
    """In place (not rename): the file is already bind-mounted into the container by inode."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def wait(c: Container, timeout_s: float | None = None) -> int:
    """The container's exit code; raises ContainerError on timeout (the container keeps running)."""
    if c.exit_code is not None:
        return c.exit_code
    if c.pid is None:
        raise ContainerError(f"container {c.id} was never started")
    if not c._is_parent:
        return _wait_foreign(c, timeout_s)
    if timeout_s is not None and not wait_pid_exit(c.pid, c.pid_start, timeout_s):
        raise ContainerError(f"container {c.id} still running after {timeout_s:g} s")
    _, status = os.waitpid(c.pid, 0)
    c.timings_ns["exited"] = time.perf_counter_ns()
    record_exit(c, status)
    return c.exit_code  # type: ignore[return-value]


def record_exit(c: Container, status: int) -> None:
    """After waitpid: the exit code, OOM kill, final usage; then free cgroup, network and lease."""
    code = exit_code_of(status)
    try:
        c.final_usage = c._cgroup.usage() if c._cgroup is not None else None
    except (OSError, IsobenchError):
        c.final_usage = None
    oom = bool(c.final_usage and c.final_usage.oom_kill_count > 0 and code == 128 + signal.SIGKILL)
    c.exit_code, c.oom_killed = code, oom
    c.state.update(status="exited", exit_code=code, oom_killed=oom, finished_at=S.now_iso())
    if c.final_usage is not None:
        c.state["final_usage"] = _usage_dict(c.final_usage)
    _after_exit(c)


def _usage_dict(u: Any) -> dict[str, int]:
    from dataclasses import asdict

    return asdict(u)


def _after_exit(c: Container) -> None:
    """Free what only a running container needs; the dir (logs, state, upper) stays until delete."""
    errors = []
    if c._cgroup is not None:
        try:
            c._cgroup.destroy()
        except (OSError, IsobenchError) as exc:
            errors.append(str(exc))
        c._cgroup = None
    if c._netplan is not None:
        from runtime import network

        try:
            network.detach(c.id, c.paths)
        except (OSError, IsobenchError) as exc:
            errors.append(str(exc))
        c._netplan = None
    if c.dir.is_dir():
        S.write_state(c.dir, c.state)
    leases.release(c.id)
    if errors:
        raise ContainerError(f"container {c.id}: clean-up after exit failed: {'; '.join(errors)}")


def _wait_foreign(c: Container, timeout_s: float | None) -> int:
    """Wait for a container another process (its monitor) owns: first the workload, then the monitor's
    record of the exit."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if not wait_pid_exit(c.pid, c.pid_start, timeout_s):  # type: ignore[arg-type]
        raise ContainerError(f"container {c.id} still running after {timeout_s:g} s")
    mon, mstart = c.state.get("monitor_pid"), c.state.get("monitor_start")
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if mon and not wait_pid_exit(mon, mstart, 10.0 if left is None else left + 5.0):
        raise ContainerError(f"container {c.id}: its monitor {mon} did not record the exit")
    st = S.read_state(c.dir) or c.state
    c.state = st
    c.exit_code = st.get("exit_code")
    c.oom_killed = bool(st.get("oom_killed"))
    if c.exit_code is None:
        raise ContainerError(f"container {c.id}: exit status unknown (its monitor died); run `isobench gc`")
    return c.exit_code


# ----------------------------------------------------------------------------- kill / delete / queries

def is_running(c: Container) -> bool:
    return c.exit_code is None and c.pid is not None and S.alive(c.pid, c.pid_start)


def kill(c: Container, sig: int = signal.SIGKILL) -> None:
    """Signal the container's PID 1 (as from the host: PID 1 without a handler ignores all but SIGKILL)."""
    if not is_running(c):
        raise ContainerError(f"container {c.id} is not running")
    try:
        os.kill(c.pid, sig)  # type: ignore[arg-type]
    except ProcessLookupError:
        pass


def stop(c: Container, timeout_s: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code when known."""
    if is_running(c):
        kill(c, signal.SIGTERM)
        if not wait_pid_exit(c.pid, c.pid_start, timeout_s):  # type: ignore[arg-type]
            with contextlib.suppress(ContainerError):
                kill(c, signal.SIGKILL)
    if c.pid is None:
        return None
    return wait(c, timeout_s=30.0)


def delete(c: Container, force: bool = False) -> None:
    """Remove the container and everything it made (cgroup, network, writable layer, logs, state)."""
    if is_running(c):
        if not force:
            raise ContainerError(f"container {c.name or c.id} is running: stop it first or use rm -f")
        kill(c, signal.SIGKILL)
        with contextlib.suppress(ContainerError):
            wait(c, timeout_s=30.0)
    elif c._is_parent and c.pid is not None and c.exit_code is None:
        wait(c)  # reap it
    if not c._is_parent:  # let the monitor finish recording the exit before its files go away
        mon, mstart = c.state.get("monitor_pid"), c.state.get("monitor_start")
        if mon and mon != os.getpid() and S.alive(mon, mstart):
            wait_pid_exit(mon, mstart, 10.0)
    errors: list[str] = []
    if c._cgroup is not None or not c._is_parent:
        from runtime.cgroups import open_cgroup

        try:
            cg = c._cgroup or open_cgroup(c.host_name)
            cg.destroy()
        except IsobenchError:
            pass  # already gone: destroyed at exit
    if c._netplan is not None or (not c._is_parent and c.state.get("network_mode") == "bridge"):
        from runtime import network

        try:
            network.detach(c.id, c.paths)
        except (OSError, IsobenchError) as exc:
            errors.append(str(exc))
    _close_all(c._own_fds)
    S.release_name(c.paths, c.name, c.id)
    S.remove_dir(c.paths, c.id)
    leases.release(c.id)
    if errors:
        raise ContainerError(f"container {c.id}: removal incomplete: {'; '.join(errors)}")


def usage(c: Container) -> Any:
    """cgroup usage now (or at exit, for an exited container): CgroupUsage."""
    if c.exit_code is not None:
        if c.final_usage is None and c.state.get("final_usage"):
            from runtime.cgroups import CgroupUsage

            c.final_usage = CgroupUsage(**c.state["final_usage"])
        return c.final_usage
    from runtime.cgroups import open_cgroup

    return (c._cgroup or open_cgroup(c.host_name)).usage()


def init_pid(c: Container) -> int | None:
    """Host pid of the container's PID 1."""
    return c.pid


def ip(c: Container) -> str | None:
    return c.ip_address


def load(paths: HostPaths, ref: str) -> Container:
    """A container from its state (by name, id or id prefix), for verbs run by another process."""
    st = S.lookup(paths, ref)
    c = Container(id=st["id"], paths=paths, config=None, name=st.get("name"), pid=st.get("pid"),
                  pid_start=st.get("pid_start"), ip_address=st.get("ip"), exit_code=st.get("exit_code"),
                  oom_killed=bool(st.get("oom_killed")), state=st)
    if c.exit_code is None and c.pid and not S.alive(c.pid, c.pid_start):
        mon = st.get("monitor_pid")
        if not S.alive(mon, st.get("monitor_start")):
            c.state["status"] = "dead"  # workload and monitor gone without a record: gc's business
    return c


def run(config: ContainerConfig, paths: HostPaths, *, timeout_s: float | None = None,
        capture: bool = True, keep: bool = False) -> RunResult:
    """create + start + wait + delete; stdout/stderr captured (from the log files) when ``capture``."""
    c = create(config, paths)
    try:
        start(c)
        code = wait(c, timeout_s=timeout_s)
        out = err = b""
        if capture:
            with contextlib.suppress(FileNotFoundError):
                out = (c.dir / "stdout.log").read_bytes()
                err = (c.dir / "stderr.log").read_bytes()
        return RunResult(exit_code=code, timings_ns=dict(c.timings_ns), stdout=out, stderr=err,
                         container_id=c.id, oom_killed=c.oom_killed)
    finally:
        if not keep:
            delete(c, force=True)
