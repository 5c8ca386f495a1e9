"""The container runtime's library API: what the benchmark harness calls in-process and what the CLI's
per-container monitor runs.

    c = create(config, paths)          # image + options -> OCI bundle (runtime.oci) in the container dir,
                                       # then dirs, cgroup, network plan from it; no process
    c = create_from_bundle(dir, paths) # the same from any OCI bundle (config.json + rootfs)
    create_from_bundle(..., hold=True); start(c); resume(c)   # OCI create/start split (isobench-runtime)
    start(c)                           # fork + namespaces + rootfs + cgroup + network + exec
    code = wait(c, timeout_s=None)     # exit code (exit N -> N, signal N -> 128+N, OOM -> 137)
    kill(c, signal.SIGTERM); delete(c) # delete removes everything the container made
    r = run(config, paths)             # all of it: RunResult(exit_code, timings_ns, stdout, stderr, ...)
    usage(c) -> CgroupUsage; init_pid(c); ip(c); load(paths, "name-or-id") -> Container
    status_of(c) -> "created" | "running" | "stopped"

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
import dataclasses
import functools
import json
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import leases
from core.errors import ContainerError, IsobenchError
from runtime.lifecycle import state as S
from runtime.lifecycle.state import wait_pid_exit
from core.paths import HostPaths, host_name, new_id

TYPE_CHECKING = False  # typing's import costs every `isobench-runtime` verb (a process each) a few ms
if TYPE_CHECKING:
    from typing import Any

    from runtime.lifecycle.process import LaunchPlan
    from runtime.oci import bundle
    from runtime.spec import ContainerConfig

# The create path's modules (bundle parser, spec converter, launch plan, rootfs, validation) are
# imported by the functions that use them: `isobench-runtime start|state|kill|delete` is a fresh
# Python process per verb and needs none of them (~40 ms of imports of a ~90 ms verb).

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
    interrupted_by: int = 0  # a signal the monitor carried out by SIGKILL (monitor.deliver): 128+it
    _plan: LaunchPlan | None = None
    _security: Any = None
    _cgroup: Any = None
    _cgroup_plan: Any = None
    _netplan: Any = None
    _stdio: tuple[int, int, int] | None = None
    _own_fds: tuple[int, ...] = ()
    _root_fd: int = -1  # holds the container's root (its overlay) until delete: see process.hold_root
    _prespawned: Any = None  # its start helper, spawned ahead with the spare dir (keep_spares)
    _spare_cgroup: Any = None  # its cgroup made ahead without limits (spares.take_cgroup)
    _records_pending: bool = False
    _bundle_spec: dict[str, Any] | None = None  # create(starting=True): start() writes config.json
    _prepared_config: bool = False  # its dir is a spare with an empty config.json to write into
    _is_parent: bool = False
    _wait_memo: dict[int, int] = field(default_factory=dict)  # reap_child's: survives a Ctrl-C mid-wait

    @property
    def dir(self) -> Path:
        return S.container_dir(self.paths, self.id)

    @property
    def host_name(self) -> str:
        return host_name(self.id)


# ----------------------------------------------------------------------------- create

def _open_logs(cdir: Path) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    fds = (os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), os.open(cdir / "stdout.log", flags, 0o640),
           os.open(cdir / "stderr.log", flags, 0o640))
    return fds, fds


def create(config: ContainerConfig, paths: HostPaths, *, stdio: tuple[int, int, int] | None = None,
           owner_pid: int | None = None, auto_remove: bool = False, detached: bool = True,
           extra_state: dict[str, Any] | None = None, console_fd: int = -1,
           console_size: tuple[int, int] | None = None, starting: bool = False) -> Container:
    """Everything but the process: the image and the options become an OCI bundle in the container's
    dir (``config.json`` by :mod:`runtime.oci.specconv`, the image layers as the rootfs), created
    through the same path as :func:`create_from_bundle`. ``stdio`` (stdin, stdout, stderr fds, kept
    open by the caller) or None: stdin /dev/null, output to ``stdout.log``/``stderr.log``.
    ``console_fd``: a terminal (``-it``), its master sent over this socket (:mod:`runtime.console`).
    ``starting``: the caller calls :func:`start` right away (``run``): nothing reads the container's
    records in between, so start() writes its ``config.json`` (before it wakes the child) and its
    state once, as running, instead of a "created" record first (file writes are 0.1-0.3 ms each on
    this host)."""
    t_call = time.perf_counter_ns()
    from runtime.lifecycle import spares
    from runtime.validate import validate

    validate(config)
    spare = spares.take_dir(paths)  # made ahead by the previous delete (keep_spares), or None
    if spare is not None and spare.helper is not None and (stdio is not None or console_fd >= 0):
        from runtime.lifecycle import process

        process.discard_prespawned(spare.helper)  # it has the dir's logs as its stdio
        spare.helper = None
    try:
        c = _create(config, paths, spare, t_call, stdio=stdio, owner_pid=owner_pid, auto_remove=auto_remove,
                    detached=detached, extra_state=extra_state, console_fd=console_fd, console_size=console_size,
                    starting=starting)
    except BaseException:
        if spare is not None:  # it was this container's: nothing of it stays
            spares.release(spare)
        raise
    if spare is not None:
        c._prespawned, c._spare_cgroup = spare.helper, spare.cgroup
    return c


def _create(config: ContainerConfig, paths: HostPaths, spare: Any, t_call: int, *,
            stdio: tuple[int, int, int] | None, owner_pid: int | None, auto_remove: bool, detached: bool,
            extra_state: dict[str, Any] | None, console_fd: int, console_size: tuple[int, int] | None,
            starting: bool) -> Container:
    """:func:`create` in a new directory, or in ``spare`` (a :class:`runtime.lifecycle.spares.SpareDir`)."""
    from runtime.lifecycle import spares
    from runtime.oci import bundle
    from runtime.oci.specconv import exposed_ports

    cid = spare.container_id if spare is not None else new_id()
    hostname = config.hostname or spares.default_hostname(cid)
    cdir = S.container_dir(paths, cid)
    made = bundle.image_spec(paths, config, hostname=hostname, rootfs=_shared_mountpoint(paths),
                             overlay_dirs=(f"{cdir}/upper", f"{cdir}/work"),
                             etc_files=tuple((f"/etc/{f}", f"{cdir}/{f}") for f in ETC_FILES))
    img, proc = made.image, made.process
    if console_fd >= 0:
        made.spec["process"]["terminal"] = True
        if console_size:
            made.spec["process"]["consoleSize"] = {"height": console_size[0], "width": console_size[1]}
    b = bundle.parse(made.spec, cdir)
    net = None
    if config.network.mode == "bridge":
        net = _NetworkSetup(config.network, exposed_ports(img.config, config.image))
    state = {"image": img.name, "image_digest": img.manifest_digest, "user": proc.user,
             "network_mode": config.network.mode, "userns_remap": config.userns == "remap",
             "config": _config_dict(config), **(extra_state or {})}
    c = _instantiate(b, paths, cid, name=config.name, stdio=stdio, owner_pid=owner_pid, auto_remove=auto_remove,
                     detached=detached, state=state, network=net, write_bundle=True,
                     etc=(hostname, config.network.mode), console_fd=console_fd, defer_records=starting,
                     spare=spare)
    c.config = config
    c.timings_ns["call"] = t_call
    return c


@dataclass(frozen=True)
class _NetworkSetup:
    """isobench's own networking for a bridge container (OCI bundles from other tools bring theirs)."""

    spec: Any
    exposed: tuple[str, ...]


