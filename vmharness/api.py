"""The library API the benchmark harness and the CLI call: run an image's command in a VM.

``run`` is the attached form (boot, run, collect output, exit code and boot phases, clean up);
``start`` the detached one for servers (httpd, iperf3): it returns a :class:`~vmharness.vm.VM` with
``wait_ready()``, ``ip``, ``usage()``, ``stop()`` and ``destroy()``. Inputs are checked up front by small
named checks so bad input costs one line and leaves nothing behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

from core.errors import UsageError, VMError
from core.paths import HostPaths
from runtime.spec import PortMapping
from core.units import host_cpu_count

# The Debian 6.1 kernel with our initrd needs ~80 MiB to reach the workload (measured: 64 MiB fails
# to unpack the initrd); 128 MiB leaves room for the workload itself.
MIN_MEMORY_MIB = 128
MAX_MEMORY_MIB = 64 * 1024


@dataclass(frozen=True)
class VMRunConfig:
    memory_mib: int = 512
    vcpus: int = 1
    cpus: float | None = None                 # CPU quota for the whole domain, like a container's --cpus
    vcpupin: tuple[str, ...] = ()             # host cpuset per vCPU
    env: tuple[str, ...] = ()                 # K=V over the image's Env
    ports: tuple[PortMapping, ...] = ()
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    network: Literal["bridge", "user", "none"] = "bridge"
    boot_timeout_s: float = 60.0
    run_timeout_s: float | None = None
    console_path: Path | None = None          # where the console log is kept (default: the VM's dir)
    machine: Literal["microvm", "q35", "pc"] = "microvm"
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    name: str = ""                            # user-facing name (`--name`); the domain is isobench-<id>
    # a runtime-spec ``process`` object (args, env, cwd, user) the guest runs as it is: an OCI bundle's
    # (the bench's bundle); when set, the image's Entrypoint/Cmd/Env/WorkingDir/User and ``env``,
    # ``workdir``, ``user`` above are not consulted
    process: dict | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class VMResult:
    exit_code: int
    output: str
    phases: dict[str, float]                  # phase -> seconds since the create call (monotonic)
    accel: str
    accel_reason: str
    console_log: Path
    vm_id: str = ""
    image_digest: str = ""
    artifacts_s: float = 0.0                  # time spent getting artifacts (≈0 when cached)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- checks

def check_memory(cfg: VMRunConfig) -> None:
    if cfg.memory_mib < MIN_MEMORY_MIB:
        raise UsageError(f"--memory {cfg.memory_mib}m is below the {MIN_MEMORY_MIB} MiB the guest kernel needs "
                         f"to boot (minimum {MIN_MEMORY_MIB}m)")
    if cfg.memory_mib > MAX_MEMORY_MIB:
        raise UsageError(f"--memory {cfg.memory_mib}m is above the {MAX_MEMORY_MIB} MiB isobench allows")


def check_vcpus(cfg: VMRunConfig, host_cpus: int | None = None) -> None:
    n = host_cpus or host_cpu_count()
    if cfg.vcpus < 1:
        raise UsageError(f"--vcpus {cfg.vcpus} must be at least 1")
    if cfg.vcpus > n:
        raise UsageError(f"--vcpus {cfg.vcpus} exceeds the {n} CPUs of this host")


def check_cpus(cfg: VMRunConfig, host_cpus: int | None = None) -> None:
    if cfg.cpus is None:
        return
    n = host_cpus or host_cpu_count()
    if not cfg.cpus > 0:
        raise UsageError(f"--cpus {cfg.cpus} must be greater than 0")
    if cfg.cpus > n:
        raise UsageError(f"--cpus {cfg.cpus} exceeds the {n} CPUs of this host")


def check_vcpupin(cfg: VMRunConfig, host_cpus: int | None = None) -> None:
    n = host_cpus or host_cpu_count()
    if len(cfg.vcpupin) > cfg.vcpus:
        raise UsageError(f"{len(cfg.vcpupin)} vCPU pins given for {cfg.vcpus} vCPU(s)")
    for cs in cfg.vcpupin:
        for part in cs.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()) or int(hi or lo) >= n:
                raise UsageError(f"vCPU pin {cs!r} is not a cpuset of this host's CPUs 0-{n - 1}")


def check_network(cfg: VMRunConfig) -> None:
    if cfg.network not in ("bridge", "user", "none"):
        raise UsageError(f"--network {cfg.network!r} is not one of bridge, user, none")
    if cfg.ports and cfg.network == "none":
        raise UsageError("-p needs a network: use --network bridge or --network user")
    seen = set()
    for p in cfg.ports:
        if not (0 <= p.host_port < 65536 and 0 < p.container_port < 65536):
            raise UsageError(f"-p {p.host_port}:{p.container_port}: ports must be 1-65535")
        key = (p.host_ip, p.host_port, p.protocol)
        if key in seen:
            raise UsageError(f"-p host port {p.host_port}/{p.protocol} given twice")
        seen.add(key)


def check_accel(cfg: VMRunConfig) -> None:
    if cfg.accel not in ("auto", "kvm", "tcg"):
        raise UsageError(f"--accel {cfg.accel!r} is not one of auto, kvm, tcg")


def check_tools(cfg: VMRunConfig) -> None:
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            raise VMError(f"{tool} not found; install the Debian package {pkg}")


CHECKS: tuple[Callable[[VMRunConfig], None], ...] = (
    check_memory, check_vcpus, check_cpus, check_vcpupin, check_network, check_accel, check_tools)


def validate(cfg: VMRunConfig) -> None:
    for check in CHECKS:
        check(cfg)


# ---------------------------------------------------------------------------- API

def start(image_ref: str, command: list[str] | None, cfg: VMRunConfig, paths: HostPaths, *,
          detached: bool = False, echo: Callable[[str], None] | None = None, vm_id: str | None = None):
    """Boot a VM running the image's command and return it once QEMU runs (call ``vm.wait_ready()``)."""
    from vmharness import accel as accelmod
    from vmharness import vm as vmmod

    validate(cfg)
    paths.ensure()
    image = vmmod.resolve_image(image_ref, paths)
    accel, reason = accelmod.choose(cfg.accel, paths)
    return vmmod.create(image, command, paths=paths, memory_mib=cfg.memory_mib, vcpus=cfg.vcpus, cpus=cfg.cpus,
                        vcpupin=cfg.vcpupin, env=cfg.env, ports=cfg.ports, accel=accel, accel_reason=reason,
                        network=cfg.network, boot_timeout_s=cfg.boot_timeout_s, console_path=cfg.console_path,
                        detached=detached, machine=cfg.machine, workdir=cfg.workdir, user=cfg.user,
                        hostname=cfg.hostname, echo=echo, vm_id=vm_id, user_name=cfg.name, process=cfg.process)


