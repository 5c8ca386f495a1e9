"""Start a container's first process: spawn, namespaces, rootfs, sync with the parent, execve.

This is the latency-critical start path (headline metric: create+start of ``true`` <= 5 ms, at most
twice the ``unshare -fpmiu true`` floor), so the child is not a fork of this (large) Python process:

* The parent encodes the plan (:func:`encode_plan`) into a pipe and ``posix_spawn``s the static C
  helper ``isobench-nsexec`` (``csrc/nsexec.c``, built by ``make setup``; runc's nsexec and crun do
  this part in C too). posix_spawn is a vfork: no page tables are copied (a fork of the runtime cost
  ~0.75 ms) and the child touches none of our pages. The helper does everything between fork and exec.
* The *parent* creates the PID namespace just around the spawn (``unshare(CLONE_NEWPID)`` changes only
  ``pid_for_children``; ``setns`` back right after), so the helper *is* PID 1 and the parent can
  ``waitpid`` it directly.
* The helper unshares mount/UTS/IPC/net(/cgroup), joins its cgroup once the parent says ``C`` (made),
  builds the rootfs, pivots, masks /proc and /sys paths, and reports ``R`` on a close-on-exec pipe; the
  parent meanwhile makes the cgroup (the child joins itself: a v1 ``tasks`` write of "0" avoids the
  kernel's global lock and its RCU wait, ~8 ms when the lock was idle), and, on ``R``, attaches the
  network and writes uid maps, then answers ``G`` (without either, ``G`` goes with ``C``: the helper
  never waits for a round trip through Python). With ``--network none`` the helper brings up its new
  namespace's loopback itself (two ioctls; the Python child says ``N`` and the parent does it). The helper drops capabilities, loads the
  seccomp program compiled here and execs; the pipe's EOF tells the parent the exec happened (an error
  before exec arrives as ``E <message>``). Work moves to the parent wherever it can overlap the
  child's mounts: the child's path is the start-up time.
* With ``--init`` PID 1 is the static C init bound at /dev/init (``csrc/init_shim.c``): the plan's
  argv simply starts with it.

``exec`` (a process joining a running container) still forks in Python: :func:`_exec_workload`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import gc
import os
import resource  # noqa: F401 - used by the child (rlimits) after pivot_root, when nothing can be imported
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from runtime import namespaces
from core import cbin, syscalls
from core.errors import ContainerError
from runtime.rootfs.mounts import RootfsPlan, overlay_options, setup as setup_rootfs
from runtime.security import PreparedSecurity, prepare as prepare_security

# exit codes in the style of Docker / a shell
EXIT_SETUP_FAILED = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127

@dataclass(frozen=True)
class LaunchPlan:
    """Everything the child needs, computed by the parent before fork."""

    container_id: str
    hostname: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    rootfs: RootfsPlan
    unshare_flags: int
    cgroupns: bool = False
    userns_remap: bool = False
    loopback_up: bool = True     # --network none: the parent brings lo up while the child mounts
    die_with_parent: bool = False  # build steps: SIGKILL when the builder dies (PR_SET_PDEATHSIG)
    # Files the child writes "0" into to join its cgroup once the parent says ``C`` (made). Empty: the
    # parent's ``on_forked`` moves it. The child's own v1 ``tasks`` write skips the kernel's global
    # threadgroup lock, whose first use after an idle spell waits an RCU grace period (~8 ms here).
    cgroup_join: tuple[str, ...] = ()
    # OCI bundles (runtime.api.create_from_bundle): namespaces shared with the host or joined by path,
    # the spec's id maps, rlimits, oom_score_adj, sysctls, umask, and the create/start split
    pid_ns: str = ""                          # "": a new one; "host": none; else a path to join
    join_ns: tuple[str, ...] = ()             # namespace paths the child setns()es before unsharing
    id_maps: tuple[str, str] | None = None    # (uid_map, gid_map) text; None with userns_remap: the fixed range
    rlimits: tuple[tuple[int, int, int], ...] = ()   # (RLIMIT_*, soft, hard)
    oom_score_adj: int | None = None
    sysctl: tuple[tuple[str, str], ...] = ()
    umask: int | None = None
    exec_fifo: str = ""    # the child waits here after set-up until `start` reads it (runc's exec.fifo)
    console_fd: int = -1   # a unix socket: the child sends its pty master over it (process.terminal)
    console_size: tuple[int, int] | None = None


@dataclass
class Spawned:
    pid: int
    timings_ns: dict[str, int] = field(default_factory=dict)
    root_fd: int = -1  # an O_PATH fd on the container's root, or -1 (see hold_root)


def hold_root(pid: int) -> int:
    """An O_PATH fd on the root of ``pid`` (a container just past its pivot_root), or -1 if it is gone.

    Why: the container's overlay is mounted inside its own mount namespace, so without another
    reference the kernel unmounts it when that namespace dies with the container's last process, and
    overlayfs syncs the whole upper filesystem on unmount (~1-1.5 ms here, a disk cache flush), inside
    the exit the start-up span ends with. The runtime's fd keeps the mount alive (detached) until
    ``delete`` closes it: the rootfs lives from create to delete, as Docker's engine-mounted rootfs
    does; the namespace teardown itself stays inside the span. Taken on the child's ``R`` (root
    built), before the workload can exit; if it already has, there is simply nothing to hold."""
    try:
        return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


def exit_code_of(status: int) -> int:
    """waitpid status -> shell-style code: exit N -> N, killed by signal N -> 128+N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 128 + os.WSTOPSIG(status)