ETC_FILES = S.ETC_FILES
EXEC_FIFO = "exec.fifo"
RESUME_TIMEOUT_S = 10.0


def create_from_bundle(bundle_dir: Path | str, paths: HostPaths, container_id: str | None = None, *,
                       stdio: tuple[int, int, int] | None = None, owner_pid: int | None = None,
                       console_fd: int = -1, hold: bool = False, extra_state: dict[str, Any] | None = None
                       ) -> Container:
    """A container from an OCI bundle (``config.json`` + its rootfs), as ``isobench-runtime create``
    and the harness use it. ``container_id`` defaults to a new id; ``console_fd`` a unix socket to send
    the terminal's master over (``process.terminal``). No process yet: :func:`start` makes it; with
    ``hold`` (OCI's create/start split) the started process then waits before exec until another
    process calls :func:`resume` (runc's exec.fifo)."""
    t_call = time.perf_counter_ns()
    from runtime.oci import bundle, specconv

    b = bundle.load(bundle_dir)
    if b.process.terminal and console_fd < 0:
        raise ContainerError(f"{b.dir}/config.json: process.terminal is true but no console socket was given")
    cid = container_id or new_id()
    state = {"image": dict(b.annotations).get(specconv.ANN_IMAGE, ""), "user": f"{b.process.uid}:{b.process.gid}",
             "network_mode": "host" if b.namespace("network") is None else "none",
             "userns_remap": b.namespace("user") is not None, **(extra_state or {})}
    c = _instantiate(b, paths, cid, name=None, stdio=stdio, owner_pid=owner_pid, auto_remove=False, detached=True,
                     state=state, network=None, write_bundle=False, etc=None, console_fd=console_fd,
                     hold=hold)
    c.timings_ns["call"] = t_call
    return c