def run(image_ref: str, command: list[str] | None, cfg: VMRunConfig, paths: HostPaths, *,
        echo: Callable[[str], None] | None = None, keep_record: bool = False, vm_id: str | None = None) -> VMResult:
    """Boot, run the command to completion, clean up; output, exit code and boot phases.
    The console log is kept (``cfg.console_path``, else ``vms/logs/<id>.console.log``, or the VM's dir
    with ``keep_record``); the overlay disk never is."""
    from core.paths import new_id

    vm_id = vm_id or new_id()
    if cfg.console_path is None and not keep_record:
        cfg = replace(cfg, console_path=paths.vms / "logs" / f"{vm_id}.console.log")
    vm = start(image_ref, command, cfg, paths, echo=echo, vm_id=vm_id)
    try:
        code = vm.wait_exit(cfg.run_timeout_s)
        output, phases = vm.output(), vm.phases()
    finally:
        vm.close()   # Ctrl-C (KeyboardInterrupt) lands here too: the domain is destroyed
        if not keep_record:
            shutil.rmtree(vm.dir, ignore_errors=True)
    return VMResult(exit_code=code, output=output, phases=phases, accel=vm.accel, accel_reason=vm.accel_reason,
                    console_log=vm.console_log, vm_id=vm.id, image_digest=vm.image_digest,
                    artifacts_s=round(vm.artifacts_s, 4), extra={"machine": vm.domain_cfg.machine})
