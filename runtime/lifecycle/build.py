"""Build containers: the builder's RUN steps executed by the container runtime itself.

A RUN step is a short-lived container over explicit layer directories (the image being built, not a
stored image): the same fork/namespaces/overlay/pivot_root/security path as ``isobench run``, with the
host's network (``apt-get install`` must reach the package mirrors, as in Docker's classic builder), a
cgroup for accounting, and the output streamed line by line to the builder's log. Only the step's
``upper`` directory survives: it becomes the layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from pathlib import Path
from typing import Callable

from runtime import namespaces
from core import leases
from runtime.spec import DEFAULT_PATH
from runtime.lifecycle.process import LaunchPlan, exit_code_of, spawn
from core.paths import HostPaths, host_name, new_id
from runtime.rootfs.mounts import RootfsPlan
from runtime.spec import ContainerConfig, NetworkSpec, Resources, SecuritySpec

BUILD_HOSTNAME = "isobench-build"


def run_build_step(paths: HostPaths, lower_dirs: list[Path], upper: Path, work: Path, merged: Path,
                   argv: list[str], env: list[str], workdir: str, uid: int, gid: int, home: str,
                   log: Callable[[str], None], etc_files: tuple[tuple[str, str], ...] = ()) -> int:
    """Run ``argv`` in a build container; returns its exit code (128+N when killed by signal N).
    Setup failures raise :class:`~core.errors.ContainerError`."""
    from runtime import security
    from runtime.cgroups import create_cgroup

    envmap = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    envmap.setdefault("PATH", DEFAULT_PATH)
    envmap.setdefault("HOME", home)
    config = ContainerConfig(image="", network=NetworkSpec(mode="host"))
    cid = new_id()
    plan = LaunchPlan(
        container_id=cid, hostname=BUILD_HOSTNAME, argv=tuple(argv),
        env=tuple(f"{k}={v}" for k, v in envmap.items()), workdir=workdir or "/", uid=uid, gid=gid,
        groups=(gid,) if uid else (), unshare_flags=namespaces.child_flags(config, cgroupns=False),
        loopback_up=False, die_with_parent=True,
        rootfs=RootfsPlan(lowerdirs=tuple(str(d) for d in lower_dirs), upper=str(upper), work=str(work),
                          merged=str(merged), etc_files=etc_files,
                          # the layer is a plain diff of ``upper``: changed files carry their data,
                          # renamed dirs show up as copies, no overlay-private xattrs
                          overlay_extra="index=off,redirect_dir=off,metacopy=off"))
    prepared = security.prepare(SecuritySpec())
    r_out, w_out = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    with contextlib.ExitStack() as undo:
        undo.callback(os.close, r_out)
        undo.callback(os.close, null)
        leases.take(cid, kind="build", root=str(paths.root))
        undo.callback(leases.release, cid)
        cgroup = create_cgroup(host_name(cid), Resources())
        undo.callback(cgroup.destroy)
        try:
            plan = dataclasses.replace(plan, cgroup_join=cgroup.self_join_files())  # the child joins itself
            spawned = spawn(plan, prepared, (null, w_out, w_out), lambda pid: None, None)
        finally:
            os.close(w_out)
        try:
            _pump(r_out, log)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spawned.pid, signal.SIGKILL)
            raise
        finally:
            _, status = os.waitpid(spawned.pid, 0)
    return exit_code_of(status)


def _pump(fd: int, log: Callable[[str], None]) -> None:
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            log(line.decode(errors="replace"))
    if buf:
        log(buf.decode(errors="replace"))