STATUS_LOST = 255 << 8
"""The wait status used when the exit status is gone (another waiter reaped the child): exit 255, as
Docker reports a container whose exit it could not observe."""


def reap_child(pid: int, memo: dict[int, int]) -> int:
    """Wait for our child ``pid`` and reap it; its wait status, safe against an interrupt (Ctrl-C).

    Why: a KeyboardInterrupt raised between ``waitpid`` returning and its result being stored loses the
    status and leaves a second ``waitpid`` with ECHILD. So the status is first read without reaping
    (``waitid(WNOWAIT)``), kept in ``memo`` (the caller's, surviving the interrupt), and only then the
    zombie is reaped; a retry after an interrupt at any point finds the status in ``memo`` or the zombie
    still there."""
    if pid not in memo:
        while True:
            try:
                r = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            except InterruptedError:
                continue
            except ChildProcessError:
                r = None
            break
        memo[pid] = STATUS_LOST if r is None else _status_of_waitid(r)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return memo[pid]


def _status_of_waitid(r: os.waitid_result) -> int:
    """A waitid result as the int wait status waitpid would have given (for the WIF* macros)."""
    if r.si_code == os.CLD_EXITED:
        return (r.si_status & 0xFF) << 8
    return (r.si_status & 0x7F) | (0x80 if r.si_code == os.CLD_DUMPED else 0)


@dataclass
class Prespawned:
    """A start helper spawned ahead of its container (:mod:`runtime.lifecycle.spares`), PID 1 of a new
    PID namespace, blocked reading its plan: our ends of its plan, report and go-ahead pipes."""

    pid: int
    w_plan: int
    r_ready: int
    w_go: int
    joined: tuple[str, ...] = ()  # cgroup files it wrote "0" into at its start (its container's cgroup)
    start_time: int | None = None  # clock ticks since boot, as a container's state records its pid


def prespawn_helper(argv0: str, stdio: tuple[int, int, int], join: tuple[str, ...] = ()) -> Prespawned:
    """Spawn ``isobench-nsexec`` now, in a new PID namespace, with ``stdio`` as its 0-2; it joins the
    cgroup of ``join`` (``cgroup_join`` files) at once and waits for a plan (:func:`spawn` with
    ``prespawned``). If this process dies first, the plan pipe's EOF ends it."""
    r_ready, w_ready = os.pipe2(os.O_CLOEXEC)
    r_go, w_go = os.pipe2(os.O_CLOEXEC)
    r_plan, w_plan = os.pipe2(os.O_CLOEXEC)
    try:
        pidns = namespaces.own_pidns_fd()
        syscalls.unshare(syscalls.CLONE_NEWPID)
        try:
            pid = _posix_spawn_helper(argv0, [*stdio, r_go, w_ready, r_plan], join)
        finally:
            syscalls.setns(pidns, syscalls.CLONE_NEWPID)
    except BaseException:
        for fd in (r_ready, w_go, w_plan):
            os.close(fd)
        raise
    finally:
        for fd in (w_ready, r_go, r_plan):
            os.close(fd)
    return Prespawned(pid=pid, w_plan=w_plan, r_ready=r_ready, w_go=w_go, joined=tuple(join))