def _launch_plan(b: bundle.Bundle, cid: str, paths: HostPaths, cgroup_plan: Any, *, bridge: bool,
                 console_fd: int, exec_fifo: str) -> LaunchPlan:
    """The bundle as the child's launch plan: namespaces, root, mounts, process settings."""
    from runtime.lifecycle.process import LaunchPlan
    from runtime.rootfs import ocimounts
    from runtime.rootfs.mounts import RootfsPlan

    ns_flags = _namespace_flags()

    if console_fd >= 0:
        from runtime import console  # noqa: F401 - the child uses it after pivot_root, unable to import

    flags, join, pid_ns = 0, [], ""
    for kind, path in b.namespaces:
        if kind == "pid":
            pid_ns = path
        elif kind == "user":
            if path:
                raise ContainerError(f"{b.dir}/config.json: joining a user namespace by path is not supported")
        elif path:
            if kind in ("mount", "cgroup"):
                raise ContainerError(f"{b.dir}/config.json: joining a {kind} namespace by path is not supported")
            join.append(path)
        else:
            flags |= ns_flags[kind]
    if b.namespace("pid") is None:
        pid_ns = "host"
    if b.namespace("mount") is None:
        raise ContainerError(f"{b.dir}/config.json: a container without its own mount namespace is not supported")
    userns = b.namespace("user") is not None
    id_maps = None
    if userns:
        if not b.uid_mappings or not b.gid_mappings:
            raise ContainerError(f"{b.dir}/config.json: a user namespace needs linux.uidMappings and gidMappings")
        id_maps = ("".join(f"{c} {h} {n}\n" for c, h, n in b.uid_mappings),
                   "".join(f"{c} {h} {n}\n" for c, h, n in b.gid_mappings))
    cgroupns = bool(flags & ns_flags["cgroup"])
    mounts, devices = ocimounts.plan(b.mounts, b.devices)
    overlay = b.overlay
    p = b.process
    rlimits = tuple((getattr(resource, kind), soft, hard) for kind, soft, hard in p.rlimits)
    cg_dirs = tuple((name, str(d)) for name, d in _cgroup_mount_dirs(cgroup_plan, cgroupns)
                    ) if any(m.fstype == "cgroup" for m in mounts) else ()  # only a cgroup mount reads them
    return LaunchPlan(
        container_id=cid, hostname=b.hostname if b.namespace("uts") == "" else "", argv=p.args, env=p.env,
        workdir=p.cwd, uid=p.uid, gid=p.gid, groups=p.additional_gids, unshare_flags=flags, cgroupns=cgroupns,
        userns_remap=userns, loopback_up=not bridge and bool(flags & ns_flags["network"]),
        cgroup_join=cgroup_plan.self_join_files(), pid_ns=pid_ns, join_ns=tuple(join), id_maps=id_maps,
        rlimits=rlimits, oom_score_adj=p.oom_score_adj, sysctl=b.sysctl, umask=p.umask, exec_fifo=exec_fifo,
        console_fd=console_fd, console_size=p.console_size,
        rootfs=RootfsPlan(lowerdirs=overlay[0] if overlay else (), upper=overlay[1] if overlay else "",
                          work=overlay[2] if overlay else "", merged=_shared_mountpoint(paths),
                          read_only=b.root_readonly, oci_mounts=mounts, oci_devices=devices, cgroup_dirs=cg_dirs,
                          rootfs_dir=b.root_path))


