"""One VM's lifecycle: prepare (overlay, network, lease) -> transient libvirt domain -> wait -> clean up.

Every VM is a transient domain named ``isobench-<id>`` with a host-wide lease (owner: the CLI or
harness process for attached runs, the QEMU process for detached ones), so ``gc`` can tell orphans
from other state roots' live VMs. Creation happens inside an ``ExitStack``: a failure at any step
(bad port, libvirt error, boot timeout, kernel panic) destroys the domain and removes what was made,
keeping only the console log, whose path the error names. Ctrl-C destroys the domain the same way.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from core import leases
from core.errors import NetworkError, VMError
from core.fsutil import atomic_write_json, read_json
from core.paths import HostPaths, host_name, new_id
from vmharness import artifacts as art
from vmharness import console as con
from vmharness.domain import DomainConfig, NetConfig, PortForward, mac_for, to_xml

USER_NET_IP = "10.0.2.15/24"     # QEMU user-mode (slirp) defaults
USER_NET_GW = "10.0.2.2"
CMDLINE_MAX = 2000               # x86 COMMAND_LINE_SIZE is 2048
GONE_POLL_S = 0.005


@dataclass(frozen=True)
class GuestImage:
    """What a VM boots: an image digest, a function giving its flat rootfs, and its OCI config."""

    name: str
    digest: str
    config: dict
    rootfs: Callable[[], Path]


@dataclass(frozen=True)
class Plan:
    """Everything decided before the domain is created (pure inputs to the XML)."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    user: str


def resolve_image(ref: str, paths: HostPaths) -> GuestImage:
    from runtime.image.store import ImageStore

    store = ImageStore(paths)
    rec = store.resolve(ref)
    return GuestImage(rec.name, rec.manifest_digest, rec.config, lambda: store.flat_rootfs(rec))


def plan_command(image_config: dict, command: list[str] | None, env: tuple[str, ...] = (),
                 workdir: str | None = None, user: str | None = None) -> Plan:
    """Docker semantics: Entrypoint + (command or Cmd); -e overrides the image's Env by key."""
    cc = image_config.get("config") or {}
    entry = list(cc.get("Entrypoint") or [])
    argv = entry + (list(command) if command else list(cc.get("Cmd") or []))
    if not argv:
        raise VMError("no command: the image has no Cmd/Entrypoint and none was given")
    merged: dict[str, str] = {}
    for kv in list(cc.get("Env") or []) + list(env):
        k, sep, v = kv.partition("=")
        if not sep:
            v = os.environ.get(k, "")
        merged[k] = v
    merged.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    merged.setdefault("HOME", "/root")
    return Plan(tuple(argv), tuple(f"{k}={v}" for k, v in merged.items()),
                workdir or cc.get("WorkingDir") or "/", user if user is not None else (cc.get("User") or ""))


def plan_from_process(process: dict) -> tuple[Plan, tuple[int, int] | None]:
    """An OCI runtime-spec ``process`` object (an OCI bundle's) as the guest's plan, taken as it is:
    args, env, cwd, and (uid, gid) for the setuid helper (None for root). Nothing is re-derived from
    the image config."""
    args = process.get("args") or []
    if not args or not all(isinstance(a, str) for a in args):
        raise VMError("process.args must be a non-empty array of strings")
    user = process.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    cwd = process.get("cwd") or "/"
    plan = Plan(tuple(args), tuple(process.get("env") or ()), cwd, f"{uid}:{gid}")
    return plan, (None if (uid, gid) == (0, 0) else (uid, gid))


def guest_fragment(process: dict) -> str:
    """The shell fragment the guest's init shim sources to run ``process`` (pure: unit tested)."""
    plan, uid_gid = plan_from_process(process)
    return art.run_fragment(list(plan.argv), list(plan.env), plan.workdir, uid_gid)