def discard_prespawned(p: Prespawned) -> None:
    """End an unused prespawned helper: without its plan it exits; it is killed to be sure, and reaped."""
    for fd in (p.w_plan, p.w_go, p.r_ready):
        with contextlib.suppress(OSError):
            os.close(fd)
    _kill_and_reap(p.pid)


def prespawned_fits(plan: LaunchPlan) -> bool:
    """Can a prespawned helper (new PID namespace, spawned by this process) run ``plan``?"""
    return _caller_spawner is None and not plan.pid_ns and helper_runs(plan)


def _hand_plan(p: Prespawned, plan: LaunchPlan, security: object) -> bool:
    """Give the prespawned helper its plan (then EOF); False if it is gone (then it is reaped). The
    cgroup it joined at its start is not joined again."""
    if p.joined and p.joined == plan.cgroup_join:
        plan = dataclasses.replace(plan, cgroup_join=())
    try:
        _fill_pipe(p.w_plan, encode_plan(plan, security))
    except OSError:
        discard_prespawned(p)
        return False
    os.close(p.w_plan)
    return True


def spawn(plan: LaunchPlan, security: object, stdio: tuple[int, int, int] | Callable[[], tuple[int, int, int]],
          on_forked: Callable[[int], None], on_ready: Callable[[int], None] | None,
          meanwhile: Callable[[], None] | None = None, prespawned: Prespawned | None = None,
          on_released: Callable[[int], None] | None = None, hold: bool = False) -> Spawned:
    """Fork the container's PID 1 and run it up to ``execve``.

    ``on_forked(pid)`` runs while the child builds its rootfs (join the cgroup); ``on_ready(pid)`` runs
    once its namespaces and root exist (attach the network). Either raising kills the child. Without
    ``on_ready`` and uid maps to write, the go-ahead is sent right after the cgroup join, so the child
    does not wait for a round trip through the parent. ``meanwhile()`` runs once the child has its
    cgroup go-ahead, while it builds its root: work off the start's path (records on disk).
    ``prespawned``: a helper spawned ahead (:func:`prespawn_helper`) gets the plan instead of a new
    spawn when it can run it (:func:`prespawned_fits`); otherwise, or if it is gone, it is discarded.
    ``stdio`` may be a function giving them, called only when a helper is spawned here.
    ``on_released(pid)`` runs last before the child may exec (record it as running).

    ``hold``: the child (with an overlay root) reports ``R`` and waits for ``G``; the runtime takes its
    hold on the root (:func:`hold_root`, ``Spawned.root_fd``, the caller's to close) in between, so
    the hold never races the workload's exit. The round trip
    is two context switches; on a host that packs a woken task onto the waker's vCPU (this one) the
    alternative, the runtime working beside a child that no longer waits, was slower anyway."""
    timings: dict[str, int] = {}
    helper = helper_runs(plan)
    remote = _caller_spawner
    if remote is not None and not helper:
        raise CallerMustRun(f"container {plan.container_id}: its plan needs the Python child "
                            f"(fields the start helper lacks), which only the caller's own process can fork")
    hold = hold and bool(plan.rootfs.lowerdirs)
    handshake = on_ready is not None or plan.userns_remap or hold or on_released is not None  # G only after R
    parent_lo = plan.loopback_up and not helper  # the C helper brings its lo up itself
    go_ahead = b"CG" if not handshake and not parent_lo else b"C"
    cgroup_made = False
    if prespawned is not None and not prespawned_fits(plan):
        discard_prespawned(prespawned)
        prespawned = None
    if prespawned is not None:
        # Everything the helper waits for is ready before it is woken: its cgroup, its go-ahead, then
        # its plan. It never waits on us, and we sleep (on its report) right after waking it.
        try:
            on_forked(prespawned.pid)
        except BaseException:
            discard_prespawned(prespawned)
            raise
        cgroup_made = True
        timings["cgroup"] = time.perf_counter_ns()
        try:
            os.write(prespawned.w_go, go_ahead)
        except OSError:  # it is gone (killed): spawn one as usual
            discard_prespawned(prespawned)
            prespawned = None
        if meanwhile is not None:  # before the helper is woken: after, it would wait for our CPU
            try:
                meanwhile()
            except BaseException:
                if prespawned is not None:  # not handed its plan yet: it would wait for one for ever
                    discard_prespawned(prespawned)
                raise
            meanwhile = None
        if prespawned is not None and not _hand_plan(prespawned, plan, security):  # gone: as above
            prespawned = None
    if prespawned is not None:
        pid, r_ready, w_go = prespawned.pid, prespawned.r_ready, prespawned.w_go
    else:
        if callable(stdio):
            stdio = stdio()
        r_ready, w_ready = os.pipe2(os.O_CLOEXEC)
        r_go, w_go = os.pipe2(os.O_CLOEXEC)
        try:
            if remote is not None:
                pid = _spawn_helper(plan, security, stdio, r_go, w_ready, remote)
            else:
                pidns = namespaces.own_pidns_fd()
                _enter_pidns_for_child(plan)  # only pid_for_children: a new one makes the child PID 1 there
                try:
                    if helper:
                        pid = _spawn_helper(plan, security, stdio, r_go, w_ready)
                    else:
                        pid = _fork_child(plan, security, stdio, (r_ready, w_go), r_go, w_ready)
                finally:
                    syscalls.setns(pidns, syscalls.CLONE_NEWPID)  # our next forks are ordinary again
        except BaseException:
            for fd in (r_ready, w_ready, r_go, w_go):
                os.close(fd)
            raise
        os.close(w_ready)
        os.close(r_go)
    timings["forked"] = time.perf_counter_ns()
    lines = _Lines(r_ready)
    root_fd = -1
    try:
        if not cgroup_made:
            on_forked(pid)
            timings["cgroup"] = time.perf_counter_ns()
        if prespawned is None:
            os.write(w_go, go_ahead)
        if meanwhile is not None:
            meanwhile()
        if parent_lo:
            msg = lines.next()
            if msg != "N":
                raise ContainerError(_failure(plan, msg, pid))
            netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.link_up_in(netns, "lo")
            finally:
                os.close(netns)
            timings["loopback"] = time.perf_counter_ns()
            if not handshake:
                os.write(w_go, b"G")  # before R, usually: the child does not wait for us
        msg = lines.next()
        if not msg.startswith("R "):
            raise ContainerError(_failure(plan, msg, pid))
        stamps = msg.split()
        timings["namespaces"], timings["rootfs"], timings["child"] = int(stamps[1]), int(stamps[2]), int(stamps[3])
        timings["cgroup_joined"] = int(stamps[4])
        if hold:
            root_fd = hold_root(pid)
        if len(stamps) > 5 and int(stamps[5]):  # the helper's own lo up
            timings["loopback"] = int(stamps[5])
        if plan.userns_remap:
            namespaces.write_id_maps(pid, maps=plan.id_maps)
        if on_ready is not None:
            on_ready(pid)
        timings["network"] = time.perf_counter_ns()
        if on_released is not None:
            on_released(pid)
        if handshake:
            os.write(w_go, b"G")
        os.close(w_go)
        w_go = -1
        if not plan.exec_fifo:  # with an exec fifo the exec waits for `start`: done here
            rest = lines.rest()  # EOF: the exec happened (or the child exited)
            if rest.startswith("E "):
                raise ContainerError(_failure(plan, rest, pid))
            timings["exec"] = time.perf_counter_ns()
    except BaseException:
        _kill_and_reap(pid)
        if root_fd >= 0:
            os.close(root_fd)
        raise
    finally:
        os.close(r_ready)
        if w_go >= 0:
            os.close(w_go)
    return Spawned(pid=pid, timings_ns=timings, root_fd=root_fd)


