"""vm-container: containers inside a Linux VM, the way Docker runs on macOS and Windows.

The VM harness boots the ``vmct`` guest (``bench/images/vmct``: Debian, python3, isobench's runtime,
runc, built by the project's own builder) whose workload is the guest agent
(:mod:`bench.environments.vm_container_guest`); jobs go to the agent over TCP on the VM's bridge
address, and the agent runs them with the same container environment the host uses, so the *same image
digests* run through one extra layer. Two environments (two report columns) use the guest:
``vm-container`` runs the jobs with isobench's runtime, ``vm-container-runc`` with Debian's runc on an
OCI bundle (the image's flat rootfs is on the guest disk, see :mod:`vmharness.guestroot`); when both run,
they share one booted guest (:func:`acquire_guest`). The guest mounts a pure cgroup v2 hierarchy, so
limits are held by v2 there (``cpu.max``, ``cpu.weight``, ``memory.max``, ``pids.max``, ``io.max``: the
runtime's v2 driver, or runc's), while the host's container figures come from v1.

What the numbers mean:

- ``run``: create-to-exit seen from the host: the request, the container's whole life in the guest and
  the reply (the guest already booted); :meth:`VMContainerEnvironment.cold_run` boots a fresh guest per
  job, so its time includes the boot and the agent's start;
- a published port crosses host -> VM -> container: a DNAT rule on the host (127.0.0.1:H -> the VM's
  address, port G) and the runtime's own DNAT in the guest (G -> the container's port);
- an instance's host cost (PSS) is the QEMU process's PSS shared among the containers running in the
  guest (the guest kernel, agent and page cache are the price of the layer); CPU time and memory peak
  are the container's cgroup readings in the guest.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

from bench import interrupt
from bench.environments.base import Environment, Instance, Job, Outcome, Usage, elapsed_s
from bench.environments.vm_container_guest import (AGENT_PORT, AGENT_READY, job_to_wire, outcome_from_wire,
                                                    usage_from_wire)
from core import leases
from core.errors import BenchError, IsobenchError
from core.paths import HostPaths, new_id

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
IMAGE_DIR = PROJECT_DIR / "bench" / "images" / "vmct"
GUEST_TAG = "isobench-vmct:latest"
# what of the project the guest needs: the runtime and the bench environments it drives, the tests
# (the cgroup v2 suite runs in the guest) and the C helpers' sources (helper() checks their stamps)
PROJECT_PACKAGES = ("core", "runtime", "bench", "tests", "csrc")
PROJECT_FILES = ("pyproject.toml",)
VENDORED = ("pyroute2",)               # pure Python, from the host's .venv: the same version as the host's
GUEST_MEMORY_MIB = 1024
AGENT_TIMEOUT_S = 240.0                # boot (~5 s under TCG) + python3 importing the runtime in the guest
RPC_MARGIN_S = 60.0
MIB = 1 << 20
RUNTIME_LABELS = {"isobench": "isobench runtime", "runc": "runc (Debian's, OCI bundle)"}


# ---------------------------------------------------------------------------------- guest image

def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".pytest_cache") or n.endswith((".pyc", ".egg-info"))}


def stage_context(paths: HostPaths) -> Path:
    """The build context of the guest image: the Dockerfile and guest-start.sh of bench/images/vmct and
    ``isobench/`` (project packages, vendored pyroute2, compiled helpers). Remade on every call; the
    builder's layer cache makes an unchanged context a cache hit."""
    import importlib.util

    from core.cbin import libexec_dir

    ctx = paths.root / "vmct-context"
    shutil.rmtree(ctx, ignore_errors=True)
    proj = ctx / "isobench"
    proj.mkdir(parents=True)
    for name in ("Dockerfile", "guest-start.sh"):
        shutil.copy2(IMAGE_DIR / name, ctx / name)
    for pkg in PROJECT_PACKAGES:
        shutil.copytree(PROJECT_DIR / pkg, proj / pkg, ignore=_ignore)
    for f in PROJECT_FILES:
        shutil.copy2(PROJECT_DIR / f, proj / f)
    for mod in VENDORED:
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            raise BenchError(f"{mod} is not installed in this Python environment (make setup)")
        shutil.copytree(Path(spec.origin).parent, proj / "vendor" / mod, ignore=_ignore)
    helpers = libexec_dir()
    if not helpers.is_dir():
        raise BenchError(f"the C helpers are not built in {helpers}: run `make setup`")
    shutil.copytree(helpers, proj / "libexec")
    return ctx


def ensure_guest_image(paths: HostPaths, log: Callable[[str], None] = lambda s: None):
    """Build (or take from the layer cache) the guest OS image; its ImageRecord."""
    from runtime.image.builder import BuildOptions, build
    from runtime.image.store import ImageStore

    store = ImageStore(paths.ensure())
    ctx = stage_context(paths)
    return build(store, BuildOptions(context_dir=ctx, dockerfile=ctx / "Dockerfile", tag=GUEST_TAG), log=log)