def _cgroup_mount_dirs(plan: Any, cgroupns: bool) -> list[tuple[str, Path]]:
    """What a ``cgroup`` mount shows: the container's own directory per hierarchy (named like the
    host's mount dir), or with a cgroup namespace on v2 the namespace's root."""
    if cgroupns:
        return [("unified", Path("/"))]
    seen: dict[Path, str] = {}
    for ctl, d in plan.paths.items():  # co-mounted controllers share a dir: one entry, the mount's name
        seen.setdefault(d, plan.layout.v1[ctl].name if ctl in plan.layout.v1 else ctl)
    return [(name, d) for d, name in seen.items()]


def _instantiate(b: bundle.Bundle, paths: HostPaths, cid: str, *, name: str | None,
                 stdio: tuple[int, int, int] | None, owner_pid: int | None, auto_remove: bool, detached: bool,
                 state: dict[str, Any], network: _NetworkSetup | None, write_bundle: bool,
                 etc: tuple[str, str] | None, console_fd: int = -1, hold: bool = False,
                 defer_records: bool = False, spare: Any = None) -> Container:
    """The host side of create, for every container: dirs, lease, cgroup plan, network plan, state.
    ``defer_records``: config.json and state.json are left to start() (:func:`_write_records`).
    ``spare``: the dir is a spare (:mod:`runtime.lifecycle.spares`): it, its upper/work dirs, logs,
    default /etc files and this process's lease exist already; a container without limits takes the
    plan its cgroup was made by; its start helper, if any, has the dir's logs as its stdio (opened
    here only if that helper cannot be used)."""
    from runtime.lifecycle.spares import default_hostname

    prepared = spare is not None

    cdir = S.container_dir(paths, cid)
    c = Container(id=cid, paths=paths, config=None, name=name)
    security = _security_of(b)
    with contextlib.ExitStack() as undo:
        if name:
            S.reserve_name(paths, name, cid)
            undo.callback(S.release_name, paths, name, cid)
        if not prepared:
            try:
                cdir.mkdir(parents=True)
            except FileExistsError:
                raise ContainerError(f"container {cid} already exists") from None
        undo.callback(S.remove_dir, paths, cid)
        exec_fifo = ""
        if hold:
            exec_fifo = f"{cdir}/{EXEC_FIFO}"
            os.mkfifo(exec_fifo, 0o600)
        overlay = b.overlay
        if overlay is not None and not prepared:
            for d in overlay[1:]:
                os.makedirs(d, exist_ok=True)
        if not prepared or owner_pid not in (None, os.getpid()):
            leases.take(cid, pid=owner_pid, kind="container", root=str(paths.root))
        undo.callback(leases.release, cid)
        if etc is not None and not (prepared and etc[0] == default_hostname(cid) and etc[1] != "host"):
            S.write_etc_files(cdir, etc[0], etc[1])  # a spare's are a default container's (no host resolv.conf)
        if stdio is None and not (prepared and spare.helper is not None):
            stdio, owned = _open_logs(cdir)
            c._own_fds = owned
            undo.callback(_close_all, owned)
        from runtime.cgroups import plan_cgroup
        from runtime.spec import Resources

        # validated now (bad values fail here), made by start() while the child builds its root
        resources = b.resources
        if prepared and spare.cgroup is not None and not b.cgroups_path and resources == Resources():
            c._cgroup_plan = spare.cgroup[0]  # what plan_cgroup would compute again
        else:
            c._cgroup_plan = plan_cgroup(c.host_name, resources, path=b.cgroups_path or None)
        if network is not None:
            from runtime import network as net

            c._netplan = net.prepare(cid, network.spec, paths, network.exposed)
            undo.callback(net.detach, cid, paths)
        remap = b.namespace("user") is not None
        if remap and overlay is not None:  # the container's root must own its writable layer's top
            from runtime import namespaces

            host_root = b.uid_mappings[0][1] if b.uid_mappings else namespaces.REMAP_HOST_BASE
            for d in overlay[1:]:
                os.chown(d, host_root, host_root)
        c._plan = _launch_plan(b, cid, paths, c._cgroup_plan, bridge=network is not None, console_fd=console_fd,
                               exec_fifo=exec_fifo)
        c._security = security
        c._stdio = stdio
        c._is_parent = True
        p = b.process
        c.state = {
            "id": cid, "name": name, "image": "", "image_digest": "", "argv": list(p.args), "env": list(p.env),
            "workdir": p.cwd, "user": "", "uid": p.uid, "gid": p.gid, "hostname": b.hostname,
            "network_mode": "none", "userns_remap": remap, "cgroupns": c._plan.cgroupns,
            "join_namespaces": _joined(b), "bundle": str(b.dir), "cgroup_path": b.cgroups_path,
            "annotations": dict(b.annotations), "status": "created", "created_at": S.now_iso(), "pid": None,
            "pid_start": None, "monitor_pid": owner_pid or os.getpid(),
            "monitor_start": S.proc_start_time(owner_pid or os.getpid()), "exit_code": None,
            "oom_killed": False, "auto_remove": auto_remove, "detached": detached, "ip": None, "ports": [],
            **state,
        }
        c._bundle_spec = b.spec if write_bundle else None  # `isobench run` makes a bundle: the dir is it
        c._prepared_config = prepared
        if defer_records:
            c._records_pending = True
        else:
            _write_records(c)
        undo.pop_all()
    c.timings_ns["created"] = time.perf_counter_ns()
    return c


