"""runc (and every other OCI runtime): the same image as an OCI bundle, ``RUNTIME create`` + ``start``.

One class serves runc, the reference, and the other runtimes of :mod:`ociruntimes` (crun, youki,
runsc, ``--runtime NAME=PATH``): each is an environment named after the runtime, driven through the
same command line on the same bundle. A runtime that cannot run it here fails with its own message,
which the runner records for that benchmark and environment. Start-up is measured as everywhere else,
from the instance's creation to the workload's exit (the harness, a subreaper, waits for the
container's init itself); ``delete`` is teardown, timed apart (``extra["teardown_s"]`` of ``run``).

The bundle's config.json is the job's bundle (:mod:`bench.environments.bundles`: the runtime's spec
converter, the same spec ``isobench run`` and the container environment run: Docker's process rules,
default capabilities, seccomp profile, masked paths, limits in ``linux.resources``), changed only where
this environment must: the rootfs (an overlay over the image's flat rootfs, writable like a
container's layer), the cgroup path, and for a published port a network namespace made by the
project's networking API (veth on the bridge + DNAT) that the runtime joins by path. The container's
cgroup is ``/isobench-<id>/ctr``: runc removes ``ctr`` when the container ends, while the parent keeps
the hierarchical readings (CPU time, memory peak) the harness reads afterwards, then removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import interrupt
from bench.environments import bundles, rootfs
from bench.environments.base import (Environment, Instance, Job, Outcome, OutputPump, Usage, elapsed_s,
                                     kill_wait, process_tree, pss_bytes)
from core import leases
from core import syscalls
from core.errors import BenchError, CgroupError, IsobenchError
from core.paths import HostPaths, new_id
from runtime.lifecycle.process import reap_child

if TYPE_CHECKING:
    from bench.environments.bundles import JobBundle
    from bench.environments.ociruntimes import OciRuntime

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNC_STATE_ROOT = Path("/run/runc")  # runc's default --root for root


def bundle_config(jb: "JobBundle", rootfs_path: Path, obj_id: str, netns_path: str | None) -> dict:
    """config.json for one instance (pure: unit tested): the job's bundle (:mod:`bundles`, the shared
    converter's spec) with only what this environment must change: root.path on the instance's overlay,
    cgroupsPath ``/<id>/ctr``, and the network namespace joined by path for a published port."""
    cfg = dict(jb.spec)
    cfg["root"] = dict(cfg.get("root") or {}, path=str(rootfs_path))
    linux = dict(cfg["linux"])
    linux["cgroupsPath"] = f"/{obj_id}/ctr"
    if netns_path:
        linux["namespaces"] = [{"type": "network", "path": netns_path} if ns["type"] == "network" else ns
                               for ns in linux["namespaces"]]
    cfg["linux"] = linux
    return cfg


def parent_shares(obj_id: str, shares: int) -> None:
    """``shares`` on the instance's parent cgroup ``/isobench-<id>``: ``cpu.shares`` on v1, or on a pure
    v2 host (the vm-container guest) ``cpu.weight`` as runc converts them for ``ctr``."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        from runtime.cgroups.rules import shares_to_weight

        parent, name, value = CGROUP_ROOT / obj_id, "cpu.weight", shares_to_weight(shares)
    else:
        parent, name, value = CGROUP_ROOT / "cpu" / obj_id, "cpu.shares", shares
    parent.mkdir(exist_ok=True)
    syscalls.write_file(str(parent / name), str(value))


def _instance_cgroup(obj_id: str, for_reading: bool = False):
    """The runtime's view (``runtime.cgroups.Cgroup``) of ``/isobench-<id>`` in every hierarchy that has
    it (v1 controllers, runc's named ones, or a v2 tree); None when the runtime made none. For reading,
    a hybrid host's controller-less v2 directory is left out (its readers would look there first)."""
    from runtime.cgroups import Cgroup, detect
    from runtime.cgroups.cgroup import UNIFIED

    layout = detect()
    dirs = {d.parent.name: d for d in CGROUP_ROOT.glob(f"*/{obj_id}")}
    if (CGROUP_ROOT / obj_id).is_dir():  # a pure v2 host
        dirs[UNIFIED] = CGROUP_ROOT / obj_id
    if for_reading and layout.driver == "v1":
        dirs.pop(UNIFIED, None)
    return Cgroup(obj_id, dirs, layout) if dirs else None