def _enter_pidns_for_child(plan: LaunchPlan) -> None:
    """Where the next fork's child lives: a new PID namespace (it is PID 1), the host's, or one joined."""
    if plan.pid_ns == "host":
        return
    if not plan.pid_ns:
        syscalls.unshare(syscalls.CLONE_NEWPID)
        return
    try:
        fd = os.open(plan.pid_ns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainerError(f"container {plan.container_id}: pid namespace {plan.pid_ns}: {exc.strerror}") from exc
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWPID)
    finally:
        os.close(fd)


# LaunchPlan and RootfsPlan fields the C helper implements (pid_ns and id_maps are the parent's). A plan
# that sets any other field away from its default (a terminal's console_fd; a feature added to the
# runtime in Python first) starts through the Python child.
_HELPER_PLAN_FIELDS = frozenset({
    "container_id", "hostname", "argv", "env", "workdir", "uid", "gid", "groups", "rootfs", "unshare_flags",
    "cgroupns", "userns_remap", "loopback_up", "die_with_parent", "cgroup_join", "pid_ns", "join_ns", "id_maps",
    "rlimits", "oom_score_adj", "sysctl", "umask", "exec_fifo"})
_HELPER_ROOTFS_FIELDS = frozenset({
    "lowerdirs", "upper", "work", "merged", "mounts", "etc_files", "read_only", "overlay_extra", "init_binary",
    "oci_mounts", "oci_devices", "cgroup_dirs", "rootfs_dir"})