def host_tsc_khz(cpuinfo: str | None = None) -> int | None:
    """The host's TSC rate: under TCG the guest reads the host TSC (QEMU passes rdtsc through)."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("cpu MHz"):
            try:
                return int(float(line.split(":", 1)[1]) * 1000)
            except ValueError:
                return None
    return None


def kernel_cmdline(fragment: str, hostname: str, ip: str = "", gw: str = "", tsc_khz: int | None = None) -> str:
    """Guest kernel command line. Under TCG on microvm there is no PIT/HPET reference, so the kernel's TSC
    calibration can fail and the boot then hangs (seen here in ~half the PVH boots): tsc_early_khz gives
    it the rate instead."""
    run = base64.b64encode(fragment.encode()).decode()
    parts = ["console=ttyS0", "quiet", "panic=-1", "reboot=t", "rw", "no_timer_check",
             f"isobench.host={hostname}", f"isobench.run={run}"]
    if tsc_khz:
        parts.insert(1, f"tsc_early_khz={tsc_khz}")
    if ip:
        parts.append(f"isobench.ip={ip}")
    if gw:
        parts.append(f"isobench.gw={gw}")
    line = " ".join(parts)
    if len(line) > CMDLINE_MAX:
        raise VMError(f"command and environment too long for the guest kernel command line "
                      f"({len(line)} > {CMDLINE_MAX} bytes after encoding)")
    return line


def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_pid_exit(pid: int | None, timeout_s: float = 10.0) -> None:
    """libvirt may report a domain gone a moment before its QEMU process has finished exiting."""
    if not pid:
        return
    deadline = time.monotonic() + timeout_s
    while pid_running(pid) and time.monotonic() < deadline:
        time.sleep(0.005)


def qemu_pid(name: str) -> int | None:
    try:
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def check_port_free(host_ip: str, port: int, proto: str = "tcp") -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind((host_ip or "0.0.0.0", port))
    except OSError as exc:
        raise NetworkError(f"port {host_ip or '0.0.0.0'}:{port}/{proto} is already in use on this host") from exc
    finally:
        s.close()


def _user_port(p):
    """User-mode forwards listen on 127.0.0.1 by default; host port 0 means a random free one."""
    from runtime.spec import PortMapping

    host_ip = p.host_ip or "127.0.0.1"
    port = p.host_port
    if port == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host_ip, 0))
            port = s.getsockname()[1]
    check_port_free(host_ip, port, p.protocol)
    return PortMapping(port, p.container_port, p.protocol, host_ip)


@dataclass
class VM:
    """A running (or finished) VM. Build with :func:`create`."""

    id: str
    paths: HostPaths
    domain_cfg: DomainConfig
    accel: str
    accel_reason: str
    image: str
    image_digest: str
    argv: tuple[str, ...]
    ip: str = ""
    ports: tuple = ()
    detached: bool = False
    user_name: str = ""
    t0: float = 0.0
    pid: int | None = None
    watcher: con.ConsoleWatcher | None = None
    artifacts_s: float = 0.0
    _dom: object = None
    _cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _gone_at: float | None = None         # monotonic time libvirt reported the domain gone
    _qemu_up: float | None = None         # monotonic time createXML returned (QEMU running)
    _boot_timeout_s: float = 60.0
    _created: float = 0.0                 # UNIX time, for `vm ps`

    @property
    def name(self) -> str:
        return host_name(self.id)

    @property
    def dir(self) -> Path:
        return self.paths.vms / self.id

    @property
    def console_log(self) -> Path:
        return Path(self.domain_cfg.console_path)

    # ------------------------------------------------------------------ state
    def alive(self) -> bool:
        from vmharness import hypervisor as hv

        if self._gone_at is not None:
            return False
        try:
            active = bool(hv.domain_state(self.name))
        except hv.HypervisorError as exc:
            raise VMError(f"libvirt lost track of {self.name}: {exc.text}") from exc
        if not active:
            self._gone_at = time.monotonic()
        return active

    def wait_gone(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(GONE_POLL_S)
        return False

    def phases(self) -> dict[str, float]:
        ph = {"create": 0.0}
        if self._qemu_up is not None:
            ph["qemu_up"] = self._qemu_up - self.t0
        if self.watcher is not None:
            ph.update(self.watcher.phases())
        ph.pop("panic", None)
        if self._gone_at is not None:
            ph["gone"] = self._gone_at - self.t0
        return {k: round(v, 4) for k, v in sorted(ph.items(), key=lambda kv: kv[1])}

    def console_text(self) -> str:
        if self.watcher is not None:
            return self.watcher.text
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def _fail(self, what: str) -> VMError:
        text = self.console_text()
        reason = con.panic_reason(text)
        tail = con.tail(text, 8).replace("\n", " | ")
        return VMError(f"VM {self.name} {what}{': ' + reason if reason else ''}; console tail: "
                       f"{tail or '(empty)'}; full console log: {self.console_log}")

    # ------------------------------------------------------------------ waiting
    def wait_ready(self, timeout_s: float | None = None) -> dict[str, float]:
        """Block until the workload is about to start (the READY marker); phases so far."""
        bound = timeout_s if timeout_s is not None else self._boot_timeout_s
        got = self.watcher.wait_for("ready", timeout_s=bound, alive=self.alive)
        if got == "ready":
            return self.phases()
        gone = self._gone_at is not None
        self.destroy()
        if got == "panic":
            raise self._fail("failed to boot")
        if gone:
            raise self._fail("stopped before the workload started")
        raise self._fail(f"did not reach the workload within {bound:.0f} s (boot timeout)")

    def wait_exit(self, timeout_s: float | None = None) -> int:
        """Block until the workload exits and the domain is gone; its exit code."""
        self.wait_ready()
        got = self.watcher.wait_for("exited", timeout_s=timeout_s if timeout_s is not None else 10**9,
                                    alive=self.alive)
        if got != "exited":
            gone = self._gone_at is not None
            self.destroy()
            if got == "panic":
                raise self._fail("kernel panic while running the workload")
            if gone:
                raise self._fail("stopped before the workload reported its exit status")
            raise self._fail(f"workload did not finish within {timeout_s:.0f} s")
        if not self.wait_gone(10.0):
            self.destroy()
        self.watcher.stop()
        code = con.exit_code(self.watcher.text)
        return 255 if code is None else code

    def output(self) -> str:
        return con.workload_output(self.console_text())

    def usage(self):
        from vmharness.usage import read_usage

        if self.pid is None:
            raise VMError(f"VM {self.name} has no QEMU process")
        return read_usage(self.pid, self.domain_cfg.memory_mib)

    # ------------------------------------------------------------------ ending
    def destroy(self) -> None:
        """Hard stop (pulls the plug). Idempotent."""
        from vmharness import hypervisor as hv

        hv.destroy(self.name)  # False when already gone: transient domains vanish when QEMU exits
        self.wait_gone(10.0)
        wait_pid_exit(self.pid)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to QEMU first (graceful destroy), then hard destroy."""
        from vmharness import hypervisor as hv

        hv.destroy(self.name, graceful=True)
        if not self.wait_gone(grace_s):
            self.destroy()

    def close(self) -> None:
        """Release everything but the record and console log: domain, overlay, ports, address, lease."""
        self.destroy()
        if self.watcher is not None:
            self.watcher.stop()
        self._cleanup.close()
        rec = self.record()
        rec["cleaned"] = True
        with contextlib.suppress(OSError):
            atomic_write_json(self.dir / "vm.json", rec)

    def record(self) -> dict:
        rec = {"id": self.id, "name": self.name, "user_name": self.user_name, "image": self.image, "image_digest": self.image_digest,
               "command": list(self.argv), "accel": self.accel, "accel_reason": self.accel_reason,
               "ip": self.ip, "ports": [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in self.ports],
               "memory_mib": self.domain_cfg.memory_mib, "vcpus": self.domain_cfg.vcpus,
               "machine": self.domain_cfg.machine, "network": self.domain_cfg.net.kind,
               "console_log": str(self.console_log), "disk": self.domain_cfg.disk_path,
               "detached": self.detached, "pid": self.pid, "created": self._created, "cleaned": False,
               "phases": self.phases()}
        if self.watcher is not None:
            rec["exit_code"] = con.exit_code(self.watcher.text)
        return rec