def cgroup_readings(obj_id: str) -> dict:
    """Hierarchical CPU time, memory peak and OOM kills of ``/isobench-<id>`` (the parent of the
    runtime's ``ctr``), through the runtime's cgroup readers: v1 controllers or v2 alike."""
    cg = _instance_cgroup(obj_id, for_reading=True)
    if cg is None:
        return {}
    try:
        u = cg.usage()
    except (CgroupError, OSError):
        return {}
    return {"cpu_usage_s": u.cpu_usage_ns / 1e9, "memory_peak_bytes": u.memory_peak_bytes,
            "oom_kills": u.oom_kill_count}


def remove_cgroups(obj_id: str) -> None:
    """Remove ``/isobench-<id>`` (and runc's ``ctr`` below it) in every hierarchy, runc's named
    ``systemd`` and ``unified`` ones included.

    A runc killed while it created the container can leave its ``runc init`` inside, so the instance's
    own cgroup is emptied first; both steps are the runtime's (``Cgroup.kill_all``, ``Cgroup.destroy``).
    """
    cg = _instance_cgroup(obj_id)
    if cg is None:
        return
    try:
        cg.kill_all()
        cg.destroy()
    except CgroupError as exc:
        raise BenchError(f"cannot remove the cgroups of {obj_id}: {exc}") from exc


def remove_abandoned_state(obj_id: str) -> bool:
    """Remove runc's state dir of a container it never finished creating (only ``exec.fifo``, no
    ``state.json``: `runc delete` cannot load it). True if one was removed."""
    d = RUNC_STATE_ROOT / obj_id
    if not d.is_dir() or (d / "state.json").exists():
        return False
    shutil.rmtree(d, ignore_errors=True)
    return not d.exists()


def _die_with_parent() -> None:
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