_SECCOMP_TOKEN = f"isobench-seccomp-{os.urandom(8).hex()}"  # unguessable: a spec cannot hold it by chance
_seccomp_text: dict[int, tuple[Any, str]] = {}


def _spec_json(spec: dict[str, Any]) -> str:
    """``json.dumps(spec)``, with the seccomp profile's text (two thirds of a default spec) serialized
    once per profile object: specconv hands out the same cached dict for the same options."""
    linux = spec.get("linux") or {}
    profile = linux.get("seccomp")
    if not isinstance(profile, dict):
        return json.dumps(spec)
    hit = _seccomp_text.get(id(profile))
    if hit is None or hit[0] is not profile:
        if len(_seccomp_text) > 64:
            _seccomp_text.clear()
        hit = _seccomp_text[id(profile)] = (profile, json.dumps(profile))
    text = json.dumps({**spec, "linux": {**linux, "seccomp": _SECCOMP_TOKEN}})
    quoted = f'"{_SECCOMP_TOKEN}"'
    if text.count(quoted) != 1:  # the spec holds the token elsewhere too: no shortcut
        return json.dumps(spec)
    return text.replace(quoted, hit[1])


def _write_records(c: Container, state: bool = True) -> None:
    """What only readers of the container's dir need: its bundle's config.json (when create made the
    bundle) and (``state``) the state record."""
    c._records_pending = False
    if c._bundle_spec is not None and c._prepared_config:
        # a spare dir's empty config.json, written in place: no reader before the state record
        fd = os.open(c.dir / "config.json", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, _spec_json(c._bundle_spec).encode())
        finally:
            os.close(fd)
    elif c._bundle_spec is not None:
        from runtime.oci import bundle

        bundle.write(c.dir, c._bundle_spec)
    if state:
        S.write_state(c.dir, c.state)


@functools.lru_cache(maxsize=1)
def _namespace_flags() -> dict[str, int]:
    """runtime-spec namespace type -> unshare(2) flag (pid and user are made elsewhere: see LaunchPlan)."""
    from core import syscalls

    return {"network": syscalls.CLONE_NEWNET, "mount": syscalls.CLONE_NEWNS, "ipc": syscalls.CLONE_NEWIPC,
            "uts": syscalls.CLONE_NEWUTS, "cgroup": syscalls.CLONE_NEWCGROUP}

# runtime-spec type -> /proc/<pid>/ns name, in the order exec joins them (user last, mount before it)
_PROC_NS = (("ipc", "ipc"), ("uts", "uts"), ("network", "net"), ("cgroup", "cgroup"), ("pid", "pid"),
            ("mount", "mnt"), ("user", "user"))


def _joined(b: bundle.Bundle) -> list[str]:
    """The namespaces ``exec`` joins: those the container does not share with the host."""
    return [proc for kind, proc in _PROC_NS if b.namespace(kind) is not None]


