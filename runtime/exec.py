"""``isobench exec``: run another process inside a running container.

The calling (host Python) process joins the container: first made non-dumpable (so container
processes cannot open its /proc/<pid>/exe, CVE-2019-5736), then it joins the container's cgroup,
then ``setns`` into each namespace of the container's PID 1 (user first, mount last: after that the
host's files, Python's modules included, are gone, so everything is imported beforehand). A fork is
needed for the PID namespace to apply; the child takes the container's security settings and execs.
"""

from __future__ import annotations

import contextlib
import os
import signal

from runtime import namespaces
from core import syscalls
from core.errors import ContainerError, IsobenchError
from core.paths import HostPaths


def exec_in(paths: HostPaths, ref: str, argv: list[str], *, env: tuple[str, ...] = (),
            workdir: str | None = None, user: str | None = None) -> int:
    from runtime import api, security
    from runtime.cgroups import open_cgroup
    from runtime.config_image import merge_env
    from runtime.lifecycle.process import _exec_workload, LaunchPlan, exit_code_of
    from runtime.rootfs.mounts import RootfsPlan
    from runtime.spec import SecuritySpec

    c = api.load(paths, ref)
    if not api.is_running(c):
        raise ContainerError(f"container {c.name or c.id} is not running")
    st = c.state
    sec_cfg = (st.get("config") or {}).get("security") or {}
    prepared = security.prepare(SecuritySpec(**{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in sec_cfg.items()}))
    uid, gid = int(st.get("uid", 0)), int(st.get("gid", 0))
    if user is not None:
        name, _, group = user.partition(":")
        if not name.isdigit() or (group and not group.isdigit()):
            raise ContainerError(f"exec --user {user!r}: only numeric UID[:GID] is supported")
        uid, gid = int(name), int(group) if group else int(name)
    envmap = merge_env(st.get("env") or [], env)
    plan = LaunchPlan(container_id=c.id, hostname=st.get("hostname", ""), argv=tuple(argv),
                      env=tuple(f"{k}={v}" for k, v in envmap.items()), workdir=workdir or st.get("workdir", "/"),
                      uid=uid, gid=gid, groups=(gid,) if uid else (), unshare_flags=0,
                      rootfs=RootfsPlan((), "", "", ""))
    names = namespaces.joined_namespaces(st.get("network_mode", "none"), bool(st.get("userns_remap")),
                                         bool(st.get("cgroupns")))
    fds = []
    try:
        for ns in names:
            fds.append(os.open(f"/proc/{c.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise ContainerError(f"container {c.id}: cannot open its namespaces: {exc.strerror}") from exc
    security.harden_joining_process()
    try:  # single-threaded here (setns below requires it): joining this thread joins the process,
        # without the kernel's global lock that a cgroup.procs write waits an RCU grace period for
        open_cgroup(c.host_name).join_self()
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
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            os.chdir(plan.workdir)
            _exec_workload(plan, prepared, dict(e.partition("=")[::2] for e in plan.env))
        except BaseException as exc:  # noqa: BLE001 - in the container: report and exit like a shell
            with contextlib.suppress(OSError):
                os.write(2, f"isobench: exec: {exc}\n".encode())
        finally:
            os._exit(code)

    def forward(sig, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return exit_code_of(status)
        except InterruptedError:
            continue