class RuncInstance(Instance):
    env_name = "runc"

    def __init__(self, env: "RuncEnvironment", job: Job) -> None:
        self.created_ns = time.perf_counter_ns()
        self.env, self.job = env, job
        self.env_name = env.name
        self.cmd = env.runtime.path
        self.id = f"isobench-{new_id()}"
        self.phases: dict[str, float] = {}
        self.readings: dict = {}
        self.pid = 0                       # the container's init, our child once `create` exited
        self.pidfd = -1
        self._wait_memo: dict[int, int] = {}   # reap_child's: the status survives a Ctrl-C mid-wait
        self.exit_code: int | None = None
        self.create_failed: int | None = None   # `create` exit code when the runtime refused the bundle
        self.created = False               # `create` ran (its container may exist): stop() deletes it
        self.pump: OutputPump | None = None
        self.holder: subprocess.Popen | None = None
        self.net_attached = False
        self.root = None
        self.recorded: dict[str, str] = {}
        self._register()
        leases.take(self.id, kind="bench-runc", root=str(env.paths.root))
        try:
            if job.volume is not None:
                job.volume.host_dir.mkdir(parents=True, exist_ok=True)
            # the job's bundle (the shared converter): args, env, cwd, user, limits, mounts, security
            jb = bundles.job_bundle(job, env.paths, hostname=self.id[:20], throttle_dir=env.paths.tmp)
            self.phases["bundle"] = elapsed_s(self.created_ns)
            self.root = rootfs.make_overlay(env.paths, bundles.flat_rootfs(env.paths, jb.image), self.id)
            self.phases["rootfs"] = elapsed_s(self.created_ns)
            netns = None
            if job.port is not None:
                netns = self._network(job.port)
                self.phases["network"] = elapsed_s(self.created_ns)
            if job.limits.cpu_shares is not None:
                # shares only compete among siblings: the parent /isobench-<id> carries them too
                parent_shares(self.id, job.limits.cpu_shares)
            cfg = bundle_config(jb, self.root.rootfs, self.id, netns)
            (self.root.dir / "config.json").write_text(json.dumps(cfg))
            self.recorded = env.ledger.note(jb.process_sha256, jb.image_digest, job, cfg["process"])
            self.phases["config"] = elapsed_s(self.created_ns)
            self._create_and_start()
        except BaseException:
            self.stop()
            raise

    def _create_and_start(self) -> None:
        """``RUNTIME create`` (the container's stdout and stderr: our pipe, runc's pass-through mode),
        then ``RUNTIME start``. The span measured is from the instance's creation to the workload's
        exit, as for every environment; ``delete`` is teardown, timed apart by :meth:`RuncEnvironment.run`."""
        r, w = os.pipe2(os.O_CLOEXEC)
        self.pump = OutputPump(os.fdopen(r, "rb", buffering=0), self.job.ready_marker)
        pidfile = self.root.dir / "init.pid"
        try:
            with interrupt.deferred(), _subreaper():  # a Ctrl-C inside would leave a container nobody recorded
                self.created = True
                res = subprocess.run([self.cmd, "create", "--bundle", str(self.root.dir), "--pid-file",
                                      str(pidfile), self.id], stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                                     preexec_fn=_die_with_parent, timeout=120)
        finally:
            os.close(w)  # the container holds its own copy: EOF comes when it exits
        if res.returncode != 0:  # the runtime's own reason is in the output (crun: hybrid cgroups)
            self.create_failed = res.returncode
            return
        self.pid = int(pidfile.read_text().strip())
        self.pidfd = os.pidfd_open(self.pid)
        self.phases["created"] = elapsed_s(self.created_ns)
        res = subprocess.run([self.cmd, "start", self.id], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=60)
        if res.returncode != 0:
            raise BenchError(f"{self.env_name} start {self.id} failed: {(res.stderr or b'').decode().strip()[-300:]}")
        self.phases["started"] = elapsed_s(self.created_ns)

    def _network(self, port: int) -> str:
        from runtime.network import container as net
        from runtime.spec import NetworkSpec, PortMapping

        # a process holding a fresh network namespace: unshare happens before exec, and Popen returns
        # only after exec succeeded, so the namespace exists when Popen returns
        # named isobench-<id>-netns and killed with the harness (PDEATHSIG), so a crash leaves no holder
        def enter() -> None:
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            syscalls.unshare(syscalls.CLONE_NEWNET)

        with interrupt.deferred():
            self.holder = subprocess.Popen([f"{self.id}-netns", "infinity"],
                                           executable=shutil.which("sleep") or "/bin/sleep",
                                           stdin=subprocess.DEVNULL, preexec_fn=enter)
        self.net_attached = True  # before prepare: detach is idempotent, and an interrupt may land inside it
        plan = net.prepare(self.id, NetworkSpec(mode="bridge", ports=(PortMapping(host_port=0, container_port=port,
                                                                                  host_ip=self.env.publish_ip),)),
                           self.env.paths)
        att = net.attach(plan, self.holder.pid)
        hp = att.ports[0].host_port
        self.endpoint = ("127.0.0.1", hp)
        self.target = f"{att.ip}:{port}"
        return f"/proc/{self.holder.pid}/ns/net"

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        if self.job.ready_marker is None:
            return elapsed_s(self.created_ns)
        if not self.pump.wait_marker(timeout_s):
            raise BenchError(f"{self.env_name} {self.id}: not ready after {timeout_s}s (output: {self.pump.text(0.1)[-300:]!r})")
        return (self.pump.ready_ns - self.created_ns) / 1e9

    def pids(self) -> list[int]:
        return process_tree(self.pid) if self.pid and self.exit_code is None else []

    def workload_pids(self) -> list[int]:
        return self.pids()  # the runtime does not stay: after `start` only the workload runs

    def usage(self) -> Usage:
        pids = self.pids()
        r = cgroup_readings(self.id)
        return Usage(pss_bytes=pss_bytes(pids), cpu_s=r.get("cpu_usage_s", 0.0),
                     memory_peak_bytes=r.get("memory_peak_bytes"),
                     detail=f"{len(pids)} processes (the runtime exits after start)")

    def _reap(self, timeout_s: float | None) -> bool:
        """Wait for the container's init (our child: the environment is a subreaper) to exit."""
        import select

        if self.exit_code is not None or self.pidfd < 0:
            return True
        if not select.select([self.pidfd], [], [], timeout_s)[0]:
            return False
        code = os.waitstatus_to_exitcode(reap_child(self.pid, self._wait_memo))
        self.exit_code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as runc run says
        os.close(self.pidfd)
        self.pidfd = -1
        return True

    def wait(self, timeout_s: float | None = None) -> Outcome:
        if self.create_failed is not None:
            return Outcome(exit_code=self.create_failed, output=self.pump.text(), wall_s=elapsed_s(self.created_ns),
                           phases=dict(self.phases), extra=dict(self.recorded))
        limit = timeout_s if timeout_s is not None else self.job.timeout_s
        if not self._reap(limit):
            raise BenchError(f"{self.env_name} {self.id}: still running after {limit}s")
        wall = elapsed_s(self.created_ns)
        self.phases["exit"] = wall
        self.readings = cgroup_readings(self.id)
        return Outcome(exit_code=self.exit_code, output=self.pump.text(), wall_s=wall, phases=dict(self.phases),
                       extra={**self.readings, **self.recorded})

    def stop(self) -> None:
        """Idempotent: every step checks what is left, so a stop cut short by Ctrl-C can be finished."""
        errors = []
        if self.pid and self.exit_code is None:
            syscalls.run([self.cmd, "kill", self.id, "KILL"], check=False, timeout_s=10)
            if not self._reap(10.0):
                errors.append(f"container init {self.pid} survived SIGKILL for 10 s")
        if self.created:
            syscalls.run([self.cmd, "delete", "-f", self.id], check=False, timeout_s=10)
            self.created = False
        if self.pump is not None:
            self.pump.text(1.0)
        remove_abandoned_state(self.id)
        if self.net_attached:
            from runtime.network import container as net

            try:
                net.detach(self.id, self.env.paths)
                self.net_attached = False
            except IsobenchError as exc:  # keep tearing down; reported below
                errors.append(str(exc))
        if self.holder is not None:
            kill_wait(self.holder)
            self.holder = None
        try:
            remove_cgroups(self.id)
        except BenchError as exc:
            errors.append(str(exc))
        if self.root is not None:
            self.root.remove()
            self.root = None
        leases.release(self.id)
        self._unregister()
        if errors:
            raise BenchError(f"{self.env_name} {self.id}: cleanup: {'; '.join(errors)}")


