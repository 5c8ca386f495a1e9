"""native: the image's binaries run on the host with chroot only: no namespaces, no cgroups.

The baseline every other number is compared with: the job's OCI bundle (:mod:`bundles`, the same
bundle every environment runs): its rootfs (the image's flat rootfs, through a per-instance overlay so
writes stay private) and its process (args, env, cwd, uid/gid and groups), but the host's /proc, /dev,
/sys, network, PIDs, IPC, users and hostname. There are no limits natively; a job asking for some is run without them and the
enforcement workload records that. Servers listen directly on 127.0.0.1 (no port mapping).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass

from bench import interrupt
from bench.environments import bundles, rootfs
from bench.environments.base import (Environment, Instance, Job, Outcome, OutputPump, Usage, cpu_seconds,
                                     elapsed_s, free_port, kill_wait, process_tree, pss_bytes)
from core.errors import BenchError
from core.paths import HostPaths


@dataclass(frozen=True)
class Launch:
    """What the native child does between fork and exec, from the bundle (pure: unit tested)."""

    root: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    def env_dict(self) -> dict[str, str]:
        return dict(e.partition("=")[::2] for e in self.env)

    def enter(self) -> None:
        """Runs in the child between fork and exec: the only "isolation" is the chroot; then the
        bundle's working directory and user (groups first, then gid, then uid: root drops last)."""
        os.chroot(self.root)
        os.chdir(self.cwd)
        if (self.uid, self.gid, self.groups) != (0, 0, ()):
            os.setgroups(list(self.groups))
            os.setgid(self.gid)
            os.setuid(self.uid)


def launch_of(spec: dict) -> Launch:
    """The bundle's process as the native child runs it, read by the runtime's own parser."""
    from runtime.oci.bundle import parse_process

    p = parse_process(spec["process"], "config.json: process")
    return Launch(root=spec["root"]["path"], args=p.args, env=p.env, cwd=p.cwd, uid=p.uid, gid=p.gid,
                  groups=p.additional_gids)


class NativeInstance(Instance):
    env_name = "native"

    def __init__(self, env: "NativeEnvironment", job: Job) -> None:
        self.created_ns = time.perf_counter_ns()
        self.job = job
        self.phases: dict[str, float] = {}
        self.proc: subprocess.Popen | None = None
        self.root = None
        self.recorded: dict[str, str] = {}
        self.program = job.argv[0] if job.argv else job.image
        self._register()
        try:
            port = None
            if job.port is not None:
                port = free_port()
                self.endpoint = ("127.0.0.1", port)
                self.target = f"127.0.0.1:{port}"
            # the job's bundle (the shared converter); natively only its process is applied, on its rootfs
            jb = bundles.job_bundle(job, env.paths, hostname=socket.gethostname(), port=port)
            self.phases["bundle"] = elapsed_s(self.created_ns)
            self.root = rootfs.make_overlay(env.paths, bundles.flat_rootfs(env.paths, jb.image))
            rootfs.mount_proc(self.root)
            rootfs.bind(self.root, "/dev", "/dev", recursive=True)
            rootfs.bind(self.root, "/sys", "/sys", recursive=True)
            if job.volume is not None:
                job.volume.host_dir.mkdir(parents=True, exist_ok=True)
                rootfs.bind(self.root, job.volume.host_dir, job.volume.destination)
            self.phases["rootfs"] = elapsed_s(self.created_ns)
            jb.spec["root"] = dict(jb.spec.get("root") or {}, path=str(self.root.rootfs))
            launch = launch_of(jb.spec)
            self.program = launch.args[0]
            self.recorded = env.ledger.note(jb.process_sha256, jb.image_digest, job, jb.process)

            with interrupt.deferred():  # a Ctrl-C inside Popen would orphan the workload (and its mounts)
                self.proc = subprocess.Popen(list(launch.args), env=launch.env_dict(), preexec_fn=launch.enter,
                                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT)
            self.phases["exec"] = elapsed_s(self.created_ns)
            self.pump = OutputPump(self.proc.stdout, job.ready_marker)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        if self.job.ready_marker is None:
            return self.phases.get("exec", 0.0)
        if not self.pump.wait_marker(timeout_s):
            raise BenchError(f"native: {self.program} not ready after {timeout_s}s "
                             f"(output: {self.pump.text(0.1)[-200:]!r})")
        return (self.pump.ready_ns - self.created_ns) / 1e9

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def workload_pids(self) -> list[int]:
        return self.pids()

    def usage(self) -> Usage:
        pids = self.pids()
        return Usage(pss_bytes=pss_bytes(pids), cpu_s=cpu_seconds(pids), detail=f"{len(pids)} processes")

    def wait(self, timeout_s: float | None = None) -> Outcome:
        try:
            code = self.proc.wait(timeout_s if timeout_s is not None else self.job.timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"native: {self.program} still running after {exc.timeout}s") from exc
        wall = elapsed_s(self.created_ns)
        self.phases["exit"] = wall
        return Outcome(exit_code=code, output=self.pump.text(), wall_s=wall, phases=dict(self.phases),
                       extra=dict(self.recorded))

    def stop(self) -> None:
        if self.proc is not None:
            kill_wait(self.proc)
            if self.proc.stdout:
                self.proc.stdout.close()
        if self.root is not None:
            self.root.remove()
            self.root = None
        self._unregister()


class NativeEnvironment(Environment):
    name = "native"

    def __init__(self, paths: HostPaths) -> None:
        self.paths = paths
        self.ledger = bundles.Ledger()

    def start(self, job: Job) -> Instance:
        return NativeInstance(self, job)

    def run(self, job: Job) -> Outcome:
        """Create to exit, then teardown (kill what is left, unmount the overlay) timed apart:
        ``extra["teardown_s"]``, as for every environment."""
        inst = NativeInstance(self, job)
        try:
            out = inst.wait()
        except BaseException:
            inst.stop()
            raise
        t0 = time.perf_counter_ns()
        inst.stop()
        out.extra["teardown_s"] = elapsed_s(t0)
        return out

    def describe(self) -> dict:
        return {"execution": "chroot into the job's OCI bundle rootfs (the image's flat rootfs, overlay upper per "
                             "instance) running the bundle's process (args, env, cwd, uid/gid); host namespaces, "
                             "no cgroup limits",
                "bundles": self.ledger.describe()}
