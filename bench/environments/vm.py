"""vm: the same image booted as a KVM/QEMU virtual machine through the project's VM harness.

The harness turns the image into an ext4 disk plus the Debian kernel and an init shim, boots it under
libvirt and reports boot phases from host-side monotonic timestamps of guest signals. The guest runs
the job's OCI bundle's process (:mod:`bundles`: args, env, cwd, user, as every environment) on the
image's flat rootfs. Start-up ends at the workload's exit marker; the guest's power-off and the
domain's destruction are teardown (``extra["teardown_s"]`` of ``run``). Which accelerator
ran (KVM, or TCG when the probe boot proves KVM unusable) is data: every VM result carries it. Limits
map to their VM counterparts: ``cpus`` -> the domain's CPU quota (cputune), memory -> guest RAM,
vcpus from the job; pids, shares and block throttling have no VM counterpart here.
"""

from __future__ import annotations

import time

from bench import interrupt
from bench.environments import bundles
from bench.environments.base import Environment, Instance, Job, Outcome, Usage, elapsed_s, free_port
from core.errors import BenchError, IsobenchError
from core.paths import HostPaths, new_id

MIB = 1 << 20


def vm_config(job: Job, port_host: int | None = None, run_timeout_s: float | None = None, *,
              process: dict | None = None, hostname: str | None = None):
    """The VMRunConfig for a job (pure). ``process``: the job's bundle's process object, which the guest
    runs as it is (args, env, cwd, user); ``hostname``: the guest's (the bundle's HOSTNAME)."""
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
                       workdir=job.workdir, process=process, hostname=hostname)


class VMInstance(Instance):
    env_name = "vm"

    def __init__(self, env: "VMEnvironment", job: Job, keep_console: bool = False) -> None:
        from dataclasses import replace

        from vmharness import api

        self.created_ns = time.perf_counter_ns()
        self.created_mono = time.monotonic()   # the console's marker stamps are monotonic
        self.job = job
        self.vm = None
        self.recorded: dict[str, str] = {}
        self._register()
        try:
            vm_id = new_id()
            hostname = vm_id[:12]              # the guest's hostname, as the harness names it
            # the job's bundle (the shared converter): the guest runs its process on the image's rootfs
            jb = bundles.job_bundle(job, env.paths, hostname=hostname)
            hp = free_port() if job.port is not None else None
            cfg = vm_config(job, hp, process=jb.process, hostname=hostname)
            if keep_console:  # as `isobench vm run`: the console log outlives the VM (failures name it)
                cfg = replace(cfg, console_path=env.paths.vms / "logs" / f"{vm_id}.console.log")
            self.recorded = env.ledger.note(jb.process_sha256, jb.image_digest, job, jb.process)
            with interrupt.deferred():  # until self.vm holds the domain, stop() could not destroy it
                self.vm = api.start(jb.image_digest, None, cfg, env.paths, vm_id=vm_id)
        except BaseException:
            self.stop()
            raise
        env.note_accel(self.vm.accel, self.vm.accel_reason, self.vm.domain_cfg.machine)
        if hp is not None:
            self.endpoint = ("127.0.0.1", hp)
            self.target = f"{self.vm.ip}:{job.port}"

    def _since_create(self, mono: float) -> float:
        return mono - self.created_mono

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

    def exited_mono(self) -> float:
        """When the host saw the workload's exit marker (monotonic); now if it never did."""
        ev = self.vm.watcher.events if self.vm is not None and self.vm.watcher is not None else {}
        return ev.get("exited", time.monotonic())

    def wait(self, timeout_s: float | None = None) -> Outcome:
        """Until the workload's exit: ``wall_s`` ends at its exit marker (the guest's power-off and the
        domain's destruction are teardown); phases are seconds since the create call."""
        code = self.vm.wait_exit(timeout_s if timeout_s is not None else self.job.timeout_s)
        wall = self._since_create(self.exited_mono())
        shift = self._since_create(self.vm.t0)   # VM phases count from the domain's creation
        phases = {k: round(v + shift, 4) for k, v in self.vm.phases().items() if k != "gone"}  # gone: teardown
        return Outcome(exit_code=code, output=self.vm.output(), wall_s=wall, phases=phases,
                       extra={"accel": self.vm.accel, "artifacts_s": round(self.vm.artifacts_s, 4),
                              **self.recorded})

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
        self.ledger = bundles.Ledger()
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
        """Create to the workload's exit, then teardown timed apart (``extra["teardown_s"]``): from the
        exit marker until the guest is off, the domain destroyed and its overlay and network released."""
        inst = VMInstance(self, job, keep_console=True)
        try:
            out = inst.wait()
        except BaseException:
            inst.stop()
            raise
        exited = inst.exited_mono()
        inst.stop()
        out.extra["teardown_s"] = time.monotonic() - exited
        return out

    def describe(self) -> dict:
        accel, reason = self.accelerator()
        machine = self.machine or "microvm (requested; not booted yet)"
        return {"execution": f"QEMU/libvirt {machine}, accelerator {accel}; the guest runs the job's OCI bundle "
                             "process on the image's flat rootfs", "accelerator": accel,
                "accelerator_reason": reason, "machine": machine, "bundles": self.ledger.describe()}