def keep_spares(on: bool = True) -> None:
    """A process that starts containers one after another has each ``delete`` make the next
    container's network namespace, directory, cgroup and start helper (:mod:`runtime.lifecycle.spares`);
    ``False`` stops and removes them."""
    from runtime.lifecycle import spares

    spares.keep(on)


def make_spares(paths: HostPaths) -> None:
    """Make the spares now (if kept and missing), e.g. before a timed start."""
    from runtime.lifecycle import spares

    spares.make(paths)


def warm_security() -> None:
    """Resolve and compile the default seccomp profile for the default caps (a server warms its caches:
    every container created later with default security finds them)."""
    from runtime import security
    from runtime.oci import specconv
    from runtime.security import caps
    from runtime.spec import SecuritySpec

    names = caps.effective_set(last_cap=caps.cap_last_cap())
    doc = specconv.seccomp_json(SecuritySpec(), names)
    security.prepare_oci(names, True, doc, (), ())


def _security_of(b: bundle.Bundle) -> Any:
    from runtime import security

    return security.prepare_oci(b.process.bounding, b.process.no_new_privileges, b.seccomp,
                                b.masked_paths, b.readonly_paths)


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
    from runtime.lifecycle.process import spawn

    t0 = time.perf_counter_ns()
    attachment: list[Any] = []

    def on_forked(pid: int) -> None:
        # The child is unsharing meanwhile, then joins the cgroup itself (LaunchPlan.cgroup_join): the
        # mkdirs and limit writes overlap its unshare, and no process is moved from outside
        from runtime.lifecycle import spares

        c._cgroup = spares.take_cgroup(c._spare_cgroup, c._cgroup_plan)
        if c._cgroup is not None:
            c._spare_cgroup = None
        else:  # none, or it does not fit (then delete removes it)
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

    from core import syscalls
    from runtime import namespaces

    plan = c._plan
    netns_fd = namespaces.take_spare_netns() if plan.unshare_flags & syscalls.CLONE_NEWNET else None
    if netns_fd is not None:  # made ahead (keep_spares): joined, not unshared; its lo is up already
        plan = dataclasses.replace(plan, unshare_flags=plan.unshare_flags & ~syscalls.CLONE_NEWNET, loopback_up=False,
                                   join_ns=(f"/proc/{os.getpid()}/fd/{netns_fd}", *plan.join_ns))

    prespawned, c._prespawned = c._prespawned, None  # spawn() uses or discards it

    def meanwhile() -> None:
        if c._records_pending:  # config.json only: the state record is written once, below
            _write_records(c, state=False)

    def on_released(pid: int) -> None:  # the last step before it may exec: recorded as running
        c.pid = pid
        c.pid_start = prespawned.start_time if prespawned is not None and pid == prespawned.pid \
            else S.proc_start_time(pid)
        if attachment:
            att = attachment[0]
            c.ip_address = att.ip
            c.state["ip"] = att.ip
            c.state["ports"] = [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in att.ports]
        if c._plan.exec_fifo:  # waiting at the fifo: "created" until `start` (resume) reads it
            c.state.update(pid=c.pid, pid_start=c.pid_start)
        else:
            c.state.update(status="running", pid=c.pid, pid_start=c.pid_start, started_at=S.now_iso())
        S.write_state(c.dir, c.state)

    def logs() -> tuple[int, int, int]:  # its prespawned helper has them: opened only if it cannot run it
        fds, c._own_fds = _open_logs(c.dir)
        return fds

    try:
        spawned = spawn(plan, c._security, c._stdio if c._stdio is not None else logs, on_forked,
                        on_ready if c._netplan is not None else None, meanwhile, prespawned, on_released,
                        hold=True)
    except BaseException:
        c.pid = c.pid_start = None  # set by on_released, but its helper was killed and reaped
        c.state.update(status="exited", exit_code=125, finished_at=S.now_iso(), pid=None, pid_start=None)
        _after_exit(c)
        raise
    finally:
        _close_all(c._own_fds)
        c._own_fds = ()
        if netns_fd is not None:
            os.close(netns_fd)
    c._root_fd = spawned.root_fd
    c.timings_ns["start"] = t0
    c.timings_ns.update(spawned.timings_ns)


