"""``isobench exec`` and ``isobench-runtime exec``: run another process inside a running container.

The calling (host Python) process joins the container: first made non-dumpable (so container
processes cannot open its /proc/<pid>/exe, CVE-2019-5736), then it joins the container's cgroup,
then ``setns`` into each namespace of the container's PID 1 (user first, mount last: after that the
host's files, Python's modules included, are gone, so everything is imported beforehand). A fork is
needed for the PID namespace to apply; the child takes the container's security settings (those of
its bundle, or of an OCI ``--process`` file) and execs. With a terminal the child opens a pty in the
container's devpts and sends the master back (:mod:`runtime.console`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket

from runtime import namespaces
from core import syscalls
from core.errors import ContainerError, IsobenchError
from core.paths import HostPaths


def exec_in(paths: HostPaths, ref: str, argv: list[str], *, env: tuple[str, ...] = (),
            workdir: str | None = None, user: str | None = None, process: object = None, tty: bool = False,
            console_fd: int = -1, detach: bool = False, pid_file: str | None = None) -> int:
    """Run ``argv`` (or an OCI ``process``: runtime.oci.bundle.OciProcess, whose env is complete and
    whose capabilities apply) in container ``ref``; returns its exit code, or 0 at once with ``detach``.
    ``tty``: a pty relayed to our stdin/stdout; ``console_fd``: a socket to send the pty master over."""
    from runtime import api, security
    from runtime.config_image import merge_env
    from runtime.lifecycle.process import _exec_workload, LaunchPlan, exit_code_of, reap_child, reset_signals
    from runtime import console
    from runtime.oci import bundle
    from runtime.rootfs.mounts import RootfsPlan

    c = api.load(paths, ref)
    if not api.is_running(c):
        raise ContainerError(f"container {c.name or c.id} is not running")
    st = c.state
    if not st.get("bundle"):
        raise ContainerError(f"container {c.name or c.id} was created by an older isobench (no bundle): recreate it")
    b = bundle.load(st["bundle"])
    if process is not None:
        p = process
        b = dataclasses.replace(b, process=p)
        uid, gid, groups = p.uid, p.gid, p.additional_gids
        env_list, argv, cwd = p.env, list(p.args), p.cwd
        tty = tty or p.terminal
    else:
        uid, gid = int(st.get("uid", 0)), int(st.get("gid", 0))
        if user is not None:
            name, _, group = user.partition(":")
            if not name.isdigit() or (group and not group.isdigit()):
                raise ContainerError(f"exec --user {user!r}: only numeric UID[:GID] is supported")
            uid, gid = int(name), int(group) if group else int(name)
        groups = (gid,) if uid else ()
        env_list = tuple(f"{k}={v}" for k, v in merge_env(st.get("env") or [], env).items())
        cwd = workdir or st.get("workdir", "/")
    prepared = api._security_of(b)
    plan = LaunchPlan(container_id=c.id, hostname=st.get("hostname", ""), argv=tuple(argv), env=tuple(env_list),
                      workdir=cwd, uid=uid, gid=gid, groups=tuple(groups), unshare_flags=0,
                      rootfs=RootfsPlan((), "", "", ""))
    names = st.get("join_namespaces") or namespaces.joined_namespaces(
        st.get("network_mode", "none"), bool(st.get("userns_remap")), bool(st.get("cgroupns")))
    fds = []
    try:
        for ns in names:
            fds.append(os.open(f"/proc/{c.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise ContainerError(f"container {c.id}: cannot open its namespaces: {exc.strerror}") from exc
    ours = theirs = -1
    if tty and console_fd < 0:
        ours, theirs = (s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
        console_fd = theirs
    size = getattr(process, "console_size", None) or (console.terminal_size(0) if tty else None)
    # the pid file is a host path: its directory is opened now, before the mount namespace changes
    pid_dir = os.open(os.path.dirname(os.path.abspath(pid_file)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) \
        if pid_file else -1
    security.harden_joining_process()
    try:  # single-threaded here (setns below requires it): joining this thread joins the process,
        # without the kernel's global lock that a cgroup.procs write waits an RCU grace period for
        api.open_cgroup_of(c).join_self()
    except IsobenchError as exc:
        raise ContainerError(f"container {c.id}: cannot join its cgroup: {exc}") from exc
    try:
        for fd in fds:
            syscalls.setns(fd, 0)
    except OSError as exc:
        raise ContainerError(f"container {c.id}: setns failed: {exc}") from exc
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    pid = os.fork()
    if pid == 0:
        code = 126
        try:
            reset_signals()
            if console_fd >= 0:
                if ours >= 0:
                    os.close(ours)
                slave = console.open_in_container(console_fd, size, bind_console=False)
                for n in (0, 1, 2):
                    os.dup2(slave, n)
            os.chdir(plan.workdir)
            _exec_workload(plan, prepared, dict(e.partition("=")[::2] for e in plan.env))
        except BaseException as exc:  # noqa: BLE001 - in the container: report and exit like a shell
            with contextlib.suppress(OSError):
                os.write(2, f"isobench: exec: {exc}\n".encode())
        finally:
            os._exit(code)
    if pid_file:
        _write_pid_file(pid_dir, os.path.basename(pid_file), pid)
    if theirs >= 0:
        os.close(theirs)
    if detach:
        return 0

    def forward(sig, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    if ours >= 0:
        sock = socket.socket(fileno=ours)
        try:
            master = console.receive_master(sock)
        finally:
            sock.close()
        try:
            console.relay(master)
        finally:
            os.close(master)
    return exit_code_of(reap_child(pid, {}))


def _write_pid_file(dir_fd: int, name: str, pid: int) -> None:
    """Atomically (temp + rename), as runc does: conmon reads it as soon as we exit."""
    tmp = f".{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.close(dir_fd)