def _only_fields(obj: object, known: frozenset[str]) -> bool:
    return all(f.name in known or getattr(obj, f.name) == f.default for f in dataclasses.fields(obj))


def helper_runs(plan: LaunchPlan) -> bool:
    """Does ``isobench-nsexec`` implement everything ``plan`` asks for? (``isobench run``, build steps
    and the bench's containers: yes.)"""
    return _only_fields(plan, _HELPER_PLAN_FIELDS) and _only_fields(plan.rootfs, _HELPER_ROOTFS_FIELDS)


# ----------------------------------------------------------------------------- who spawns the helper

class CallerMustRun(Exception):
    """The helper cannot be spawned by the caller's process for this plan (it needs the Python child,
    a fork of this process): the command must run in the caller's own process instead."""


HelperSpawner = Callable[[str, str, "list[int]", str], int]
"""``(helper path, argv[0], fds for the helper's 0-5, pid_ns) -> pid``: starts the helper as a child
of another process (``pid_ns`` as :attr:`LaunchPlan.pid_ns`: "" a new PID namespace, "host", or a
path to join); raises ContainerError when it could not."""

_caller_spawner: HelperSpawner | None = None


def spawn_helpers_through(spawner: HelperSpawner | None) -> None:
    """From now on, start every container's helper through ``spawner`` (None: ``posix_spawn`` here).

    Why: an OCI runtime's ``create`` leaves the container's first process behind as a child of the
    *calling* process, which exits: it is then reaped by whoever reaps that caller's orphans (conmon,
    a subreaper, waits for it exactly so). The isobench server's worker that serves
    ``isobench-runtime create`` is not the caller, so it has the caller's client spawn the helper
    (app.server.worker), and does everything else itself. A plan the helper cannot run raises
    :class:`CallerMustRun` then."""
    global _caller_spawner
    _caller_spawner = spawner


def _spawn_helper(plan: LaunchPlan, security: object, stdio: tuple[int, int, int], r_go: int,
                  w_ready: int, spawner: HelperSpawner | None = None) -> int:
    """posix_spawn the C helper (in the PID namespace the caller made) with its plan on fd 5; with a
    ``spawner``, that starts it (in a PID namespace as the plan says) instead."""
    r_plan = _plan_pipe(encode_plan(plan, security))
    if spawner is not None:
        try:
            return spawner(_nsexec(), f"isobench-{plan.container_id}", [*stdio, r_go, w_ready, r_plan],
                           plan.pid_ns)
        finally:
            os.close(r_plan)
    try:  # the helper's fds 0-5 (see csrc/nsexec.c)
        return _posix_spawn_helper(f"isobench-{plan.container_id}", [*stdio, r_go, w_ready, r_plan])
    finally:
        os.close(r_plan)


def _posix_spawn_helper(argv0: str, sources: list[int], args: tuple[str, ...] = ()) -> int:
    """posix_spawn the helper with ``sources`` as its fds 0-5 (and ``args`` after ``argv0``). A source
    already below 6 is moved up first, so no dup2 of the list overwrites a source a later one needs."""
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) if fd < 6 else -1 for fd in sources]
    actions = [(os.POSIX_SPAWN_DUP2, m if m >= 0 else fd, target)
               for target, (fd, m) in enumerate(zip(sources, moved))]
    try:
        return os.posix_spawn(_nsexec(), [argv0, *args], {}, file_actions=actions, setsigmask=(),
                              setsigdef=_DEFAULT_SIGNALS)
    finally:
        for m in moved:
            if m >= 0:
                os.close(m)