_subreaper_lock = threading.Lock()
_subreaper_users = 0


@contextlib.contextmanager
def _subreaper():
    """Be a child subreaper only while ``RUNTIME create`` runs. `create` exits once the container waits
    for `start`: its init then becomes the child of the nearest subreaper, so the harness waits for the
    workload's exit status itself (as containerd's shim and conmon do). Only for that window: a process
    that stays a subreaper inherits every orphan of its descendants (detached monitors, servers) as
    zombies it never reaps, and a long-lived host of the harness (pytest, a notebook) piles them up."""
    global _subreaper_users
    with _subreaper_lock:
        if _subreaper_users == 0:
            syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        _subreaper_users += 1
    try:
        yield
    finally:
        with _subreaper_lock:
            _subreaper_users -= 1
            if _subreaper_users == 0:
                syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 0)


class RuncEnvironment(Environment):
    """runc, or the OCI runtime ``runtime`` (its name is the environment's)."""

    name = "runc"

    def __init__(self, paths: HostPaths, runtime: "OciRuntime | None" = None, publish_ip: str = "127.0.0.1") -> None:
        """``publish_ip``: where a published port listens ("" = every address: the vm-container guest)."""
        from bench.environments.ociruntimes import registered

        rt = runtime or registered("runc")
        if rt is None:
            raise BenchError("runc not found (apt-get install runc)")
        self.paths, self.runtime, self.name, self.publish_ip = paths, rt, rt.name, publish_ip
        self.ledger = bundles.Ledger()

    def start(self, job: Job) -> Instance:
        return RuncInstance(self, job)

    def run(self, job: Job) -> Outcome:
        """Create to exit, then teardown (``delete`` and the rest of the clean-up) timed apart:
        ``extra["teardown_s"]``."""
        inst = RuncInstance(self, job)
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
        res = syscalls.run([self.runtime.path, "--version"], check=False)
        return {"execution": f"{self.name} create/start of the job's OCI bundle (config.json from "
                             "runtime.oci.specconv, overlay rootfs, cgroupfs)",
                "runtime": self.runtime.path,
                "version": (res.stdout or b"").decode().splitlines()[0] if res.stdout else "?",
                "bundles": self.ledger.describe()}