def bench_images(paths: HostPaths) -> tuple:
    """The benchmark images present in the host store (the guest carries them)."""
    from bench.environments.images import TAGS
    from runtime.image.store import ImageStore

    store = ImageStore(paths.ensure())
    out = []
    for tag in TAGS.values():
        try:
            out.append(store.resolve(tag))
        except IsobenchError:
            continue  # not built for this run: jobs naming it fail with a clear error in the guest
    return tuple(out)


def guest_image(paths: HostPaths, images: tuple, log: Callable[[str], None] = lambda s: None):
    """The GuestImage the VM harness boots: the guest OS image composed with ``images`` and modules."""
    from runtime.image.store import ImageStore
    from vmharness import artifacts, guestroot
    from vmharness.vm import GuestImage

    rec = ensure_guest_image(paths, log)
    store = ImageStore(paths)
    spec = guestroot.GuestRootSpec(base_digest=rec.manifest_digest, base_rootfs=store.flat_rootfs(rec),
                                   images=tuple(images), kernel=artifacts.find_kernel())
    return GuestImage(name=GUEST_TAG, digest=spec.key, config=rec.config,
                      rootfs=lambda: guestroot.compose(spec, paths, paths.vm_artifacts))


def guest_disk_bytes(paths: HostPaths) -> tuple[int, str]:
    """(allocated bytes, what was counted) of the layer on disk: the guest's base disk (with the bench
    images in it), kernel and initrd."""
    import os

    from vmharness import artifacts

    image = guest_image(paths, bench_images(paths))
    arts = artifacts.ensure_artifacts(paths.vm_artifacts, image.digest, image.rootfs)
    files = (arts.disk, arts.kernel, arts.initrd)
    return (sum(os.stat(f).st_blocks * 512 for f in files),
            f"vm-container guest disk ({arts.disk.name}: Debian, python3, the runtime, the bench images' "
            "unpacked layers) + kernel + initrd, allocated bytes")


# ---------------------------------------------------------------------------------- the guest VM

class GuestVM:
    """One booted vm-container guest and its agent. ``close()`` destroys the VM."""

    def __init__(self, paths: HostPaths, image, *, vcpus: int, memory_mib: int = GUEST_MEMORY_MIB,
                 command: list[str] | None = None, accel: str = "auto", boot_timeout_s: float = 120.0,
                 echo: Callable[[str], None] | None = None) -> None:
        from vmharness import accel as accelmod
        from vmharness import vm as vmmod

        self.paths = paths
        accel_name, reason = accelmod.choose(accel, paths)
        self.t0_ns = time.perf_counter_ns()
        self.vm = None
        with interrupt.deferred():  # until self.vm holds the domain, close() could not destroy it
            self.vm = vmmod.create(image, command, paths=paths, memory_mib=memory_mib, vcpus=vcpus,
                                   accel=accel_name, accel_reason=reason, network="bridge",
                                   boot_timeout_s=boot_timeout_s, echo=echo)
        self.accel, self.accel_reason = accel_name, reason
        self.ip = self.vm.ip

    def wait_agent(self, timeout_s: float = AGENT_TIMEOUT_S) -> float:
        """Block until the agent listens (its marker on the console); seconds since create."""
        self.vm.wait_ready()
        deadline = time.monotonic() + timeout_s
        while AGENT_READY not in self.vm.console_text():
            if time.monotonic() > deadline or not self.vm.alive():
                tail = self.vm.output().strip()[-400:]
                self.close()
                raise BenchError(f"vm-container guest agent did not start within {timeout_s:.0f} s "
                                 f"(guest output: {tail!r}; console log {self.vm.console_log})")
            time.sleep(0.02)
        return elapsed_s(self.t0_ns)

    def call(self, req: dict, timeout_s: float = 60.0) -> dict:
        """One request to the agent; its reply, or BenchError with the guest's one-line error."""
        try:
            with socket.create_connection((self.ip, AGENT_PORT), timeout=timeout_s) as s:
                s.sendall(json.dumps(req).encode() + b"\n")
                data = s.makefile("rb").readline()
        except OSError as exc:
            raise BenchError(f"vm-container agent at {self.ip}:{AGENT_PORT} ({req.get('op')}): {exc}") from exc
        if not data:
            raise BenchError(f"vm-container agent at {self.ip}:{AGENT_PORT} closed the connection "
                             f"({req.get('op')}); console log {self.vm.console_log}")
        try:
            reply = json.loads(data)
        except ValueError as exc:
            raise BenchError(f"vm-container agent at {self.ip}:{AGENT_PORT} ({req.get('op')}): unreadable reply "
                             f"{data[:200]!r}") from exc
        if not reply.get("ok"):
            raise BenchError(f"in the vm-container guest: {reply.get('error')}")
        return reply

    def phases(self) -> dict[str, float]:
        return self.vm.phases() if self.vm is not None else {}

    def qemu_pss_bytes(self) -> int:
        return self.vm.usage().pss_bytes

    def close(self) -> None:
        if self.vm is not None:
            self.vm.close()
            shutil.rmtree(self.vm.dir, ignore_errors=True)
            self.vm = None


