"""container: the project's own runtime, called in-process through ``runtime.api``.

In-process on purpose: start latency is a headline number, and Python's own start-up must not be
counted as container cost. The job maps onto the shared :class:`runtime.spec.ContainerConfig` (the
same type ``isobench run`` builds), so a limit asked here is exactly what the CLI would ask, and
``runtime.api.create`` turns it into the job's OCI bundle with the converter every other environment's
bundle comes from (:mod:`bench.environments.bundles`); the process digest recorded is that of the
``config.json`` the runtime wrote and ran. Phases come
from the runtime's own ``perf_counter_ns`` stamps (call, created, forked, cgroup, namespaces, rootfs,
network, exec, exited). Jobs without a port use ``--network none`` (like runc's default empty network
namespace); with a port, the bridge and a DNAT mapping on 127.0.0.1.
"""

from __future__ import annotations

import os
import time

from bench import interrupt
from bench.environments import bundles
from bench.environments.base import (Environment, Instance, Job, Outcome, OutputPump, Usage, elapsed_s,
                                     process_tree, pss_bytes)
from core.errors import BenchError, IsobenchError
from core.paths import HostPaths


def container_config(job: Job, paths: HostPaths, publish_ip: str = "127.0.0.1"):
    """The ContainerConfig of a job: :func:`bench.environments.bundles.job_config`, the input of the one
    bundle every environment runs (``runtime.api.create`` converts it with the same converter)."""
    return bundles.job_config(job, paths, publish_ip)


def phases_s(timings_ns: dict[str, int]) -> dict[str, float]:
    """Runtime phase stamps -> seconds since the create call, in time order."""
    t0 = timings_ns.get("call")
    if t0 is None:
        return {}
    return {k: (v - t0) / 1e9 for k, v in sorted(timings_ns.items(), key=lambda kv: kv[1]) if k != "call"}


def usage_extra(u) -> dict:
    if u is None:
        return {}
    return {"cpu_usage_s": u.cpu_usage_ns / 1e9, "memory_peak_bytes": u.memory_peak_bytes,
            "oom_kills": u.oom_kill_count, "pids_current": u.pids_current}


class ContainerInstance(Instance):
    env_name = "container"

    def __init__(self, env: "ContainerEnvironment", job: Job) -> None:
        from runtime import api

        self.api = api
        self.env = env
        self.job = job
        self.recorded: dict[str, str] = {}
        self.created_ns = time.perf_counter_ns()
        self._register()
        cfg = container_config(job, env.paths, env.publish_ip)
        r, w = os.pipe()
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self.c = None
        try:
            with interrupt.deferred():  # until self.c holds the container, stop() could not remove it
                self.c = api.create(cfg, env.paths, stdio=(devnull, w, w))
            self.created_ns = self.c.timings_ns.get("call", self.created_ns)
            api.start(self.c)
        except BaseException:
            os.close(r)
            self._close_fds(w, devnull)
            self.stop()
            raise
        self._close_fds(w, devnull)
        self.pump = OutputPump(os.fdopen(r, "rb", buffering=0), job.ready_marker)
        if job.port is not None:
            ports = self.c.state.get("ports") or []
            if not ports:
                self.stop()
                raise BenchError(f"container {self.c.id}: no published port after start")
            host_ip, host_port = ports[0][0] or "127.0.0.1", int(ports[0][1])
            self.endpoint = (host_ip, host_port)
            self.target = f"{self.c.ip_address}:{job.port}"

    @staticmethod
    def _close_fds(*fds: int) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        if self.job.ready_marker is None:
            return elapsed_s(self.created_ns)
        if not self.pump.wait_marker(timeout_s):
            raise BenchError(f"container {self.c.id}: not ready after {timeout_s}s "
                             f"(output: {self.pump.text(0.1)[-300:]!r})")
        return (self.pump.ready_ns - self.created_ns) / 1e9

    def workload_pids(self) -> list[int]:
        return process_tree(self.c.pid) if self.api.is_running(self.c) else []

    def usage(self) -> Usage:
        pids = process_tree(self.c.pid) if self.api.is_running(self.c) else []
        u = self.api.usage(self.c)
        return Usage(pss_bytes=pss_bytes(pids), cpu_s=u.cpu_usage_ns / 1e9 if u else 0.0,
                     memory_peak_bytes=u.memory_peak_bytes if u else None,
                     detail=f"{len(pids)} processes (monitor: the harness itself)")

    def wait(self, timeout_s: float | None = None) -> Outcome:
        code = self.api.wait(self.c, timeout_s=timeout_s if timeout_s is not None else self.job.timeout_s)
        ph = phases_s(self.c.timings_ns)
        wall = ph.get("exited", elapsed_s(self.created_ns))
        extra = usage_extra(self.c.final_usage)
        extra["oom_killed"] = self.c.oom_killed
        extra.update(self.record_bundle())
        return Outcome(exit_code=code, output=self.pump.text(), wall_s=wall, phases=ph, extra=extra)

    def record_bundle(self) -> dict[str, str]:
        """The digest of the process the runtime ran, from the bundle it wrote (``<container dir>/
        config.json``), noted in the environment's ledger; read after the fact, outside the timed span."""
        if not self.recorded and self.c is not None:
            import json

            from runtime.oci.specconv import ANN_IMAGE_DIGEST

            try:
                spec = json.loads((self.c.dir / "config.json").read_text())
            except (OSError, ValueError) as exc:
                raise BenchError(f"container {self.c.id}: cannot read its bundle: {exc}") from exc
            proc = spec["process"]
            digest = bundles.digest(proc, self.job)
            image = (spec.get("annotations") or {}).get(ANN_IMAGE_DIGEST, "")
            self.recorded = self.env.ledger.note(digest, image, self.job, proc)
        return self.recorded

    def stop(self) -> None:
        if self.c is not None:
            c = self.c
            if not self.recorded:  # a started server: its bundle is recorded before the dir goes
                try:
                    self.record_bundle()
                except (BenchError, KeyError):
                    pass
            try:
                self.api.delete(c, force=True)
            except IsobenchError as exc:
                raise BenchError(f"container {c.id}: cleanup failed: {exc}") from exc
            self.c = None
        self._unregister()


class ContainerEnvironment(Environment):
    name = "container"

    def __init__(self, paths: HostPaths, publish_ip: str = "127.0.0.1") -> None:
        try:
            import runtime.api  # noqa: F401
        except ImportError as exc:
            raise BenchError(f"the container runtime is not available: {exc}") from exc
        self.paths = paths
        self.publish_ip = publish_ip
        self.ledger = bundles.Ledger()

    def start(self, job: Job) -> Instance:
        return ContainerInstance(self, job)

    def run(self, job: Job) -> Outcome:
        """Create to exit, then teardown (``delete``) timed apart: ``extra["teardown_s"]``."""
        inst = ContainerInstance(self, job)
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
        return {"execution": "isobench runtime in-process on the job's OCI bundle (runtime.api.create): overlayfs, "
                             "namespaces, cgroups, seccomp, caps",
                "bundles": self.ledger.describe()}
