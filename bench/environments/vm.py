"""vm: the same image booted as a KVM/QEMU virtual machine through the project's VM harness.

The harness turns the image into an ext4 disk plus the Debian kernel and an init shim, boots it under
libvirt and reports boot phases from host-side monotonic timestamps of guest signals. Which accelerator
ran (KVM, or TCG when the probe boot proves KVM unusable) is data: every VM result carries it. Limits
map to their VM counterparts: ``cpus`` -> the domain's CPU quota (cputune), memory -> guest RAM,
vcpus from the job; pids, shares and block throttling have no VM counterpart here.
"""

from __future__ import annotations

import time

from bench import interrupt
from bench.environments.base import (Environment, Instance, Job, Outcome, Usage, elapsed_s, fill_port,
                                     free_port)
from core.errors import BenchError, IsobenchError
from core.paths import HostPaths

MIB = 1 << 20


def vm_config(job: Job, port_host: int | None = None, run_timeout_s: float | None = None):
    """The VMRunConfig for a job (pure)."""
    from vmharness.api import MIN_MEMORY_MIB, VMRunConfig
    from runtime.spec import PortMapping

    memory_mib = job.memory_mib
    if job.limits.memory_bytes is not None:
        memory_mib = max(MIN_MEMORY_MIB, job.limits.memory_bytes // MIB)
    ports = ()
    if job.port is not None and port_host is not None:
        ports = (PortMapping(host_port=port_host, container_port=job.port, host_ip="127.0.0.1"),)
    return VMRunConfig(memory_mib=memory_mib, vcpus=job.vcpus, cpus=job.limits.cpus, env=job.env, ports=ports,
                       network="bridge" if ports else "none", run_timeout_s=run_timeout_s or job.timeout_s,
                       workdir=job.workdir)


class VMInstance(Instance):
    env_name = "vm"

    def __init__(self, env: "VMEnvironment", job: Job) -> None:
        from vmharness import api

        self.created_ns = time.perf_counter_ns()
        self.job = job
        self.vm = None
        self._register()
        hp = free_port() if job.port is not None else None
        with interrupt.deferred():  # until self.vm holds the domain, stop() could not destroy it
            self.vm = api.start(job.image, fill_port(job.argv, job.port), vm_config(job, hp), env.paths)
        env.note_accel(self.vm.accel, self.vm.accel_reason, self.vm.domain_cfg.machine)
        if hp is not None:
            self.endpoint = ("127.0.0.1", hp)
            self.target = f"{self.vm.ip}:{job.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        self.vm.wait_ready(timeout_s)
        return elapsed_s(self.created_ns)

    def usage(self) -> Usage:
        u = self.vm.usage()
        return Usage(pss_bytes=u.pss_bytes, cpu_s=u.cpu_user_s + u.cpu_system_s,
                     detail=f"qemu pid {u.pid}: guest RAM PSS {u.guest_ram_pss_bytes}, "
                            f"overhead PSS {u.overhead_pss_bytes}")

    def accounting_pid(self) -> int | None:
        return self.vm.pid if self.vm is not None else None

    def wait(self, timeout_s: float | None = None) -> Outcome:
        code = self.vm.wait_exit(timeout_s if timeout_s is not None else self.job.timeout_s)
        wall = elapsed_s(self.created_ns)
        return Outcome(exit_code=code, output=self.vm.output(), wall_s=wall, phases=self.vm.phases(),
                       extra={"accel": self.vm.accel})

    def stop(self) -> None:
        import shutil

        if self.vm is not None:
            self.vm.close()
            shutil.rmtree(self.vm.dir, ignore_errors=True)
            self.vm = None
        self._unregister()


class VMEnvironment(Environment):
    name = "vm"

    def __init__(self, paths: HostPaths) -> None:
        self.paths = paths
        self._accel: tuple[str, str] | None = None
        self.machine: str | None = None      # the machine type QEMU really ran (microvm, or q35 as fallback)
        try:
            import vmharness.api  # noqa: F401
        except ImportError as exc:
            raise BenchError(f"the VM harness is not available: {exc}") from exc

    def note_accel(self, accel: str, reason: str, machine: str | None = None) -> None:
        self._accel = (accel, reason)
        self.machine = machine or self.machine

    def accelerator(self) -> tuple[str, str]:
        if self._accel is None:
            try:
                from vmharness import accel

                self._accel = accel.choose("auto", self.paths)
            except (IsobenchError, ImportError, AttributeError) as exc:
                return ("unknown", f"accelerator probe failed: {exc}")
        return self._accel

    def start(self, job: Job) -> Instance:
        return VMInstance(self, job)

    def run(self, job: Job) -> Outcome:
        from vmharness import api

        t0 = time.perf_counter_ns()
        res = api.run(job.image, list(job.argv), vm_config(job), self.paths)
        wall = elapsed_s(t0)
        self.note_accel(res.accel, res.accel_reason, res.extra.get("machine"))
        return Outcome(exit_code=res.exit_code, output=res.output, wall_s=wall, phases=dict(res.phases),
                       extra={"accel": res.accel, "artifacts_s": res.artifacts_s})

    def describe(self) -> dict:
        accel, reason = self.accelerator()
        machine = self.machine or "microvm (requested; not booted yet)"
        return {"execution": f"QEMU/libvirt {machine}, accelerator {accel}", "accelerator": accel,
                "accelerator_reason": reason, "machine": machine}