# ---------------------------------------------------------------------------------- shared guest

class SharedGuest:
    """The booted guest of a run, shared by its vm-container environments (isobench's runtime and runc
    in the guest are two columns of one guest: one boot, and neither column pays for an idle second
    guest's emulation while the other measures). ``live`` counts the containers running in it, whichever
    runtime started them: QEMU's PSS is shared among them."""

    def __init__(self, paths: HostPaths, image, vcpus: int) -> None:
        self.key = (str(paths.root), image.digest)
        self.guest = GuestVM(paths, image, vcpus=vcpus)
        self.refs = 0
        self.live = 0
        try:
            self.boot_s = self.guest.wait_agent()
            self.info = self.guest.call({"op": "ping"})
        except BaseException:
            self.guest.close()
            raise

    def usable(self) -> bool:
        return self.guest.vm is not None and self.guest.vm.alive()


_SHARED: dict[tuple[str, str], SharedGuest] = {}


def acquire_guest(paths: HostPaths, image, vcpus: int) -> SharedGuest:
    """The running guest of ``image`` under this state root, booted on first use; pair with release_guest."""
    key = (str(paths.root), image.digest)
    shared = _SHARED.get(key)
    if shared is None or not shared.usable():
        shared = SharedGuest(paths, image, vcpus)
        _SHARED[key] = shared
    shared.refs += 1
    return shared


def release_guest(shared: SharedGuest) -> None:
    """Drop one user; the last one destroys the guest."""
    shared.refs -= 1
    if shared.refs <= 0:
        if _SHARED.get(shared.key) is shared:
            del _SHARED[shared.key]
        shared.guest.close()


# ---------------------------------------------------------------------------------- environment

class VMContainerInstance(Instance):
    env_name = "vm-container"

    def __init__(self, env: "VMContainerEnvironment", job: Job) -> None:
        self.env, self.job, self.shared = env, job, env.shared
        self.env_name = env.name
        self.created_ns = time.perf_counter_ns()
        self.iid: int | None = None
        self.port_owner: str | None = None
        self._register()
        timeout = job.timeout_s + RPC_MARGIN_S
        try:
            with interrupt.deferred():  # until self.iid holds the guest's instance, stop() could not stop it
                reply = env.guest.call({"op": "start", "job": job_to_wire(job), "runtime": env.runtime}, timeout)
                self.iid = reply["id"]
            self.shared.live += 1
            if job.port is not None:
                self._publish(int(reply["endpoint"][1]), reply.get("target", ""))
        except BaseException:
            self.stop()
            raise

    def _publish(self, guest_port: int, guest_target: str) -> None:
        """Host 127.0.0.1:H -> the VM's address:guest_port (the guest then DNATs to the container)."""
        from runtime.network import publish_ports
        from runtime.spec import PortMapping

        self.port_owner = f"isobench-{new_id()}"
        leases.take(self.port_owner, kind="bench-vmct-port", root=str(self.env.paths.root))
        with interrupt.deferred():
            got = publish_ports(self.port_owner, self.env.guest.ip,
                                (PortMapping(host_port=0, container_port=guest_port, host_ip="127.0.0.1"),),
                                self.env.paths)
        self.endpoint = ("127.0.0.1", got[0].host_port)
        self.target = f"{self.env.guest.ip}:{guest_port} -> {guest_target}"

    def _call(self, op: str, rpc_timeout_s: float = 60.0, **kw) -> dict:
        return self.env.guest.call({"op": op, "id": self.iid, **kw}, rpc_timeout_s)

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        self._call("wait_ready", timeout_s + RPC_MARGIN_S, timeout_s=timeout_s)
        return elapsed_s(self.created_ns)

    def workload_pids(self) -> list[int]:
        """The job's processes as the guest counts them (guest pids)."""
        return list(self._call("pids")["pids"])

    def usage(self) -> Usage:
        u = usage_from_wire(self._call("usage")["usage"])
        qemu = self.env.guest.qemu_pss_bytes()
        live = self.shared.live
        share = qemu // max(1, live)
        return Usage(pss_bytes=share, cpu_s=u.cpu_s, memory_peak_bytes=u.memory_peak_bytes,
                     detail=f"QEMU PSS {qemu / MIB:.1f} MiB shared by {live} container(s) in the guest; "
                            f"in the guest: {u.detail}, container PSS {u.pss_bytes / MIB:.1f} MiB")

    def wait(self, timeout_s: float | None = None) -> Outcome:
        t = timeout_s if timeout_s is not None else self.job.timeout_s
        out = outcome_from_wire(self._call("wait", t + RPC_MARGIN_S, timeout_s=t)["outcome"])
        out.extra["guest_wall_s"] = out.wall_s
        out.wall_s = elapsed_s(self.created_ns)
        return out

    def stop(self) -> None:
        errors = []
        if self.iid is not None:
            try:
                self._call("stop", 120.0)
                self.shared.live -= 1
            except BenchError as exc:
                errors.append(str(exc))
            self.iid = None
        if self.port_owner is not None:
            from runtime.network import unpublish_ports

            unpublish_ports(self.port_owner, self.env.paths)
            leases.release(self.port_owner)
            self.port_owner = None
        self._unregister()
        if errors:
            raise BenchError(f"vm-container instance: cleanup: {'; '.join(errors)}")