def _network(stack: contextlib.ExitStack, vm_id: str, kind: str, ports: tuple, paths: HostPaths):
    """(NetConfig, guest ip with prefix, gateway, published ports) for a network kind."""
    tap = host_name(vm_id[:6])
    mac = mac_for(vm_id)
    if kind == "none":
        if ports:
            raise VMError("-p needs a network: use --network bridge or --network user")
        return NetConfig(kind="none"), "", "", ()
    if kind == "user":
        ports = tuple(_user_port(p) for p in ports)
        fwd = tuple(PortForward(p.host_port, p.container_port, p.protocol, p.host_ip or "127.0.0.1") for p in ports)
        return NetConfig(kind="user", mac=mac, forwards=fwd), USER_NET_IP, USER_NET_GW, ports
    if kind != "bridge":
        raise VMError(f"--network {kind!r} is not one of bridge, user, none")
    try:
        from runtime import network
        ensure_bridge = network.ensure_bridge
    except (ImportError, AttributeError) as exc:
        raise VMError("bridge networking is not available in this build (runtime.network has no "
                      "ensure_bridge); use --network user") from exc
    bridge = ensure_bridge(paths)
    iface = network.allocate_address(vm_id, paths)
    stack.callback(network.release_address, vm_id, paths)
    gw = str(getattr(bridge, "gateway", "") or "")
    gw = gw.split("/")[0]
    published: tuple = ()
    if ports:
        published = tuple(network.publish_ports(vm_id, str(iface.ip), ports, paths) or ports)
        stack.callback(network.unpublish_ports, vm_id, paths)
    return NetConfig(kind="bridge", bridge=bridge.name, tap=tap, mac=mac), str(iface), gw, published


