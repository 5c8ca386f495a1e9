"""native: the image's binaries run on the host with chroot only: no namespaces, no cgroups.

The baseline every other number is compared with: same binaries (the image's flat rootfs, through a
per-instance overlay so writes stay private), but the host's /proc, /dev, /sys, network, PIDs, IPC,
users and hostname. There are no limits natively; a job asking for some is run without them and the
enforcement workload records that. Servers listen directly on 127.0.0.1 (no port mapping).
"""

from __future__ import annotations

import os
import subprocess
import time

from bench import interrupt
from bench.environments import images, rootfs
from bench.environments.base import (Environment, Instance, Job, Outcome, OutputPump, Usage, cpu_seconds,
                                     elapsed_s, fill_port, free_port, image_env, kill_wait, process_tree,
                                     pss_bytes)
from core.errors import BenchError
from core.paths import HostPaths


class NativeInstance(Instance):
    env_name = "native"

    def __init__(self, env: "NativeEnvironment", job: Job) -> None:
        self.created_ns = time.perf_counter_ns()
        self.job = job
        self.phases: dict[str, float] = {}
        self.proc: subprocess.Popen | None = None
        self.root = None
        self._register()
        try:
            rec, flat = images.flat_rootfs(env.paths, job.image)
            self.root = rootfs.make_overlay(env.paths, flat)
            rootfs.mount_proc(self.root)
            rootfs.bind(self.root, "/dev", "/dev", recursive=True)
            rootfs.bind(self.root, "/sys", "/sys", recursive=True)
            if job.volume is not None:
                job.volume.host_dir.mkdir(parents=True, exist_ok=True)
                rootfs.bind(self.root, job.volume.host_dir, job.volume.destination)
            self.phases["rootfs"] = elapsed_s(self.created_ns)
            port = None
            if job.port is not None:
                port = free_port()
                self.endpoint = ("127.0.0.1", port)
                self.target = f"127.0.0.1:{port}"
            argv = fill_port(job.argv, port)
            env = image_env(rec.config, job.env)
            root = str(self.root.rootfs)
            cwd = job.workdir or rec.config.get("config", {}).get("WorkingDir") or "/"

            def enter() -> None:  # runs in the child between fork and exec: the only "isolation"
                os.chroot(root)
                os.chdir(cwd)

            with interrupt.deferred():  # a Ctrl-C inside Popen would orphan the workload (and its mounts)
                self.proc = subprocess.Popen(argv, env=env, preexec_fn=enter, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.phases["exec"] = elapsed_s(self.created_ns)
            self.pump = OutputPump(self.proc.stdout, job.ready_marker)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        if self.job.ready_marker is None:
            return self.phases.get("exec", 0.0)
        if not self.pump.wait_marker(timeout_s):
            raise BenchError(f"native: {self.job.argv[0]} not ready after {timeout_s}s "
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
            raise BenchError(f"native: {self.job.argv[0]} still running after {exc.timeout}s") from exc
        wall = elapsed_s(self.created_ns)
        self.phases["exit"] = wall
        return Outcome(exit_code=code, output=self.pump.text(), wall_s=wall, phases=dict(self.phases))

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

    def start(self, job: Job) -> Instance:
        return NativeInstance(self, job)

    def run(self, job: Job) -> Outcome:
        inst = NativeInstance(self, job)
        try:
            return inst.wait()
        finally:
            inst.stop()

    def describe(self) -> dict:
        return {"execution": "chroot into the image's flat rootfs (overlay upper per instance); "
                             "host namespaces, no cgroup limits"}