class VMContainerEnvironment(Environment):
    """Containers in the guest with ``runtime`` (isobench's by default; :class:`VMContainerRuncEnvironment`
    is the runc column)."""

    name = "vm-container"
    runtime = "isobench"

    def __init__(self, paths: HostPaths, images: tuple | None = None,
                 log: Callable[[str], None] = lambda s: None) -> None:
        from core.units import host_cpu_count

        self.paths = paths
        self.vcpus = host_cpu_count()
        self.images = bench_images(paths) if images is None else images
        self.image = guest_image(paths, self.images, log)
        self.shared: SharedGuest | None = acquire_guest(paths, self.image, self.vcpus)
        self.guest = self.shared.guest
        self.machine = self.guest.vm.domain_cfg.machine   # what QEMU really ran (microvm, or q35 as fallback)
        self.boot_s, self.info = self.shared.boot_s, self.shared.info

    def accelerator(self) -> tuple[str, str]:
        return self.guest.accel, self.guest.accel_reason

    def start(self, job: Job) -> Instance:
        return VMContainerInstance(self, job)

    def run(self, job: Job) -> Outcome:
        t0 = time.perf_counter_ns()
        reply = self.guest.call({"op": "run", "job": job_to_wire(job), "runtime": self.runtime},
                                job.timeout_s + RPC_MARGIN_S)
        wall = elapsed_s(t0)
        out = outcome_from_wire(reply["outcome"])
        out.extra.update(guest_wall_s=out.wall_s, agent_s=reply.get("agent_s"), accel=self.guest.accel)
        out.wall_s = wall
        return out

    def cold_run(self, job: Job) -> Outcome:
        """Boot a fresh guest, run ``job`` in it, destroy it: create-to-exit including the boot and the
        agent's start. Phases: the VM's boot phases, ``agent`` (agent listening), ``exited``."""
        guest = GuestVM(self.paths, self.image, vcpus=self.vcpus)
        try:
            agent_s = guest.wait_agent()
            reply = guest.call({"op": "run", "job": job_to_wire(job), "runtime": self.runtime},
                               job.timeout_s + RPC_MARGIN_S)
            wall = elapsed_s(guest.t0_ns)
            phases = {k: v for k, v in guest.phases().items() if k not in ("exited", "gone")}
        finally:
            guest.close()
        out = outcome_from_wire(reply["outcome"])
        phases.update(agent=agent_s, exited=wall)
        return Outcome(exit_code=out.exit_code, output=out.output, wall_s=wall, phases=phases,
                       extra={"guest_wall_s": out.wall_s, "accel": guest.accel})

    def describe(self) -> dict:
        runtime = RUNTIME_LABELS[self.runtime]
        return {"execution": f"{runtime} inside a QEMU/libvirt {self.machine} guest, "
                             f"accelerator {self.guest.accel}, guest cgroup {self.info.get('cgroup')}",
                "runtime": self.runtime,
                "accelerator": self.guest.accel, "accelerator_reason": self.guest.accel_reason,
                "guest_kernel": self.info.get("kernel"), "guest_cgroup": self.info.get("cgroup"),
                "guest_controllers": self.info.get("controllers"), "guest_vcpus": self.vcpus,
                "guest_memory_mib": GUEST_MEMORY_MIB, "guest_boot_to_agent_s": round(self.boot_s, 3),
                "guest_image": self.image.digest}

    def close(self) -> None:
        if self.shared is not None:
            shared, self.shared = self.shared, None
            release_guest(shared)


class VMContainerRuncEnvironment(VMContainerEnvironment):
    """runc in the guest: the same image digest as an OCI bundle (``runc create`` + ``start``, the host's
    runc environment run by the agent), its flat rootfs taken from the guest disk; the same guest as
    ``vm-container`` when both run."""

    name = "vm-container-runc"
    runtime = "runc"