def create(image: GuestImage, command: list[str] | None, *, paths: HostPaths, memory_mib: int = 512,
           vcpus: int = 1, cpus: float | None = None, vcpupin: tuple[str, ...] = (), env: tuple[str, ...] = (),
           ports: tuple = (), accel: str = "tcg", accel_reason: str = "", network: str = "none",
           boot_timeout_s: float = 60.0, console_path: Path | None = None, detached: bool = False,
           vm_id: str | None = None, machine: str = "microvm", workdir: str | None = None,
           user: str | None = None, hostname: str | None = None, user_name: str = "",
           kvm_cpu_passthrough: bool = True, echo: Callable[[str], None] | None = None,
           process: dict | None = None) -> VM:
    """Prepare everything and start the domain; returns as soon as QEMU runs (see VM.wait_ready).
    ``process``: an OCI bundle's process object, run as it is (:func:`plan_from_process`); else the
    image config and ``command``/``env``/``workdir``/``user`` make the plan."""
    from vmharness import hypervisor as hv

    vm_id = vm_id or new_id()
    name = host_name(vm_id)
    if process is not None:
        plan, uid_gid = plan_from_process(process)
    else:
        plan = plan_command(image.config, command, env, workdir, user)
    hv.connect()  # starts libvirtd if needed, before anything is made
    t_art = time.monotonic()
    if process is None:
        uid_gid = art.resolve_user(plan.user, image.rootfs() if plan.user else None)
    arts = art.ensure_artifacts(paths.vm_artifacts, image.digest, image.rootfs, needs_setuid=uid_gid is not None)
    artifacts_s = time.monotonic() - t_art
    vm_dir = paths.vms / vm_id
    stack = contextlib.ExitStack()
    with stack:
        leases.take(vm_id, kind="vm", root=str(paths.root))
        stack.callback(leases.release, vm_id)
        vm_dir.mkdir(parents=True, exist_ok=True)
        stack.callback(shutil.rmtree, vm_dir, True)  # a VM that never started leaves no record
        overlay = vm_dir / "disk.qcow2"
        art.create_overlay(arts.disk, overlay)
        stack.callback(lambda: overlay.unlink(missing_ok=True))
        console_log = Path(console_path) if console_path else vm_dir / "console.log"
        console_log.parent.mkdir(parents=True, exist_ok=True)
        console_log.unlink(missing_ok=True)
        netcfg, ip, gw, published = _network(stack, vm_id, network, tuple(ports), paths)
        frag = art.run_fragment(list(plan.argv), list(plan.env), plan.workdir, uid_gid)
        cmdline = kernel_cmdline(frag, hostname or vm_id[:12], ip, gw,
                                 tsc_khz=host_tsc_khz() if accel == "tcg" else None)
        dcfg = DomainConfig(
            name=name, kernel=str(arts.kernel), initrd=str(arts.initrd), cmdline=cmdline,
            disk_path=str(overlay), console_path=str(console_log), accel=accel, machine=machine,
            memory_mib=memory_mib, vcpus=vcpus,
            cpu_quota_us=None if cpus is None else int(round(cpus * 100_000)), vcpupin=tuple(vcpupin), net=netcfg,
            kvm_cpu_passthrough=kvm_cpu_passthrough)
        vm = VM(id=vm_id, paths=paths, domain_cfg=dcfg, accel=accel, accel_reason=accel_reason,
                image=image.name, image_digest=image.digest, argv=plan.argv, ip=ip.split("/")[0],
                ports=published, detached=detached, artifacts_s=artifacts_s, user_name=user_name)
        vm._boot_timeout_s = boot_timeout_s
        vm._created = time.time()
        (vm_dir / "domain.xml").write_text(to_xml(dcfg))
        atomic_write_json(vm_dir / "vm.json", vm.record())
        vm.t0 = time.monotonic()
        vm.watcher = con.ConsoleWatcher(console_log, vm.t0, echo=echo).start()
        stack.callback(vm.watcher.stop)
        # registered before the call: Ctrl-C during createXML is raised only after it returns, when
        # the domain already exists
        stack.callback(vm.destroy)
        try:
            try:
                dom = hv.create_transient(to_xml(dcfg))
            except hv.HypervisorError as exc:
                if dcfg.machine != "microvm" or "microvm" not in exc.text.lower():
                    raise
                # this libvirt/QEMU rejects microvm: the same guest on q35 (slower firmware, same result)
                dcfg = replace(dcfg, machine="q35")
                vm.domain_cfg = dcfg
                (vm_dir / "domain.xml").write_text(to_xml(dcfg))
                dom = hv.create_transient(to_xml(dcfg))
        except hv.HypervisorError as exc:
            raise VMError(f"libvirt could not start {name}: {exc.text}") from exc
        vm._qemu_up = time.monotonic()
        vm._dom = dom
        vm.pid = qemu_pid(name)
        # detached VMs are kept alive by QEMU; attached ones by us (Ctrl-C or a crash -> orphan for gc)
        leases.take(vm_id, pid=vm.pid if detached and vm.pid else None, kind="vm", root=str(paths.root))
        atomic_write_json(vm_dir / "vm.json", vm.record())
        vm._cleanup = stack.pop_all()
    return vm