def _fork_child(plan: LaunchPlan, security: object, stdio: tuple[int, int, int], parent_ends: tuple[int, int],
                r_go: int, w_ready: int) -> int:
    """Fork this process as the container's PID 1 (plans with fields the C helper does not implement)."""
    pid = os.fork()
    if pid == 0:  # the container's PID 1
        gc.disable()  # it execs within milliseconds: a collection would only copy-on-write pages
        code = EXIT_SETUP_FAILED
        try:
            for fd in parent_ends:
                os.close(fd)
            _child(plan, security, stdio, r_go, w_ready)
        except BaseException as exc:  # noqa: BLE001 - report any setup failure to the parent, then exit
            _report(w_ready, f"E {_describe(exc)}\n")
        finally:
            os._exit(code)
    return pid


# Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive execve: the workload gets defaults.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


@functools.lru_cache(maxsize=1)
def _nsexec() -> str:
    """The start helper ``make setup`` compiled (looked up once: the check hashes its source)."""
    return str(cbin.helper("isobench-nsexec"))


def _plan_pipe(data: bytes) -> int:
    """A pipe's read end already holding ``data`` (then EOF): the helper reads its plan without
    waiting for us. Grown past the default 64 KiB when a plan (huge env, seccomp program) needs it."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        _fill_pipe(w, data)
    except OSError as exc:
        os.close(r)
        raise ContainerError(f"container plan of {len(data)} bytes does not fit a pipe: {exc.strerror}") from exc
    finally:
        os.close(w)
    return r


def _fill_pipe(w: int, data: bytes) -> None:
    """All of ``data`` into the pipe ``w``, grown past the default 64 KiB first when it needs it."""
    if len(data) >= 65536:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, len(data) + 4096)
    view = memoryview(data)
    while view:
        view = view[os.write(w, view):]


def _fields(*pairs: tuple[str, object]) -> bytes:
    return b"".join(f"{k}\0{v}\0".encode("utf-8", "surrogateescape") for k, v in pairs)


@functools.lru_cache(maxsize=64)
def _security_fields(p: PreparedSecurity) -> bytes:
    """The security part of a plan (cached: a harness starts many containers with one profile)."""
    head = _fields(("privileged", int(p.privileged)), ("keep_mask", p.keep_mask), ("last_cap", p.last_cap),
                   ("nnp", int(p.no_new_privileges)), *(("masked", m) for m in p.masked_paths),
                   *(("readonly", r) for r in p.readonly_paths))
    if p.seccomp_program is None:
        return head
    return head + _fields(("seccomp", len(p.seccomp_program))) + p.seccomp_program  # last: raw bytes


def encode_plan(plan: LaunchPlan, security: object) -> bytes:
    """``plan`` in the helper's format: NUL-separated ``key, value`` records (lists repeat their key;
    ``mount`` and ``etc`` carry 4 and 2 values), the seccomp program last as raw bytes."""
    prepared = security if isinstance(security, PreparedSecurity) else prepare_security(security)  # type: ignore[arg-type]
    for text in (*plan.argv, *plan.env, plan.workdir, plan.hostname):
        if "\0" in text:
            raise ContainerError(f"container {plan.container_id}: NUL byte in {text!r}")
    r = plan.rootfs
    oci = r.oci_mounts is not None
    return _fields(
        ("hostname", plan.hostname), ("workdir", plan.workdir), ("uid", plan.uid), ("gid", plan.gid),
        ("unshare", plan.unshare_flags), ("cgroupns", int(plan.cgroupns)), ("userns", int(plan.userns_remap)),
        ("loopback", int(plan.loopback_up)), ("pdeathsig", int(plan.die_with_parent)),
        *((("overlay", overlay_options(r.lowerdirs, r.upper, r.work, r.overlay_extra)),) if r.lowerdirs else ()),
        *((("rootfs_dir", r.rootfs_dir),) if r.rootfs_dir else ()), ("merged", r.merged),
        ("init", r.init_binary), ("read_only", int(r.read_only)), ("oci", int(oci)),
        *(("arg", a) for a in plan.argv), *(("env", e) for e in plan.env), *(("group", g) for g in plan.groups),
        *(("cgjoin", f) for f in plan.cgroup_join), *(("etc", f"{d}\0{h}") for d, h in r.etc_files),
        *(("cgdir", f"{name}\0{d}") for name, d in r.cgroup_dirs),
        *(("mount", f"{m.kind}\0{m.source}\0{m.destination}\0{int(m.read_only)}") for m in r.mounts),
        *(("ocimount", f"{m.destination}\0{m.fstype}\0{m.source}\0{m.flags}\0{m.data}\0{m.propagation}")
          for m in r.oci_mounts or ()),
        *(("device", f"{d.path}\0{d.mode}\0{os.major(d.rdev)}\0{os.minor(d.rdev)}\0{d.uid}\0{d.gid}")
          for d in r.oci_devices),
        *(("joinns", j) for j in plan.join_ns), *(("sysctl", f"{k}\0{v}") for k, v in plan.sysctl),
        *(("rlimit", f"{_RLIMIT_NAMES.get(kind, kind)}\0{kind}\0{soft}\0{hard}") for kind, soft, hard in plan.rlimits),
        *((("oom_score_adj", plan.oom_score_adj),) if plan.oom_score_adj is not None else ()),
        *((("umask", plan.umask),) if plan.umask is not None else ()),
        *((("exec_fifo", plan.exec_fifo),) if plan.exec_fifo else ()),
    ) + _security_fields(prepared)


def _failure(plan: LaunchPlan, msg: str, pid: int) -> str:
    text = msg[2:].strip() if msg.startswith("E ") else "container init exited during set-up"
    return f"container {plan.container_id}: {text}"


def _kill_and_reap(pid: int) -> None:
    """SIGKILL a child that failed its set-up and reap it (one spawned by the caller's process is
    the caller's to reap: waitpid says ECHILD here)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class _Lines:
    """The child's messages, a line at a time (one read may carry several: keep the remainder)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self) -> str:
        """The next line; at EOF whatever is left (an empty string: the child exited silently)."""
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                break
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")

    def rest(self) -> str:
        """Everything up to EOF."""
        while True:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                out, self.buf = self.buf, b""
                return out.decode(errors="replace")
            self.buf += chunk


def _report(fd: int, text: str) -> None:
    try:
        os.write(fd, text.replace("\n", " ").strip().encode()[:3900] + b"\n")
    except OSError:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename or exc.args[-1]})" if exc.filename else str(exc)
    return str(exc) or type(exc).__name__


# ----------------------------------------------------------------------------- child side

def _child(plan: LaunchPlan, security: object, stdio: tuple[int, int, int], r_go: int, w_ready: int) -> None:
    t_child = time.perf_counter_ns()
    if plan.die_with_parent:
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    reset_signals()
    got = b""
    for path in plan.join_ns:  # namespaces the spec names by path (podman's network namespace)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        syscalls.setns(fd, 0)
        os.close(fd)
    fifo = os.open(plan.exec_fifo, os.O_PATH | os.O_CLOEXEC) if plan.exec_fifo else -1
    if plan.cgroupns:  # the namespace's root is the cgroup we are in at unshare: join before it
        got = _join_cgroup(plan, r_go, got)
        t_joined = time.perf_counter_ns()
    syscalls.unshare(plan.unshare_flags)
    if plan.loopback_up:  # our network namespace exists: the parent brings its lo up meanwhile
        os.write(w_ready, b"N\n")
    if not plan.cgroupns:  # the parent made the cgroup while we unshared; join before pivot_root
        got = _join_cgroup(plan, r_go, got)
        t_joined = time.perf_counter_ns()
    t_ns = time.perf_counter_ns()
    setup_rootfs(plan.rootfs)
    from runtime import security as sec_mod  # already imported by the parent (prepare); no cost

    for key, value in plan.sysctl:  # before the masks make /proc/sys read-only
        syscalls.write_file("/proc/sys/" + key.replace(".", "/"), value)
    sec_mod.prepare_mounts_in_child(security)
    if plan.hostname:
        syscalls.sethostname(plan.hostname)
    slave = -1
    if plan.console_fd >= 0:  # before R: the master has been sent when `create` returns, as with runc
        from runtime import console  # imported by the parent already (api): no file access

        slave = console.open_in_container(plan.console_fd, plan.console_size)
    _process_settings(plan)  # before R: a refused rlimit fails `create`, not a held process nobody hears
    t_rootfs = time.perf_counter_ns()
    if plan.userns_remap:  # last: mounts above were made by real root, owned by the host's userns
        syscalls.unshare(syscalls.CLONE_NEWUSER)
    os.write(w_ready, f"R {t_ns} {t_rootfs} {t_child} {t_joined}\n".encode())
    while b"G" not in got:
        chunk = os.read(r_go, 16)
        if not chunk:
            raise ContainerError("the runtime went away before the container started")
        got += chunk
    os.close(r_go)
    if slave >= 0:
        stdio = (slave, slave, slave)
    stdin, stdout, stderr = stdio
    os.dup2(stdin, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.makedirs(plan.workdir, exist_ok=True)
    os.chdir(plan.workdir)
    if fifo >= 0:  # created, not started: block until `start` opens the fifo for reading
        wfd = os.open(f"/proc/self/fd/{fifo}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(wfd, b"0")
        os.close(wfd)
        os.close(fifo)
    syscalls.close_range_cloexec(3)  # only 0-2 (and the sync pipe until exec) reach the workload
    env = dict(e.partition("=")[::2] for e in plan.env)
    _exec_workload(plan, security, env)


_RLIMIT_NAMES = {getattr(resource, n): n for n in sorted(dir(resource), reverse=True) if n.startswith("RLIMIT_")}


def _process_settings(plan: LaunchPlan) -> None:
    """process.rlimits, oomScoreAdj and user.umask (runtime-spec), in the container before exec."""
    for kind, soft, hard in plan.rlimits:
        try:
            resource.setrlimit(kind, (soft, hard))
        except (ValueError, OSError) as exc:  # Python says ValueError for EPERM (no CAP_SYS_RESOURCE)
            raise ContainerError(f"process.rlimits: cannot set {_RLIMIT_NAMES.get(kind, kind)} to "
                                 f"{soft}/{hard}: {exc}") from None
    if plan.oom_score_adj is not None:
        syscalls.write_file("/proc/self/oom_score_adj", str(plan.oom_score_adj))
    if plan.umask is not None:
        os.umask(plan.umask)


def reset_signals() -> None:
    """Default dispositions and an empty blocked mask, as runc gives a container's process.

    Handlers are reset by ``execve`` anyway, but *ignored* signals and the blocked mask survive it: a
    monitor that ignores SIGINT/SIGHUP (so a terminal's hang-up cannot kill it), Python's own SIGPIPE
    and SIGXFSZ, or a caller started under ``nohup`` would otherwise hand their choices to the
    workload (``SigIgn`` in /proc/PID/status), and Ctrl-C or ``kill -s INT`` would do nothing."""
    for sig in _IGNORABLE:
        if signal.getsignal(sig) in (signal.SIG_IGN, None):  # None: set outside Python, maybe ignored
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # glibc's reserved real-time signals: below
    for sig in range(32, signal.SIGRTMIN):  # glibc's reserved ones (32, 33): Python cannot name them
        syscalls.default_disposition_raw(sig)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


# Every signal a disposition can be set for (SIGKILL and SIGSTOP cannot be caught or ignored).
_IGNORABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


def _join_cgroup(plan: LaunchPlan, r_go: int, got: bytes) -> bytes:
    """Wait for the parent's ``C`` (the cgroup exists, or it moved us itself), then join ourselves if
    the plan says so; returns what was read so far (``G`` may have come with it)."""
    while b"C" not in got:
        chunk = os.read(r_go, 16)
        if not chunk:
            raise ContainerError("the runtime went away before the container's cgroup was ready")
        got += chunk
    for f in plan.cgroup_join:
        try:
            syscalls.write_file(f, "0")
        except OSError as exc:
            raise ContainerError(f"cannot join cgroup {os.path.dirname(f)}: {exc.strerror}") from exc
    return got


def _exec_workload(plan: LaunchPlan, security: object, env: dict[str, str]) -> None:
    from runtime import security as sec_mod

    sec_mod.enter(security, plan.uid, plan.gid, plan.groups)
    argv = list(plan.argv)
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:  # a path is not looked up in $PATH: say what is missing, as runc does
        where = "no such file or directory" if "/" in argv[0] else "executable file not found in $PATH"
        msg, code = f'isobench: exec: "{argv[0]}": {where}\n', EXIT_NOT_FOUND
    except PermissionError:
        msg, code = f'isobench: exec: "{argv[0]}": permission denied\n', EXIT_CANNOT_EXEC
    except OSError as exc:
        msg, code = f'isobench: exec: "{argv[0]}": {exc.strerror}\n', EXIT_CANNOT_EXEC
    try:
        os.write(2, msg.encode())
    finally:
        os._exit(code)