def resume(c: Container) -> None:
    """Let a held container (``create_from_bundle(hold=True)`` + :func:`start`) exec its process:
    read its exec fifo, as ``runc start`` does. Any process may call this."""
    fifo = c.dir / EXEC_FIFO
    if c.state.get("status") != "created" or not fifo.exists():
        raise ContainerError(f"container {c.id} is not in the created state (status {status_of(c)})")
    if not is_running(c):
        raise ContainerError(f"container {c.id}: its process exited before start")
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # the child is blocked opening it
    try:
        deadline = time.monotonic() + RESUME_TIMEOUT_S
        while True:
            if S._wait_readable(fd, 0.05) and os.read(fd, 16):
                break
            if not is_running(c) or time.monotonic() > deadline:
                raise ContainerError(f"container {c.id}: its process did not take the start signal")
    finally:
        os.close(fd)
    os.unlink(fifo)
    c.state.update(status="running", started_at=S.now_iso())
    S.write_state(c.dir, c.state)


def status_of(c: Container) -> str:
    """runtime-spec status: created (waiting to exec), running, stopped."""
    if c.pid and S.alive(c.pid, c.pid_start):
        return "created" if c.state.get("status") == "created" else "running"
    return "stopped" if c.pid or c.state.get("status") == "exited" else "created"


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
    from runtime.lifecycle.process import reap_child

    status = reap_child(c.pid, c._wait_memo)
    c.timings_ns["exited"] = time.perf_counter_ns()
    record_exit(c, status)
    return c.exit_code  # type: ignore[return-value]


def record_exit(c: Container, status: int) -> None:
    """After waitpid: the exit code, OOM kill, final usage; then free cgroup, network and lease."""
    from runtime.lifecycle.process import exit_code_of

    code = exit_code_of(status)
    if c.interrupted_by and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        code = 128 + c.interrupted_by
    try:
        c.final_usage = c._cgroup.usage() if c._cgroup is not None else None
    except (OSError, IsobenchError):
        c.final_usage = None
    # Docker's rule: OOMKilled when the kernel's OOM killer killed any process of the container's
    # cgroup (v1 memory.oom_control / v2 memory.events ``oom_kill``), whatever PID 1's exit code: in
    # `sh -c 'dd ... | cat > /dev/shm/x'` it kills dd and the shell exits 0.
    oom = bool(c.final_usage and c.final_usage.oom_kill_count > 0)
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
        try:
            cg = c._cgroup or open_cgroup_of(c)
            cg.kill_all()  # an OCI container's other processes (exec'd, or left when PID 1 was not in a pidns)
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
    if c._prespawned is not None:  # created, never started
        from runtime.lifecycle import process

        process.discard_prespawned(c._prespawned)
        c._prespawned = None
    if c._spare_cgroup is not None:
        c._spare_cgroup[1].destroy()
        c._spare_cgroup = None
    if c._root_fd >= 0:  # the overlay unmounts (and syncs) now, before its upper dir is removed
        _close_all((c._root_fd,))
        c._root_fd = -1
    S.release_name(c.paths, c.name, c.id)
    S.remove_dir(c.paths, c.id)
    leases.release(c.id)
    if c._is_parent:
        from runtime.lifecycle import spares

        try:  # the next container's netns, directory and helper (keep_spares, else nothing)
            spares.make(c.paths)
        except (OSError, IsobenchError):
            pass  # an optimisation only: this delete is done, the next create makes its own inline
    if errors:
        raise ContainerError(f"container {c.id}: removal incomplete: {'; '.join(errors)}")


def usage(c: Container) -> Any:
    """cgroup usage now (or at exit, for an exited container): CgroupUsage."""
    if c.exit_code is not None:
        if c.final_usage is None and c.state.get("final_usage"):
            from runtime.cgroups import CgroupUsage

            c.final_usage = CgroupUsage(**c.state["final_usage"])
        return c.final_usage
    return (c._cgroup or open_cgroup_of(c)).usage()


def open_cgroup_of(c: Container) -> Any:
    """The container's cgroup (at its bundle's cgroupsPath when it had one)."""
    from runtime.cgroups import open_cgroup

    return open_cgroup(c.host_name, path=c.state.get("cgroup_path") or None)


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
    c = create(config, paths, starting=True)
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