def load_record(paths: HostPaths, ref: str) -> dict:
    """A VM record by id, id prefix or name."""
    base = paths.vms
    cands = []
    if base.is_dir():
        for d in base.iterdir():
            f = d / "vm.json"
            if not f.is_file():
                continue
            if d.name.startswith(ref.removeprefix("isobench-")) or ref in (d.name, host_name(d.name)):
                cands.append(f)
            else:
                with contextlib.suppress(OSError, ValueError):
                    if read_json(f).get("user_name") == ref:
                        cands.append(f)
    if not cands:
        raise VMError(f"no such VM {ref!r} (see: isobench vm ps -a)")
    if len(cands) > 1:
        raise VMError(f"VM reference {ref!r} is ambiguous ({len(cands)} VMs match)")
    return read_json(cands[0])


def list_records(paths: HostPaths) -> list[dict]:
    out = []
    if paths.vms.is_dir():
        for f in sorted(paths.vms.glob("*/vm.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(read_json(f))
    return sorted(out, key=lambda r: r.get("created", 0))


def domain_active(name: str) -> bool:
    from vmharness import hypervisor as hv

    return hv.domain_active(name)


def destroy_domain(name: str, graceful_s: float = 0.0) -> bool:
    """Destroy a domain by name (SIGTERM first when graceful_s > 0); True when one was running."""
    from vmharness import hypervisor as hv

    if hv.domain_state(name) is None:
        return False
    pid = qemu_pid(name)
    if graceful_s > 0 and hv.destroy(name, graceful=True):
        deadline = time.monotonic() + graceful_s
        while time.monotonic() < deadline and domain_active(name):
            time.sleep(0.02)
    if domain_active(name):
        hv.destroy(name)
    wait_pid_exit(pid)
    return True


def release_record(paths: HostPaths, rec: dict, graceful_s: float = 0.0) -> list[str]:
    """Destroy a recorded VM's domain and free its overlay, ports, address and lease (keeps the record
    and console log). Used by `vm stop`, `vm rm` and gc for VMs whose creating process is gone."""
    done = []
    vm_id = rec["id"]
    if destroy_domain(rec["name"], graceful_s):
        done.append(f"domain {rec['name']}")
    if rec.get("network") == "bridge":
        with contextlib.suppress(ImportError, AttributeError):
            from runtime import network

            if rec.get("ports"):
                network.unpublish_ports(vm_id, paths)
            network.release_address(vm_id, paths)
    disk = Path(rec.get("disk") or paths.vms / vm_id / "disk.qcow2")
    if disk.exists():
        disk.unlink()
        done.append(f"overlay {disk}")
    leases.release(vm_id)
    rec = {**rec, "cleaned": True}
    f = paths.vms / vm_id / "vm.json"
    if f.parent.is_dir():
        with contextlib.suppress(OSError):
            atomic_write_json(f, rec)
    return done


def status_of(rec: dict) -> tuple[str, int | None]:
    """("running" | "exited" | "created", exit code) from libvirt and the console log."""
    if domain_active(rec["name"]):
        return "running", None
    try:
        text = Path(rec["console_log"]).read_text(errors="replace")
    except (OSError, KeyError):
        text = ""
    return "exited", con.exit_code(text)
